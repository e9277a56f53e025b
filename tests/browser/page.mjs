// Drives Eddy's web page in headless Chromium (Debian's, through playwright-core) for
// tests/integration/page.rs: the page loads behind the token, shows a deployed function, and a
// failure appears live after a failing event is published. Prints one JSON report line; exits
// non-zero with the reason if any step fails.
//
// Environment: EDDY_PAGE_URL (the host's API base URL), EDDY_PAGE_TOKEN, EDDY_PAGE_FUNCTION,
// EDDY_PAGE_STREAM; CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const url = process.env.EDDY_PAGE_URL;
const token = process.env.EDDY_PAGE_TOKEN;
const fn = process.env.EDDY_PAGE_FUNCTION;
const stream = process.env.EDDY_PAGE_STREAM;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

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
try {
  const context = await browser.newContext({
    httpCredentials: { username: "eddy", password: token },
  });
  const page = await context.newPage();
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
  report.eventId = eventId;
  report.hostsText = (await page.locator("#hosts tbody").innerText()).trim();
  report.problem = (await page.locator("#problem").innerText()).trim();
  report.pageErrors = errors;
  console.log(JSON.stringify(report));
} catch (error) {
  console.error(`page test failed: ${error.message}\nreport so far: ${JSON.stringify(report)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
