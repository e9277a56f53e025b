"""Eddy's Python SDK: the thin layer between a Python function and the Eddy host.

A function module defines ``handle(event)`` returning a :class:`Response` (or raising), and
ends with ``Handler = eddy.handler(handle)``. ``componentize-py`` (run by ``eddy deploy
--build``) turns the module into a WebAssembly component of the ``eddy:function`` world.

Exceptions map to outcomes: :class:`Rejected` is a 400 (the event is bad: dead-lettered, never
retried); any other exception is a 500 (retried with backoff) carrying its message.
"""

import json as _json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics as _atomics
from wit_world.imports import config as _config
from wit_world.imports import eddy_function_types as _types
from wit_world.imports import idempotency as _idempotency
from wit_world.imports import logging as _logging
from wit_world.imports import outgoing_handler as _outgoing
from wit_world.imports import publisher as _publisher
from wit_world.imports import secrets as _secrets
from wit_world.imports import store as _store
from wit_world.imports import streams as _streams
from wit_world.imports import wasi_http_types as _http


class Rejected(Exception):
    """Raised by a function to reject a bad event: a 400, never retried."""


class HostError(Exception):
    """A host call was refused: denied, invalid or unavailable."""


def _reason(error):
    kind = type(error.value).__name__.split("_")[-1].lower()
    return f"{kind}: {error.value.value}"


class Event:
    """The event being handled: CloudEvents attributes, payload and delivery facts."""

    def __init__(self, raw):
        self._raw = raw

    @property
    def id(self):
        """The event's id."""
        return self._raw.id

    @property
    def type(self):
        """The event's type, e.g. ``OrderPlaced``."""
        return self._raw.type

    @property
    def source(self):
        """Where the event happened."""
        return self._raw.source

    @property
    def subject(self):
        """The subject within the source, if any."""
        return self._raw.subject

    @property
    def data(self):
        """The payload as bytes."""
        return bytes(self._raw.data)

    @property
    def attempt(self):
        """Which attempt this is, from 1."""
        return self._raw.delivery.attempt

    @property
    def stream(self):
        """The stream the event came from, if any."""
        return self._raw.delivery.stream

    def json(self):
        """The payload parsed as JSON; a bad payload rejects the event."""
        try:
            return _json.loads(self._raw.data)
        except ValueError as error:
            raise Rejected(f"event {self.id}: data is not JSON: {error}") from error

    def extension(self, name):
        """An extension attribute (e.g. ``correlationid``), or None."""
        for key, value in self._raw.extensions:
            if key == name:
                return value
        return None


class Response:
    """A function's answer: the status is the outcome (2xx done, 4xx rejected, 5xx failed)."""

    def __init__(self, status=200, body=b""):
        self.status = status
        self.body = body if isinstance(body, bytes) else str(body).encode()

    @staticmethod
    def ok(value=None):
        """200, with ``value`` as a JSON body if given."""
        return Response.json(200, value) if value is not None else Response(200)

    @staticmethod
    def json(status, value):
        """``status`` with ``value`` as a JSON body."""
        return Response(status, _json.dumps(value).encode())


def publish(stream, event_type, value):
    """Publishes an event of ``event_type`` with ``value`` as JSON to ``stream``; returns its id."""
    try:
        return _publisher.publish(stream, event_type, _json.dumps(value).encode())
    except Err as error:
        raise HostError(f"publish {event_type} to {stream} failed: {_reason(error)}") from None


def once(key, ttl_seconds):
    """True the first time ``key`` is claimed by this function, False once an invocation that
    claimed it succeeded (see the README's ``once``). Raises HostError while another invocation
    holds it: the invocation then fails and its retry finds it settled. Kept for
    ``ttl_seconds`` if this invocation succeeds, released if it fails."""
    try:
        return _idempotency.once(key, max(1, int(ttl_seconds)))
    except Err as error:
        raise HostError(f"once {key!r} failed: {_reason(error)}") from None


def config(key, default=None):
    """The function's setting ``key`` from its manifest's ``[config]`` table."""
    value = _config.get(key)
    return default if value is None else value


def secret(name):
    """The function's secret ``name`` (its manifest's ``[secrets]``, resolved by the host), or
    None. The host redacts the value from everything it keeps of the invocation."""
    return _secrets.get(name)


class HttpError(Exception):
    """An outbound request got no response: ``code`` is the ``wasi:http`` error code, e.g.
    ``HTTP-request-denied`` (the origin is not in the manifest's ``[outbound] http``),
    ``connection-timeout``, ``HTTP-response-body-size``."""

    def __init__(self, code, message):
        super().__init__(f"{message} ({code})")
        self.code = code

    @property
    def denied(self):
        """Whether the function's allow-list refused the origin."""
        return self.code == "HTTP-request-denied"


class HttpResponse:
    """A response, with its whole body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of header ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def text(self):
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON."""
        return _json.loads(self.body)


_METHODS = {
    "GET": _http.Method_Get,
    "HEAD": _http.Method_Head,
    "POST": _http.Method_Post,
    "PUT": _http.Method_Put,
    "DELETE": _http.Method_Delete,
    "PATCH": _http.Method_Patch,
    "OPTIONS": _http.Method_Options,
}

_CODES = {
    "HttpRequestDenied": "HTTP-request-denied",
    "ConnectionTimeout": "connection-timeout",
    "ConnectionReadTimeout": "connection-read-timeout",
    "HttpResponseTimeout": "HTTP-response-timeout",
    "HttpResponseBodySize": "HTTP-response-body-size",
    "ConnectionLimitReached": "connection-limit-reached",
    "ConnectionRefused": "connection-refused",
    "TlsCertificateError": "TLS-certificate-error",
}


def _http_error(url, code):
    kind = type(code).__name__.split("_", 1)[-1]
    return HttpError(_CODES.get(kind, "HTTP-error"), f"{url}: {kind}")


class http:
    """Calling HTTP APIs over the standard ``wasi:http/outgoing-handler``. Only the origins the
    manifest lists under ``[outbound] http`` are reached; every request ends before the
    invocation's deadline. An uncaught :class:`HttpError` fails the invocation (a 500, retried)."""

    @staticmethod
    def get(url, headers=None, timeout=None):
        """GETs ``url``."""
        return http.request("GET", url, headers=headers, timeout=timeout)

    @staticmethod
    def post(url, body=None, headers=None, json=None, timeout=None):
        """POSTs ``body`` (bytes or text), or ``json`` as JSON, to ``url``."""
        headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        if json is not None:
            body = _json.dumps(json)
            headers.append(("content-type", "application/json"))
        return http.request("POST", url, headers=headers, body=body, timeout=timeout)

    @staticmethod
    def request(method, url, headers=None, body=None, timeout=None):
        """Sends ``method`` to ``url`` with ``headers`` (a dict or pairs) and ``body``; gives up
        after ``timeout`` seconds for connecting, the first byte and each gap between bytes."""
        if url.startswith("https://"):
            scheme, rest = _http.Scheme_Https(), url[len("https://"):]
        elif url.startswith("http://"):
            scheme, rest = _http.Scheme_Http(), url[len("http://"):]
        else:
            raise HttpError("invalid-request", f"{url}: expected an http:// or https:// URL")
        cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
        authority, path = rest[:cut], rest[cut:] or "/"
        body = body.encode() if isinstance(body, str) else (body or b"")
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        fields = _http.Fields()
        if body:
            fields.append("content-length", str(len(body)).encode())
        for name, value in pairs:
            fields.append(name, value.encode() if isinstance(value, str) else value)
        request = _http.OutgoingRequest(fields)
        method_class = _METHODS.get(method.upper())
        request.set_method(method_class() if method_class else _http.Method_Other(method))
        request.set_scheme(scheme)
        request.set_authority(authority)
        request.set_path_with_query(path)
        options = None
        if timeout is not None:
            options = _http.RequestOptions()
            nanos = int(timeout * 1_000_000_000)
            options.set_connect_timeout(nanos)
            options.set_first_byte_timeout(nanos)
            options.set_between_bytes_timeout(nanos)
        outgoing = request.body()
        try:
            pending = _outgoing.handle(request, options)
        except Err as error:
            raise _http_error(url, error.value) from None
        with outgoing.write() as stream:
            for start in range(0, len(body), 4096):
                stream.blocking_write_and_flush(body[start:start + 4096])
        _http.OutgoingBody.finish(outgoing, None)
        with pending.subscribe() as ready:
            ready.block()
        outer = pending.get()
        if outer is None or isinstance(outer, Err) or isinstance(outer.value, Err):
            code = outer.value.value if outer is not None and not isinstance(outer, Err) else None
            raise _http_error(url, code) if code is not None else HttpError("HTTP-error", f"{url}: no response")
        response = outer.value.value
        status = response.status()
        headers = [(name, value.decode("utf-8", "replace")) for name, value in response.headers().entries()]
        incoming = response.consume()
        data = bytearray()
        with incoming.stream() as stream:
            while True:
                try:
                    data.extend(stream.blocking_read(65536))
                except Err as error:
                    if isinstance(error.value, _streams.StreamError_Closed):
                        break
                    code = _http.http_error_code(error.value.value)
                    raise (_http_error(url, code) if code is not None else HttpError("HTTP-error", f"{url}: body failed")) from None
        _http.IncomingBody.finish(incoming)
        return HttpResponse(status, headers, bytes(data))


def _kv_reason(error):
    return getattr(error, "value", None) or type(error).__name__.split("_", 1)[-1]


class Bucket:
    """A key-value bucket (``wasi:keyvalue``), the function's own unless its manifest lists the
    name under ``[keyvalue] shared``. Kept in the host's Redis; keys up to 512 bytes, values up
    to 1 MiB."""

    def __init__(self, name):
        try:
            self._inner = _store.open(name)
        except Err as error:
            raise HostError(f"open bucket {name!r} failed: {_kv_reason(error.value)}") from None

    def _call(self, what, operation):
        try:
            return operation()
        except Err as error:
            raise HostError(f"key-value {what} failed: {_kv_reason(error.value)}") from None

    def get(self, key):
        """The value of ``key`` as bytes, or None."""
        return self._call("get", lambda: self._inner.get(key))

    def get_json(self, key):
        """The value of ``key`` parsed as JSON, or None."""
        value = self.get(key)
        return None if value is None else _json.loads(value)

    def set(self, key, value):
        """Sets ``key`` to ``value`` (bytes, or text)."""
        value = value.encode() if isinstance(value, str) else bytes(value)
        self._call("set", lambda: self._inner.set(key, value))

    def set_json(self, key, value):
        """Sets ``key`` to ``value`` as JSON."""
        self.set(key, _json.dumps(value))

    def delete(self, key):
        """Removes ``key``."""
        self._call("delete", lambda: self._inner.delete(key))

    def exists(self, key):
        """Whether ``key`` has a value."""
        return self._call("exists", lambda: self._inner.exists(key))

    def keys(self):
        """Every key."""
        keys, cursor = [], None
        while True:
            page = self._call("list-keys", lambda: self._inner.list_keys(cursor))
            keys.extend(page.keys)
            if page.cursor is None:
                return keys
            cursor = page.cursor

    def increment(self, key, delta=1):
        """Adds ``delta`` to the number at ``key`` (0 if absent) and returns the new number,
        atomically however many invocations do it at once."""
        return self._call("increment", lambda: _atomics.increment(self._inner, key, delta))

    def compare_and_swap(self, key, expected, new):
        """Sets ``key`` to ``new`` if its value is ``expected`` (None: absent), atomically; True
        if it did. False means another invocation changed it first."""
        new = new.encode() if isinstance(new, str) else bytes(new)
        expected = expected.encode() if isinstance(expected, str) else expected
        cas = self._call("cas", lambda: _atomics.Cas.new(self._inner, key))
        current = self._call("cas", cas.current)
        if current != expected:
            return False
        try:
            _atomics.swap(cas, new)
            return True
        except Err as error:
            if isinstance(error.value, _atomics.CasError_CasFailed):
                return False
            raise HostError(f"key-value swap failed: {_kv_reason(error.value.value)}") from None


class kv:
    """Key-value buckets that outlive an invocation: ``eddy.kv.open("inventory")``."""

    @staticmethod
    def open(name):
        """Opens bucket ``name``."""
        return Bucket(name)


class log:
    """Log lines kept in the host's logs and the invocation's record."""

    @staticmethod
    def debug(message):
        """Logs a debug line."""
        _logging.log(_logging.Level.DEBUG, str(message))

    @staticmethod
    def info(message):
        """Logs an info line."""
        _logging.log(_logging.Level.INFO, str(message))

    @staticmethod
    def warn(message):
        """Logs a warning."""
        _logging.log(_logging.Level.WARN, str(message))

    @staticmethod
    def error(message):
        """Logs an error."""
        _logging.log(_logging.Level.ERROR, str(message))


def handler(handle):
    """The component's export for ``handle(event) -> Response``: assign it to ``Handler``."""

    class Handler(exports.Handler):
        def handle(self, event):
            try:
                response = handle(Event(event))
            except Rejected as error:
                response = Response.json(400, {"error": str(error)})
            except Exception as error:  # a failure: retried by the host
                response = Response.json(500, {"error": f"{type(error).__name__}: {error}"})
            if response is None:
                response = Response(200)
            return _types.Response(status=response.status, body=response.body)

    return Handler


# ----------------------------------------------------------------------------------------------
# The OpenWhisk action shape: ``main(params)`` returning ``{"statusCode": …, "body": …}``.
#
# A module that defines ``main`` (and no ``Handler`` or ``handle``) is wrapped by
# :func:`openwhisk`, so a function written for OpenWhisk (or in the seeds' shape) runs unchanged.
# The whole contract is the table in sdk/python/README.md ("Functions in the OpenWhisk shape").

EVENT_PARAM = "__eddy"
"""The reserved parameter that carries the event's attributes, apart from its data fields."""

_BUS_DEFAULT = "eddy.event_bus.default"
_BUS_TYPE = "eddy.event_bus.type."
_PARAMS = "eddy.params"


def _defaults():
    """The manifest's ``[config]`` settings and ``[secrets]``, by name: ``main``'s default
    parameters."""
    listed = _config.get(_PARAMS)
    found = {}
    if listed is None:
        return found
    names = _json.loads(listed)
    for key in names.get("config", []):
        value = _config.get(key)
        if value is not None:
            found[key] = value
    for name in names.get("secrets", []):
        value = _secrets.get(name)
        if value is not None:
            found[name] = value
    return found


def params(raw):
    """``main``'s argument for an event: the manifest's ``[config]`` settings and ``[secrets]``
    as default parameters, then the fields of its JSON data object over them, plus the event's
    attributes under ``__eddy``. Data that is not a JSON object (a list, a string, a number, or
    text that is not JSON) is passed whole under ``value``; bytes that are not UTF-8 are passed
    base64-encoded, with ``__eddy["encoding"]`` set to ``"base64"``."""
    attributes = {
        "id": raw.id,
        "type": raw.type,
        "source": raw.source,
        "subject": raw.subject,
        "time": raw.time,
        "datacontenttype": raw.datacontenttype,
        "extensions": dict(raw.extensions),
        "attempt": raw.delivery.attempt,
        "stream": raw.delivery.stream,
    }
    attributes = {key: value for key, value in attributes.items() if value is not None}
    raw_data = bytes(raw.data)
    try:
        text = raw_data.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        attributes["encoding"] = "base64"
        params = _defaults()
        params.update({"value": base64.b64encode(raw_data).decode(), EVENT_PARAM: attributes})
        return params
    params = _defaults()
    if not text:
        params[EVENT_PARAM] = attributes
        return params
    try:
        data = _json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        params.update(data)
    else:
        params["value"] = data
    params[EVENT_PARAM] = attributes
    return params


def _dumps(value):
    return value if isinstance(value, str) else _json.dumps(value, allow_nan=False)


def result(value):
    """``(status, body)`` for what ``main`` returned, by the table in the README: ``statusCode``
    decides (else ``error`` makes it a 500, else 200); ``body`` is the body (a string as it is,
    any other value as JSON); a result with neither ``statusCode`` nor ``body`` is itself the
    JSON body."""
    if value is None:
        return 200, ""
    if not isinstance(value, dict):
        kind = type(value).__name__
        return 500, _json.dumps(
            {"error": f"main returned a {kind}, not a dict such as {{'statusCode': 200, 'body': ...}}"}
        )
    status = 200
    if value.get("statusCode") is not None:
        code = value["statusCode"]
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            return 500, _json.dumps(
                {"error": f"main returned statusCode {code!r}: expected an integer from 100 to 599"}
            )
        status = code
    elif value.get("error") is not None:
        status = 500
    if "body" in value:
        body = "" if value["body"] is None else value["body"]
    elif "statusCode" in value:
        body = {"error": value["error"]} if "error" in value else ""
    else:
        body = value
    try:
        return status, _dumps(body)
    except (TypeError, ValueError) as error:
        return 500, _json.dumps({"error": f"main returned a body that is not JSON: {error}"})


def _run(value):
    """The value of ``value``, running it to its end first if ``main`` was ``async def``."""
    if not hasattr(value, "__await__"):
        return value
    # There is no event loop in the component: a coroutine is stepped until it returns. What it
    # awaits must finish without one (other coroutines, ``asyncio.sleep(0)``, Eddy's blocking
    # calls such as ``eddy.http``); a future of an event loop cannot.
    step = value.__await__()
    try:
        while True:
            waited = step.send(None)
            if waited is not None:
                step.close()
                raise RuntimeError(
                    f"async main awaited {type(waited).__name__}, which needs an event loop: "
                    "await only coroutines, or call Eddy's blocking helpers (eddy.http)"
                )
    except StopIteration as done:
        return done.value


def openwhisk(main):
    """The component's export for an OpenWhisk-shaped ``main(params)``: assign it to
    ``Handler``."""

    class Handler(exports.Handler):
        def handle(self, event):
            try:
                status, body = result(_run(main(params(event))))
            except (Exception, SystemExit) as error:  # a failure: retried by the host
                status, body = 500, _json.dumps({"error": f"{type(error).__name__}: {error}"})
            return _types.Response(status=status, body=body.encode())

    return Handler


def publish_event(event_type, data):
    """Publishes an event of ``event_type`` with ``data`` as JSON to the stream the manifest's
    ``[event_bus]`` routes it to (its ``types`` table, else its ``default``), under the
    manifest's ``publish`` allow-list; returns the new event's id. Raises HostError if no stream
    is routed or the host refuses."""
    stream = _config.get(_BUS_TYPE + event_type)
    if stream is None:
        stream = _config.get(_BUS_DEFAULT)
    if stream is None:
        raise HostError(
            f"publish_event {event_type}: no stream for this type: set [event_bus] default "
            "(or an [event_bus.types] entry) in eddy.toml"
        )
    return publish(stream, event_type, data)


publishEvent = publish_event
"""``publish_event`` under the name JavaScript code uses."""
