// Eddy's status page: polls the host's API and redraws the tables and charts. Every value is
// written as text or as an SVG attribute (never as HTML): error messages come from guest code.
"use strict";

const REFRESH_MS = 2000;
// A host that accepts the connection but never answers must not leave the page "loading…".
const FETCH_TIMEOUT_MS = 10000;

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (className) td.className = className;
  return td;
}

function fill(id, items, columns, emptyText) {
  const body = document.querySelector(`#${id} tbody`);
  const rows = document.createDocumentFragment();
  if (!items || items.length === 0) {
    const tr = document.createElement("tr");
    const td = tr.insertCell();
    td.colSpan = columns.length;
    td.className = "empty";
    td.textContent = emptyText;
    rows.appendChild(tr);
  }
  for (const item of items || []) {
    const tr = document.createElement("tr");
    for (const column of columns) {
      const [value, className] = column(item);
      cell(tr, value, className);
    }
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
}

function ago(ms) {
  if (ms === null || ms === undefined) return null;
  return ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`;
}

// One row per function: those the live hosts run (from manifests or deployed), merged by name
// with the registry's deployments, whose details only deployed functions have.
function functionRows(status) {
  const rows = new Map();
  for (const r of status.running || []) rows.set(r.name, { name: r.name, running: r, deployed: null });
  for (const f of status.functions || []) {
    const row = rows.get(f.name) || { name: f.name, running: null, deployed: null };
    row.deployed = f;
    rows.set(f.name, row);
  }
  return [...rows.values()].sort((a, b) => a.name.localeCompare(b.name));
}

// What the hosts run, and the registry's version when it differs (a rollout under way).
function versionText({ running, deployed }) {
  let runs = running ? running.version : null;
  if (running && running.versions && running.versions.length > 1) runs = running.versions.join(", ");
  if (runs === null || runs === undefined) return deployed ? deployed.version : null;
  return deployed && String(deployed.version) !== String(runs)
    ? `${runs} (registry: ${deployed.version})`
    : runs;
}

function renderStatus(status) {
  fill("hosts", status.hosts, [
    (h) => [h.consumer, "mono"],
    (h) => (h.alive ? ["alive", "alive"] : ["DEAD", "dead"]),
    (h) => [h.api, "mono"],
    (h) => [ago(h.last_seen_ms_ago)],
    (h) => [h.up_since],
  ], "no host has sent a heartbeat");
  fill("functions", functionRows(status), [
    (f) => [f.name],
    (f) => [f.running ? f.running.source : "deployed"],
    (f) => [versionText(f), "num"],
    // A deployed function no live host runs is worth noticing.
    (f) => (f.running ? [f.running.hosts, "num"] : ["none", "dead"]),
    (f) => [f.running && f.running.triggers.length ? f.running.triggers.join("\n") : null, "lines"],
    (f) => [f.deployed ? (f.deployed.digest || "").slice(0, 19) : null, "mono"],
    (f) => (f.deployed && f.deployed.canary
      ? [`version ${f.deployed.canary.version} takes ${f.deployed.canary.percent}%`]
      : [null]),
    (f) => (f.deployed && f.deployed.last_canary
      ? [`version ${f.deployed.last_canary.version} ended ${f.deployed.last_canary.ended}: ` +
         f.deployed.last_canary.reason, "error"]
      : [null]),
  ], "no function is running or deployed");
  fill("schemas", status.schemas, [
    (s) => [s.type, "mono"],
    (s) => [s.version, "num"],
    (s) => [s.compatibility],
    (s) => [new Date(s.updated_ms).toISOString()],
  ], "no event type has a schema");
  fill("groups", status.groups, [
    (g) => [g.stream, "mono"],
    (g) => [g.group],
    (g) => [g.lag, "num"],
    (g) => [g.pending, "num"],
  ], "no consumer group");
  fill("flow", status.flow, [
    (f) => [f.function],
    (f) => [f.stream, "mono"],
    (f) => [f.state, f.state === "paused" ? "" : "dead"],
    (f) => [f.breaker ? f.breaker.open_until : f.paused_since],
    (f) => [f.breaker ? f.breaker.reason : "paused by an operator", "error"],
  ], "every trigger is running");
  fill("dead-letters", status.dead_letters, [
    (d) => [d.stream, "mono"],
    (d) => [d.count, d.count > 0 ? "num dead" : "num"],
  ], "no dead-letter stream");
  fill("cronjobs", status.cronjobs, [
    (c) => [c.name],
    (c) => [`${c.schedule} (${c.timezone})`, "mono"],
    (c) => [c.stream, "mono"],
    (c) => [c.next],
    (c) => [c.last_fire],
    (c) => (c.missed ? [`${c.missed.emitted} / ${c.missed.skipped}`, "num"] : ["–"]),
  ], "no cronjob");
}

function renderFailures(failures) {
  fill("failures", failures, [
    (r) => [r.time],
    (r) => [r.function],
    (r) => [r.event_id, "mono"],
    (r) => [r.attempt, "num"],
    (r) => [r.outcome, r.outcome],
    (r) => [r.status, "num"],
    // Rejected invocations carry the function's own words too.
    (r) => [r.error, "error"],
    (r) => [r.host, "mono"],
  ], "no failures recorded");
}

// ---- Charts: small SVGs drawn with DOM calls (the policy allows no library, no inline script).

const SVG = "http://www.w3.org/2000/svg";
// The drawing's coordinates (the viewBox); the SVG scales to its column's width.
const W = 300, H = 120, X0 = 36, X1 = 294, Y0 = 24, Y1 = 98;

// Each chart: its series and how a bucket's point gives their values. `rate`: a count in the
// bucket, shown per second, 0 where the bucket is absent; `gaps`: a value or no data (null);
// `carry`: the last known value (0 before any).
const CHARTS = [
  { chart: "events", title: "events / s", unit: "/s", kind: "rate",
    series: [["done", "done"], ["rejected", "rejected"], ["failed", "failed"]] },
  { chart: "duration", title: "duration", unit: " ms", kind: "gaps",
    series: [["p50", "p50_ms"], ["p99", "p99_ms"]] },
  { chart: "backlog", title: "lag and pending", unit: "", kind: "carry",
    series: [["lag", "lag"], ["pending", "pending"]] },
];

function svg(parent, name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  if (parent) parent.appendChild(element);
  return element;
}

// The values of one series over `buckets`, and how many buckets held data for it (events:
// a count above 0; the rest: any value), which the SVG carries as data-points for tests.
function seriesValues(kind, field, buckets, points, stepS) {
  let last = 0, count = 0;
  const values = buckets.map((t) => {
    const point = points.get(t);
    const value = point ? point[field] : null;
    const has = typeof value === "number";
    if (kind === "rate") {
      if (has && value > 0) count++;
      return has ? value / stepS : 0;
    }
    if (has) count++;
    if (kind === "gaps") return has ? value : null;
    if (has) last = value;
    return last;
  });
  return { values, count };
}

// The smallest of 1, 2, 5 × 10ⁿ at or above `v`: round axis labels.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].find((m) => m * p >= v * (1 - 1e-9)) * p;
}

function short(v) {
  return v >= 100 ? String(Math.round(v)) : String(Number(v.toPrecision(2)));
}

function drawChart(name, spec, frame, points) {
  const root = svg(null, "svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "data-function": name, "data-chart": spec.chart,
    "aria-label": `${name}: ${spec.title}, last ${frame.minutes} minutes`,
  });
  svg(root, "text", { x: 0, y: 11, class: "title" }, spec.title);

  const series = spec.series.map(([label, field]) =>
    ({ label, ...seriesValues(spec.kind, field, frame.buckets, points, frame.stepS) }));
  // Events are stacked (done at the bottom): areas, so that no outcome hides another.
  const stacked = spec.kind === "rate";
  let below = frame.buckets.map(() => 0);
  for (const s of series) {
    s.base = below;
    if (stacked) below = s.values = s.values.map((v, i) => v + below[i]);
  }
  const max = niceCeil(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));

  // Legend, on the title's line: a swatch and the series' name each.
  let x = 112;
  for (const s of series) {
    svg(root, "rect", { x, y: 3, width: 8, height: 8, class: `s-${s.label}` });
    svg(root, "text", { x: x + 11, y: 11 }, s.label);
    x += 11 + s.label.length * 5.5 + 10;
  }

  // Axes: the top and bottom lines, the max and 0, the time span.
  svg(root, "line", { x1: X0, x2: X1, y1: Y0, y2: Y0, class: "grid" });
  svg(root, "line", { x1: X0, x2: X1, y1: Y1, y2: Y1, class: "grid" });
  svg(root, "text", { x: X0 - 4, y: Y0 + 3, "text-anchor": "end", class: "axis" },
    short(max) + spec.unit);
  svg(root, "text", { x: X0 - 4, y: Y1 + 3, "text-anchor": "end", class: "axis" }, "0");
  svg(root, "text", { x: X0, y: H - 8, class: "axis" }, `${frame.minutes} min ago`);
  svg(root, "text", { x: X1, y: H - 8, "text-anchor": "end", class: "axis" }, "now");

  const y = (v) => (Y1 - (v / max) * (Y1 - Y0)).toFixed(1);
  const at = (i, v) => `${frame.x[i].toFixed(1)} ${y(v)}`;
  for (const s of series) {
    let d = "";
    if (stacked) {
      // The layer's top left to right, then its base right to left.
      d = `M${s.values.map((v, i) => at(i, v)).join("L")}` +
        `L${s.base.map((v, i) => at(i, v)).reverse().join("L")}Z`;
    } else {
      // A line through each run of buckets with a value; a lone value is a short dash.
      s.values.forEach((v, i) => {
        if (v === null) return;
        const first = i === 0 || s.values[i - 1] === null;
        const last = i === s.values.length - 1 || s.values[i + 1] === null;
        if (first && last) d += `M${(frame.x[i] - 3).toFixed(1)} ${y(v)}h6`;
        else d += `${first ? "M" : "L"}${at(i, v)}`;
      });
    }
    svg(root, "path", {
      d: d || "M0 0", class: `${stacked ? "area" : "series"} s-${s.label}`,
      "data-series": s.label, "data-points": s.count,
    });
  }
  if (series.every((s) => s.count === 0)) {
    svg(root, "text", { x: (X0 + X1) / 2, y: (Y0 + Y1) / 2 + 3, "text-anchor": "middle", class: "none" },
      "no data");
  }
  return root;
}

// The buckets of the window (10 s each, from the one holding its start to the one holding
// now, by the host's clock), evenly spaced: the current bucket, the one most looked at, is
// drawn whole rather than squeezed against the right edge.
function chartFrame(charts) {
  const stepMs = charts.step_s * 1000;
  const end = charts.now_ms, start = end - charts.window_s * 1000;
  const buckets = [];
  for (let t = Math.floor(start / stepMs) * stepMs; t <= end; t += stepMs) buckets.push(t);
  const x = buckets.map((_, i) => X0 + ((i + 0.5) / buckets.length) * (X1 - X0));
  return { buckets, x, stepMs, stepS: charts.step_s, minutes: Math.round(charts.window_s / 60) };
}

function renderCharts(status, charts) {
  const frame = chartFrame(charts);
  const byName = new Map(charts.functions.map((f) => [f.name, f.points]));
  // Every function of the table, and any other that ran within the window.
  const names = new Set(status ? functionRows(status).map((f) => f.name) : []);
  for (const name of byName.keys()) names.add(name);
  const out = document.createDocumentFragment();
  for (const name of [...names].sort((a, b) => a.localeCompare(b))) {
    const points = new Map();
    for (const p of byName.get(name) || []) points.set(Math.floor(p.t / frame.stepMs) * frame.stepMs, p);
    const heading = document.createElement("h3");
    heading.textContent = name;
    const row = document.createElement("div");
    row.className = "charts";
    for (const spec of CHARTS) row.appendChild(drawChart(name, spec, frame, points));
    out.append(heading, row);
  }
  if (names.size === 0) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "no function has run in the last 15 minutes";
    out.appendChild(empty);
  }
  document.getElementById("charts").replaceChildren(out);
}

// ---- Polling.

// From the origin, never relative: a page opened as http://user:token@host/ has the
// credentials in its URL, and fetch() refuses a URL that holds them. The browser resends the
// Basic credentials it signed in with (credentials: same-origin).
async function getJson(path) {
  let response;
  try {
    response = await fetch(new URL(path, location.origin), {
      cache: "no-store",
      credentials: "same-origin",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (error) {
    const why = error.name === "TimeoutError"
      ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s`
      : error.message;
    throw new Error(`cannot reach the host's API: ${why}`);
  }
  if (response.status === 401) {
    throw new Error("the token is wrong or missing: reload and sign in");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = `${response.status}: ${(await response.json()).error.message}`;
    } catch (_) {
      // not our error shape: keep the status line
    }
    const error = new Error(`the host's API answers ${message}`);
    error.path = path;
    throw error;
  }
  return response.json();
}

let loaded = false;
let lastStatus = null;

// Problems: message → the paths that met it, said once each ("… (/v1/status, /v1/charts)").
function showProblem(problems) {
  const problem = document.getElementById("problem");
  problem.textContent = [...problems]
    .map(([message, paths]) => (paths.length ? `${message} (${paths.join(", ")})` : message))
    .join("\n");
  problem.hidden = problems.size === 0;
}

function addProblem(problems, error) {
  const message = String((error && error.message) || error);
  const paths = problems.get(message) || [];
  if (error && error.path) paths.push(error.path);
  problems.set(message, paths);
}

// Each answer is shown on its own: one endpoint failing leaves the others' views current.
async function refresh() {
  const problems = new Map();
  try {
    const answers = await Promise.allSettled(
      ["/v1/status", "/v1/failures", "/v1/charts"].map(getJson),
    );
    const [status, failures, charts] = answers.map((a) => {
      if (a.status === "fulfilled") return a.value;
      addProblem(problems, a.reason);
      return null;
    });
    if (status) {
      renderStatus(status);
      lastStatus = status;
      loaded = true;
      document.getElementById("updated").textContent =
        `updated ${new Date().toLocaleTimeString()}`;
    } else if (!loaded) {
      document.getElementById("updated").textContent = "not loaded";
    }
    if (failures) renderFailures(failures.failures);
    if (charts) renderCharts(lastStatus, charts);
  } catch (error) {
    // An answer of an unexpected shape: said, and the polling goes on.
    addProblem(problems, `cannot show the status: ${error.message || error}`);
  } finally {
    showProblem(problems);
    setTimeout(refresh, REFRESH_MS);
  }
}

// The script runs: the hint for when it does not can go.
document.getElementById("stuck").remove();
refresh();
