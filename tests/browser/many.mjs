// The dashboard at 200 routes (driven by tests/proxy/dashboard.rs): every route is listed, the
// filter narrows the list, and the page keeps up with its one-second polls. Prints how long a
// poll and its rendering took (figures, not a pass mark). Env: DASHBOARD_URL, ROUTES (count).
import { launch, watchedPage } from "./browser.mjs";

const url = process.env.DASHBOARD_URL;
const routes = Number(process.env.ROUTES);
const browser = await launch();
let failed = null;
try {
  const { page, errors: errors } = await watchedPage(browser);
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction((n) => document.querySelectorAll("tr.route").length === n, routes, { timeout: 10000 });
  await page.fill("#filter", "route-17");
  const shown = await page.locator("tr.route").count();
  if (shown !== 11) throw new Error(`filter "route-17" shows ${shown} rows, not 11 (17, 170-179)`);
  await page.fill("#filter", "");
  // Ten polls and renders, timed in the page.
  const ms = await page.evaluate(async () => {
    const times = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await poll();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { median: times[5], max: times[9] };
  });
  const rows = await page.locator("tr.route").count();
  if (rows !== routes) throw new Error(`${rows} rows after the polls`);
  if (errors.length) throw new Error(`console errors: ${errors.join(" | ")}`);
  console.log(`dashboard at ${routes} routes: poll + render median ${ms.median.toFixed(1)} ms, max ${ms.max.toFixed(1)} ms`);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
if (failed) {
  console.error(`dashboard test failed: ${failed.message || failed}`);
  process.exit(1);
}
