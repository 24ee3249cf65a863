// The dashboard in a real browser (Debian's Chromium, driven by playwright-core), against a
// running proxy. Driven by tests/proxy/dashboard.rs, which starts the processes and passes:
//   DASHBOARD_URL  the admin listener's page
//   ROUTES_FILE    the live route table; EDIT_50 and EDIT_BAD: files to save over it, in turn
//   SECRETS        planted secrets (newline-separated) that must appear nowhere on the page
//   SCREENSHOT     where to save the screenshot; SEEN: where to write what the page showed
// Exits non-zero, saying why, on the first thing that does not hold.
import { launch, watchedPage } from "./browser.mjs";
import fs from "node:fs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env("DASHBOARD_URL");
const routesFile = env("ROUTES_FILE");

// Saves `from` over the route table the way an editor does: whole, then renamed into place.
function save(from) {
  const tmp = `${routesFile}.saving`;
  fs.copyFileSync(from, tmp);
  fs.renameSync(tmp, routesFile);
  return Date.now();
}

const browser = await launch();
let failed = null;
try {
  const { page, errors: consoleErrors } = await watchedPage(browser);
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));

  await page.goto(url, { waitUntil: "load" });
  const phaseOf = (id) => page.locator(`tr[data-route="${id}"] .phase`).getAttribute("data-phase");
  await page.waitForSelector('tr[data-route="products"]', { timeout: 10000 });
  await page.waitForSelector('tr[data-route="everything-else"]', { timeout: 10000 });
  const before = await phaseOf("products");
  if (before !== "shadow") throw new Error(`products shows ${before}, not shadow`);

  // A saved edit moves the route to 50 %: the open page shows it within 2 s, unreloaded.
  const saved = save(env("EDIT_50"));
  await page.waitForFunction(
    () => document.querySelector('tr[data-route="products"] .phase')?.getAttribute("data-phase") === "canary 50 %",
    null, { timeout: 2000, polling: 50 });
  const shownAfterMs = Date.now() - saved;

  // A refused edit shows its file:line:column error; the table in use stays.
  save(env("EDIT_BAD"));
  await page.waitForFunction(
    () => !document.getElementById("refused").hidden
      && /routes\.toml:\d+:\d+/.test(document.getElementById("refused-errors").textContent),
    null, { timeout: 5000, polling: 50 });
  const refusedText = await page.locator("#refused-errors").textContent();
  const stillCanary = await phaseOf("products");
  if (stillCanary !== "canary 50 %") throw new Error(`after the refused edit products shows ${stillCanary}`);

  // The shadow section shows the planted difference, with its example.
  await page.waitForFunction(() => /price_cents/.test(document.getElementById("shadow").textContent), null, { timeout: 10000 });

  // The data section: the catalog's sync lag, and who takes the writes of the catch-all route.
  await page.waitForFunction(() => /products from the monolith/.test(document.getElementById("sync").textContent), null, { timeout: 10000 });
  const writes = await page.locator("#writes").textContent();
  if (!/everything-else/.test(writes) || !/legacy/.test(writes)) throw new Error(`writes section: ${writes}`);

  // No planted secret anywhere: not in the markup, not in what the page fetched.
  const html = await page.content();
  const status = await page.evaluate(async () => (await fetch("status?series=true")).text());
  for (const secret of env("SECRETS").split("\n").filter(Boolean)) {
    if (html.includes(secret)) throw new Error(`the page shows a planted secret (${secret.slice(0, 4)}…)`);
    if (status.includes(secret)) throw new Error(`the status the page reads holds a planted secret (${secret.slice(0, 4)}…)`);
  }
  // Nothing but the admin listener was asked.
  const origin = new URL(url).origin;
  const foreign = requests.filter((r) => !r.startsWith(origin));
  if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);

  await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });
  const rows = await page.$$eval("tr.route", (trs) => trs.map((tr) => ({
    id: tr.getAttribute("data-route"),
    phase: tr.querySelector(".phase").getAttribute("data-phase"),
  })));
  const seen = {
    shown_after_ms: shownAfterMs,
    refused: refusedText,
    rows,
    migrated: await page.locator("#migrated").textContent(),
    share: await page.locator("#share").textContent(),
    version: await page.locator("#version").textContent(),
  };
  fs.writeFileSync(env("SEEN"), JSON.stringify(seen, null, 2));
  if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
  console.log(`dashboard: the edit showed after ${shownAfterMs} ms; ${rows.length} routes; no console error`);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error(`dashboard test failed: ${failed.message || failed}`);
  process.exit(1);
}
