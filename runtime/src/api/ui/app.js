// Eddy's status page: polls the host's API and redraws the tables. Every value is written as
// text (never as HTML): error messages come from guest code.
"use strict";

const REFRESH_MS = 2000;

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

function render(status, failures) {
  fill("hosts", status.hosts, [
    (h) => [h.consumer, "mono"],
    (h) => (h.alive ? ["alive", "alive"] : ["DEAD", "dead"]),
    (h) => [h.api, "mono"],
    (h) => [ago(h.last_seen_ms_ago)],
    (h) => [h.up_since],
  ], "no host has sent a heartbeat");
  fill("functions", status.functions, [
    (f) => [f.name],
    (f) => [f.version, "num"],
    (f) => [(f.digest || "").slice(0, 19), "mono"],
    (f) => f.canary ? [`version ${f.canary.version} takes ${f.canary.percent}%`] : ["–"],
    (f) => f.last_canary
      ? [`version ${f.last_canary.version} ended ${f.last_canary.ended}: ${f.last_canary.reason}`, "error"]
      : ["–"],
  ], "no function is deployed");
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
    (c) => c.missed ? [`${c.missed.emitted} / ${c.missed.skipped}`, "num"] : ["–"],
  ], "no cronjob");
  fill("failures", failures, [
    (r) => [r.time],
    (r) => [r.function],
    (r) => [r.event_id, "mono"],
    (r) => [r.attempt, "num"],
    (r) => [r.outcome, r.outcome],
    (r) => [r.status, "num"],
    (r) => [r.error, "error"],
    (r) => [r.host, "mono"],
  ], "no failures recorded");
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) {
      // not our error shape: keep the status line
    }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

async function refresh() {
  try {
    const [status, failures] = await Promise.all([
      getJson("/v1/status"),
      getJson("/v1/failures"),
    ]);
    render(status, failures.failures);
    document.getElementById("updated").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("problem").textContent = "";
  } catch (error) {
    document.getElementById("problem").textContent = String(error.message || error);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
