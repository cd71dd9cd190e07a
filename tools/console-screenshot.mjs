#!/usr/bin/env node
// Screenshots a running daemon's web console in headless Chromium (playwright-core, a dev dependency):
//
//   node tools/console-screenshot.mjs [URL] [OUT.png] [--seconds N]
//
// defaults: http://127.0.0.1:9464/, docs/console.png, 20 s of results before the shot (the sparklines fill up).
// CHROMIUM names the browser (default /usr/bin/chromium, Debian's package).
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const secondsAt = args.indexOf("--seconds");
const seconds = secondsAt >= 0 ? Number(args.splice(secondsAt, 2)[1]) : 20;
const [url = "http://127.0.0.1:9464/", out = "docs/console.png"] = args;
if (!(seconds >= 0)) {
  console.error("console-screenshot: --seconds needs a number");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  await page.goto(url);
  await page.locator("#stream", { hasText: "live" }).waitFor({ timeout: 15_000 });
  await page.waitForTimeout(seconds * 1000);
  await page.screenshot({ path: out });
  console.log(`console-screenshot: ${url} → ${out} after ${seconds} s`);
} catch (err) {
  console.error(`console-screenshot: ${url}: ${err.message.split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
