// Eddy's JavaScript SDK: the thin layer between a JavaScript function and the Eddy host.
//
// A function module exports `handle(event)` returning a Response (or throwing) and imports
// what it needs from "./eddy.js". `eddy deploy --build` runs componentize-js on it, with this
// file beside it, into a component of the `eddy:function` world.
//
// Throwing maps to outcomes: `new Rejected(msg)` is a 400 (the event is bad: dead-lettered,
// never retried); any other error is a 500 (retried with backoff) carrying its message.
import { publish as hostPublish } from "eddy:function/publisher@0.1.2";
import { once as hostOnce } from "eddy:function/idempotency@0.1.2";
import { log as hostLog } from "eddy:function/logging@0.1.2";
import { get as hostConfig } from "eddy:function/config@0.1.2";
import { get as hostSecret } from "eddy:function/secrets@0.1.2";
import { open as openBucket } from "wasi:keyvalue/store@0.2.0-draft2";
import { increment as hostIncrement, swap as hostSwap, Cas } from "wasi:keyvalue/atomics@0.2.0-draft2";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Thrown by a function to reject a bad event: a 400, never retried. */
export class Rejected extends Error {}

/** A host call was refused: denied, invalid or unavailable. */
export class HostError extends Error {}

function reason(error) {
  const payload = error && error.payload ? error.payload : error;
  return payload && payload.tag ? `${payload.tag}: ${payload.val}` : String(error);
}

/** The event being handled: CloudEvents attributes, payload and delivery facts. */
export class Event {
  constructor(raw) {
    this.raw = raw;
    this.id = raw.id;
    this.type = raw.type;
    this.source = raw.source;
    this.subject = raw.subject;
    this.attempt = raw.delivery.attempt;
    this.stream = raw.delivery.stream;
  }

  /** The payload as text. */
  text() {
    return decoder.decode(this.raw.data);
  }

  /** The payload parsed as JSON; a bad payload rejects the event. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (error) {
      throw new Rejected(`event ${this.id}: data is not JSON: ${error.message}`);
    }
  }

  /** An extension attribute (e.g. `correlationid`), or undefined. */
  extension(name) {
    const found = this.raw.extensions.find(([key]) => key === name);
    return found ? found[1] : undefined;
  }
}

/** A function's answer: the status is the outcome (2xx done, 4xx rejected, 5xx failed). */
export class Response {
  constructor(status = 200, body = "") {
    this.status = status;
    this.body = typeof body === "string" ? body : JSON.stringify(body);
  }

  /** 200, with `value` as a JSON body if given. */
  static ok(value) {
    return value === undefined ? new Response(200) : Response.json(200, value);
  }

  /** `status` with `value` as a JSON body. */
  static json(status, value) {
    return new Response(status, JSON.stringify(value));
  }
}

/** Publishes an event of `type` with `value` as JSON to `stream`; returns its id. */
export function publish(stream, type, value) {
  try {
    return hostPublish(stream, type, encoder.encode(JSON.stringify(value)));
  } catch (error) {
    throw new HostError(`publish ${type} to ${stream} failed: ${reason(error)}`);
  }
}

/**
 * True the first time `key` is claimed by this function, false once an invocation that claimed
 * it succeeded (see the README's `once`). Throws HostError while another invocation holds it:
 * the invocation then fails and its retry finds it settled. Kept for `ttlSeconds` if this
 * invocation succeeds, released if it fails.
 */
export function once(key, ttlSeconds) {
  try {
    return hostOnce(key, Math.max(1, Math.floor(ttlSeconds)));
  } catch (error) {
    throw new HostError(`once ${key} failed: ${reason(error)}`);
  }
}

/** The function's setting `key` from its manifest's `[config]` table. */
export function config(key, fallback) {
  const value = hostConfig(key);
  return value === undefined || value === null ? fallback : value;
}

/**
 * The function's secret `name` (its manifest's `[secrets]`, resolved by the host), or
 * undefined. The host redacts the value from everything it keeps of the invocation.
 */
export function secret(name) {
  const value = hostSecret(name);
  return value === null ? undefined : value;
}

/**
 * A key-value bucket (`wasi:keyvalue`), the function's own unless its manifest lists the name
 * under `[keyvalue] shared`. Kept in the host's Redis; keys up to 512 bytes, values up to 1 MiB.
 * Calling HTTP APIs needs no helper: `fetch` goes out through `wasi:http`, to the origins the
 * manifest's `[outbound] http` allows.
 */
export class Bucket {
  constructor(name) {
    this.inner = call(`open bucket ${name}`, () => openBucket(name));
  }

  /** Opens bucket `name`. */
  static open(name) {
    return new Bucket(name);
  }

  /** The value of `key` as bytes (Uint8Array), or undefined. */
  get(key) {
    const value = call("get", () => this.inner.get(key));
    return value === null ? undefined : value;
  }

  /** The value of `key` as text, or undefined. */
  getText(key) {
    const value = this.get(key);
    return value === undefined ? undefined : decoder.decode(value);
  }

  /** The value of `key` parsed as JSON, or undefined. */
  getJson(key) {
    const text = this.getText(key);
    return text === undefined ? undefined : JSON.parse(text);
  }

  /** Sets `key` to `value` (text or bytes). */
  set(key, value) {
    const bytes = typeof value === "string" ? encoder.encode(value) : value;
    call("set", () => this.inner.set(key, bytes));
  }

  /** Sets `key` to `value` as JSON. */
  setJson(key, value) {
    this.set(key, JSON.stringify(value));
  }

  /** Removes `key`. */
  delete(key) {
    call("delete", () => this.inner.delete(key));
  }

  /** Whether `key` has a value. */
  exists(key) {
    return call("exists", () => this.inner.exists(key));
  }

  /** Every key. */
  keys() {
    const keys = [];
    let cursor;
    for (;;) {
      const page = call("list-keys", () => this.inner.listKeys(cursor));
      keys.push(...page.keys);
      if (page.cursor === undefined || page.cursor === null) return keys;
      cursor = page.cursor;
    }
  }

  /** Adds `delta` to the number at `key` (0 if absent), atomically; returns the new number. */
  increment(key, delta = 1) {
    return Number(call("increment", () => hostIncrement(this.inner, key, BigInt(delta))));
  }

  /**
   * Sets `key` to `value` if its value is still `expected` (undefined: absent), atomically;
   * true if it did, false if another invocation changed it first.
   */
  compareAndSwap(key, expected, value) {
    const cas = call("cas", () => Cas.new(this.inner, key));
    const current = call("cas", () => cas.current());
    const same =
      current === undefined || current === null
        ? expected === undefined
        : expected !== undefined && decoder.decode(current) === asText(expected);
    if (!same) return false;
    try {
      hostSwap(cas, typeof value === "string" ? encoder.encode(value) : value);
      return true;
    } catch (error) {
      const payload = error && error.payload ? error.payload : error;
      if (payload && payload.tag === "cas-failed") return false;
      throw new HostError(`key-value swap failed: ${reason(error)}`);
    }
  }
}

function asText(value) {
  return typeof value === "string" ? value : decoder.decode(value);
}

function call(what, operation) {
  try {
    return operation();
  } catch (error) {
    throw new HostError(`key-value ${what} failed: ${reason(error)}`);
  }
}

/** Log lines kept in the host's logs and the invocation's record. */
export const log = {
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
};

/** The component's export for `handle(event) -> Response`: what the build's entry exports. */
export function handler(handle) {
  const answer = (response) => {
    if (!response) response = new Response(200);
    return { status: response.status, body: encoder.encode(response.body) };
  };
  const failure = (error) => {
    const status = error instanceof Rejected ? 400 : 500;
    return answer(Response.json(status, { error: String(error.message || error) }));
  };
  return {
    async handle(raw) {
      try {
        return answer(await handle(new Event(raw)));
      } catch (error) {
        return failure(error);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The OpenWhisk action shape: `main(params)` returning `{ statusCode, body }`.
//
// A project whose entry exports `main` (and not `handle`) is wrapped by `openwhisk(main)`, so a
// function written for OpenWhisk (or in the seeds' shape) runs unchanged. The whole contract is
// the table in sdk/js/README.md ("Functions in the OpenWhisk shape").

/** The reserved parameter that carries the event's attributes, apart from its data fields. */
export const EVENT_PARAM = "__eddy";

/** The config keys, set by the manifest's `[event_bus]`, that route `publishEvent`. */
const BUS_DEFAULT = "eddy.event_bus.default";
const BUS_TYPE = "eddy.event_bus.type.";
/** The config key naming the manifest's `[config]` keys and `[secrets]`: default parameters. */
const PARAMS = "eddy.params";

/** The manifest's `[config]` settings and `[secrets]`, by name: `main`'s default parameters. */
function defaults() {
  const listed = hostConfig(PARAMS);
  const found = {};
  if (listed === undefined || listed === null) return found;
  const { config: keys = [], secrets: names = [] } = JSON.parse(listed);
  for (const key of keys) {
    const value = hostConfig(key);
    if (value !== undefined && value !== null) found[key] = value;
  }
  for (const name of names) {
    const value = hostSecret(name);
    if (value !== undefined && value !== null) found[name] = value;
  }
  return found;
}

/**
 * `main`'s argument for an event: the manifest's `[config]` settings and `[secrets]` as default
 * parameters, then the fields of its JSON data object over them, plus the event's attributes
 * under `__eddy`. Data that is not a JSON object (an array, a string, a number, or
 * text that is not JSON) is passed whole under `value`; bytes that are not UTF-8 are passed
 * base64-encoded, with `__eddy.encoding` set to "base64".
 */
export function params(raw) {
  const attributes = {
    id: raw.id,
    type: raw.type,
    source: raw.source,
    subject: raw.subject ?? undefined,
    time: raw.time ?? undefined,
    datacontenttype: raw.datacontenttype ?? undefined,
    extensions: Object.fromEntries(raw.extensions),
    attempt: raw.delivery.attempt,
    stream: raw.delivery.stream,
  };
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw.data);
  } catch {
    attributes.encoding = "base64";
    return { ...defaults(), value: base64(raw.data), [EVENT_PARAM]: attributes };
  }
  let data = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: passed as the text itself
    }
  }
  if (data !== null && typeof data === "object" && !Array.isArray(data)) {
    return { ...defaults(), ...data, [EVENT_PARAM]: attributes };
  }
  return text.length === 0
    ? { ...defaults(), [EVENT_PARAM]: attributes }
    : { ...defaults(), value: data, [EVENT_PARAM]: attributes };
}

function base64(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/**
 * The response for what `main` returned, by the table in the README: `statusCode` decides
 * (else `error` makes it a 500, else 200); `body` is the body (a string as it is, any other
 * value as JSON); a result with neither `statusCode` nor `body` is itself the JSON body.
 */
export function result(value) {
  if (value === undefined || value === null) return { status: 200, body: "" };
  if (typeof value !== "object" || Array.isArray(value)) {
    return {
      status: 500,
      body: JSON.stringify({
        error: `main returned ${Array.isArray(value) ? "an array" : typeof value}, not an object such as { statusCode, body }`,
      }),
    };
  }
  let status = 200;
  if ("statusCode" in value && value.statusCode !== undefined) {
    const code = value.statusCode;
    if (typeof code !== "number" || !Number.isInteger(code) || code < 100 || code > 599) {
      return {
        status: 500,
        body: JSON.stringify({
          error: `main returned statusCode ${describe(value.statusCode)}: expected an integer from 100 to 599`,
        }),
      };
    }
    status = code;
  } else if ("error" in value && value.error !== undefined) {
    status = 500;
  }
  let body;
  if ("body" in value) {
    body = value.body === undefined || value.body === null ? "" : value.body;
  } else if ("statusCode" in value) {
    body = "error" in value ? { error: value.error } : "";
  } else {
    body = value;
  }
  return { status, body: typeof body === "string" ? body : JSON.stringify(body) };
}

/** `value` as text for an error message, whatever it is (a symbol, NaN, an object). */
function describe(value) {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** What was thrown, as text, even when it cannot be turned into a string. */
function describeError(error) {
  try {
    const message = error && error.message !== undefined ? error.message : error;
    return typeof message === "string" ? message : String(message);
  } catch {
    return "main threw a value that cannot be shown as text";
  }
}

/** The component's export for an OpenWhisk-shaped `main(params)`: what the build wraps it in. */
export function openwhisk(main) {
  const answer = ({ status, body }) => ({ status, body: encoder.encode(body) });
  return {
    async handle(raw) {
      try {
        return answer(result(await main(params(raw))));
      } catch (error) {
        return answer({ status: 500, body: JSON.stringify({ error: describeError(error) }) });
      }
    },
  };
}

/**
 * Publishes an event of `type` with `data` as JSON to the stream the manifest's `[event_bus]`
 * routes `type` to (its `types` table, else its `default`), under the manifest's `publish`
 * allow-list; returns the new event's id. Throws HostError if no stream is routed or the host
 * refuses.
 */
export function publishEvent(type, data) {
  const stream = hostConfig(BUS_TYPE + type) ?? hostConfig(BUS_DEFAULT);
  if (stream === undefined || stream === null) {
    throw new HostError(
      `publishEvent ${type}: no stream for this type: set [event_bus] default (or a [event_bus.types] entry) in eddy.toml`,
    );
  }
  return publish(stream, type, data === undefined ? null : data);
}
