// Drives Eddy's web page in headless Chromium (Debian's, through playwright-core) for
// tests/integration/page.rs: the page loads behind the token, shows a deployed function, and a
// failure appears live after a failing event is published, in the failures table (with the
// function's error text) and in the function's events chart. Then two more browsers, each
// without a signed-in context: one given the token in the URL (http://eddy:<token>@host/), one
// a wrong token there; what they show is reported, not judged (the Rust test asserts). Prints
// one JSON report line; exits non-zero with the reason if a step of the first part fails.
//
// Environment: EDDY_PAGE_URL (the host's API base URL), EDDY_PAGE_TOKEN, EDDY_PAGE_FUNCTION,
// EDDY_PAGE_STREAM; EDDY_PAGE_SCREENSHOT (a path for a full-page screenshot, optional);
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const url = process.env.EDDY_PAGE_URL;
const token = process.env.EDDY_PAGE_TOKEN;
const fn = process.env.EDDY_PAGE_FUNCTION;
const stream = process.env.EDDY_PAGE_STREAM;
const screenshot = process.env.EDDY_PAGE_SCREENSHOT;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;
// The page polls every 2 s: this is many polls.
const SETTLE_MS = 15000;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
  ],
});
const report = {};
let page;
try {
  const context = await browser.newContext({
    httpCredentials: { username: "eddy", password: token },
  });
  page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));

  const response = await page.goto(url + "/", { waitUntil: "load" });
  report.status = response.status();
  report.title = await page.title();

  const functions = page.locator("#functions tbody");
  await functions.getByText(fn, { exact: true }).waitFor({ timeout: WAIT_MS });
  report.functionShown = true;
  report.failuresBefore = (await page.locator("#failures tbody").innerText()).trim();

  const eventId = `page-test-${Date.now()}`;
  const published = await fetch(`${url}/v1/streams/${stream}/events`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/cloudevents+json",
    },
    body: JSON.stringify({
      specversion: "1.0",
      id: eventId,
      source: "page-test",
      type: "OrderPlaced",
      data: { total: 12 },
    }),
  });
  report.publishStatus = published.status;

  // No reload: the page refreshes itself.
  const row = page.locator("#failures tbody tr", { hasText: eventId });
  await row.waitFor({ timeout: WAIT_MS });
  report.failureRow = (await row.innerText()).replace(/\s+/g, " ").trim();
  report.failureError = (await row.locator("td.error").innerText()).trim();
  report.eventId = eventId;

  // The failure in the function's events chart: its series' data-points, once one is above
  // 0. The chart is found by comparing data-function, so that no name needs escaping.
  const points = await page.waitForFunction((name) => {
    const chart = [...document.querySelectorAll('svg[data-chart="events"]')]
      .find((svg) => svg.dataset.function === name);
    const series = chart ? [...chart.querySelectorAll("[data-series]")] : [];
    return series.some((s) => Number(s.dataset.points) >= 1) &&
      Object.fromEntries(series.map((s) => [s.dataset.series, Number(s.dataset.points)]));
  }, fn, { timeout: WAIT_MS });
  report.chartPoints = await points.jsonValue();
  report.hostsText = (await page.locator("#hosts tbody").innerText()).trim();
  report.problem = (await page.locator("#problem").innerText()).trim();
  report.pageErrors = errors;
  await takeScreenshot();

  const host = new URL(url).host;
  const inUrl = await signInByUrl(`http://eddy:${encodeURIComponent(token)}@${host}/`);
  report.credentialsInUrl = inUrl.status === 200 && inUrl.problem === "" &&
    inUrl.updated.startsWith("updated") && inUrl.hosts.includes("alive");
  report.credentialsInUrlSeen = inUrl;
  report.wrongToken = await signInByUrl(`http://eddy:wrong@${host}/`);
  console.log(JSON.stringify(report));
} catch (error) {
  await takeScreenshot();
  console.error(`page test failed: ${error.message}\nreport so far: ${JSON.stringify(report)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

// The first page as it is now, to look at (also after a failed step).
async function takeScreenshot() {
  if (!screenshot || !page) return;
  try {
    await page.screenshot({ path: screenshot, fullPage: true });
    report.screenshot = screenshot;
  } catch (error) {
    report.screenshot = `not taken: ${error.message}`;
  }
}

// Opens `address` (credentials in it) in a new context that was given none: what the page
// shows once its first poll has answered, or what the browser shows instead (a refused page's
// body, its error page). Never throws.
async function signInByUrl(address) {
  const seen = { status: null, updated: "", problem: "", hosts: "", text: "" };
  const context = await browser.newContext();
  try {
    const tab = await context.newPage();
    const errors = [];
    tab.on("pageerror", (e) => errors.push(String(e)));
    seen.pageErrors = errors;
    try {
      const response = await tab.goto(address, { waitUntil: "load" });
      seen.status = response ? response.status() : null;
    } catch (error) {
      // Chromium refuses a wrong password in the URL outright (ERR_INVALID_AUTH_CREDENTIALS).
      seen.error = error.message.split("\n")[0];
    }
    if (await tab.locator("#updated").count()) {
      await tab
        .waitForFunction(() => document.getElementById("updated").textContent !== "loading…",
          null, { timeout: SETTLE_MS })
        .catch(() => {});
      seen.updated = (await tab.locator("#updated").innerText()).trim();
      seen.problem = (await tab.locator("#problem").textContent()).trim();
      seen.hosts = (await tab.locator("#hosts tbody").innerText()).trim();
    } else {
      seen.text = (await tab.locator("body").innerText()).trim().slice(0, 500);
    }
  } catch (error) {
    seen.error = [seen.error, error.message.split("\n")[0]].filter(Boolean).join("; ");
  } finally {
    await context.close();
  }
  return seen;
}
