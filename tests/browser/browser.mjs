// What the browser scripts share: Debian's Chromium, started as the project requires (headless,
// no sandbox, no background networking; nothing downloads a browser), and a page that collects
// its console errors.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking"],
  });
}

// A page whose console errors and uncaught exceptions land in the returned list.
export async function watchedPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  return { page, errors };
}
