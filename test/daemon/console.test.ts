/**
 * The web console in a real browser (Debian's Chromium through playwright-core) against the real daemon: a replay
 * camera, the tiny bundle, a local mosquitto, the part record on. Skips, saying why, where Chromium is not installed
 * (`.ci/run` installs it, so CI runs it). With STPMD_SCREENSHOTS=<dir> it also saves each page as a PNG there (the
 * docs' screenshots).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { chromium, type Page } from "playwright-core";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

/** The daemon's log lines, read by the test (who changed what). */
const { logger, lines: logLines } = capturingLogger();
/** Debian's package; CHROMIUM names another build. */
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const skip = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`;

/** What the functions run in the page use of it (this project compiles without the DOM types). */
interface InPage {
  document: {
    querySelector(selector: string): { complete?: boolean; naturalWidth?: number; disabled?: boolean } | null;
    documentElement: { scrollWidth: number; clientWidth: number };
  };
}

/** Where to save the docs' screenshots, if anywhere. */
const SHOTS = process.env.STPMD_SCREENSHOTS;

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS !== undefined) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** How far the page is wider than its window (0: no horizontal scroll). */
function overflow(page: Page): Promise<number> {
  return page.evaluate(() => {
    const root = (globalThis as unknown as InPage).document.documentElement;
    return root.scrollWidth - root.clientWidth;
  });
}

/** The text of the console's newest command log line. */
async function lastLog(page: Page): Promise<string> {
  return (await page.locator("#log li").first().textContent()) ?? "";
}

test("an operator watches and drives the real daemon from the console in Chromium, across a daemon restart", {
  skip,
}, async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-console-e2e-");
  await writeFile(path.join(work, "alice"), "line7-operator\n");
  const broker = await MosquittoBroker.start();
  const httpPort = await freeLoopbackPort();
  const results: InspectionResult[] = [];
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [
      { id: "cam1", source: replaySource(noise, 10), threshold: { value: 1e-9 } },
      { id: "cam2", source: replaySource(noise, 10) },
    ],
    // a recipe that touches cam2 only: selecting it keeps cam1's run-time threshold (docs/recipes.md)
    recipes: { night: { cam2: { threshold: { value: 5 } } } },
    mqtt: {
      url: broker.url,
      client_id: "console-e2e",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    http: {
      enabled: true,
      port: httpPort,
      console: { users: [{ username: "alice", password_file: path.join(work, "alice") }] },
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  let daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    await daemon.start();
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    // the page's own files and talk must fit its content policy (a violation is a console message, not an error)
    page.on("console", (message) => {
      if (/Content.Security.Policy/i.test(message.text())) errors.push(message.text());
    });
    await page.goto(`http://127.0.0.1:${httpPort}/`);

    // watching needs no login: both cameras, live scores, the last frame and cam1's last defect as images
    const cam1 = page.locator('article[data-camera="cam1"]');
    const cam2 = page.locator('article[data-camera="cam2"]');
    await page.locator("#stream", { hasText: "live" }).waitFor({ timeout: 15_000 });
    await page.locator("#ready", { hasText: "ready" }).waitFor({ timeout: 15_000 });
    await cam1.locator("[data-role=score]").filter({ hasNotText: "–" }).waitFor({ timeout: 15_000 });
    await cam2.locator("[data-role=score]").filter({ hasNotText: "–" }).waitFor({ timeout: 15_000 });
    const loaded = (selector: string) =>
      page.waitForFunction(
        (s) => {
          const img = (globalThis as unknown as InPage).document.querySelector(s);
          return img?.complete === true && img.naturalWidth === 64;
        },
        selector,
        { timeout: 15_000 },
      );
    await loaded('article[data-camera="cam1"] img[data-role=last]');
    await loaded('article[data-camera="cam1"] img[data-role=defect]');
    await loaded('article[data-camera="cam2"] img[data-role=last]');
    assert.match(
      (await cam1.locator("[data-role=defect-caption]").textContent()) ?? "",
      /^defect: frame \d+/,
    );
    assert.equal(await cam1.locator("[data-role=rule]").textContent(), "fixed");
    // a threshold below every validation score: all n validation normals would be flagged
    assert.match((await cam1.locator("[data-role=far]").textContent()) ?? "", /^100 % \(≤ 100 %\) of \d+$/);
    assert.equal(
      await cam1.locator("[data-role=aggregation]").textContent(),
      "top_k_mean (k = 1 % of the map)",
    ); // retrain's default
    // every control is off until an operator logs in
    assert.equal(await cam1.locator("[data-role=set-threshold]").isDisabled(), true);
    assert.equal(await page.locator("#reload").isDisabled(), true);

    // a wrong password is refused and changes nothing
    await page.fill("#user", "alice");
    await page.fill("#password", "guess");
    await page.click("#login-button");
    await page
      .locator("#log li", { hasText: "login as alice refused: wrong or missing user name or password" })
      .waitFor();
    assert.equal(await cam1.locator("[data-role=set-threshold]").isDisabled(), true);

    await page.fill("#password", "line7-operator");
    await page.click("#login-button");
    await page.locator("#who", { hasText: "operator alice" }).waitFor();
    await page.waitForFunction(
      () =>
        (globalThis as unknown as InPage).document.querySelector(
          'article[data-camera="cam1"] [data-role=set-threshold]',
        )?.disabled === false,
    );

    // set cam1's threshold above any score: the daemon applies it, the card shows it, later verdicts are normal
    await cam1.locator("[data-role=threshold-input]").fill("1000000000");
    await cam1.locator("[data-role=set-threshold]").click();
    await page.locator("#log li", { hasText: "set_threshold" }).waitFor();
    assert.match(await lastLog(page), /set_threshold .* → ok .*"new":1000000000/);
    assert.equal(daemon.snapshot().cameras[0]!.threshold, 1e9);
    assert.ok(
      logLines.some((l) =>
        /^threshold of camera cam1 set by http:alice: \S+ → 1000000000$/.test(l.msg ?? ""),
      ),
      "the daemon logs the change with the operator's name",
    );
    const mark = results.length;
    await waitFor(
      "normal verdicts on cam1",
      () => results.slice(mark).filter((r) => r.frame.cameraId === "cam1" && r.threshold === 1e9).length >= 3,
    );
    assert.ok(
      results
        .slice(mark)
        .filter((r) => r.threshold === 1e9)
        .every((r) => r.verdict === "ok"),
    );
    await cam1.locator("[data-role=threshold]", { hasText: "1.000e+9" }).waitFor();

    // disable cam2 from its card
    await cam2.locator("[data-role=enabled]").uncheck();
    await cam2.locator(".badge", { hasText: "disabled" }).waitFor({ timeout: 15_000 });
    assert.equal(daemon.snapshot().cameras[1]!.enabled, false);

    // select a recipe on the Live page: the shared executor's select_recipe; cam1's card names its frames' recipe
    await page.selectOption("#recipe", "night");
    await page.locator("#log li", { hasText: "select_recipe" }).waitFor();
    assert.match(await lastLog(page), /select_recipe .* → ok .*"new":"night"/);
    assert.equal(daemon.snapshot().recipe, "night");
    await cam1.locator("[data-role=recipe]", { hasText: "night" }).waitFor({ timeout: 15_000 });
    assert.equal(
      daemon.snapshot().cameras[0]!.threshold,
      1e9,
      "a recipe that leaves cam1 alone keeps its threshold",
    );
    assert.equal(daemon.snapshot().cameras[1]!.enabled, false, "nor does it start the disabled cam2");

    await shot(page, "console-live");

    // a reload keeps the login (the session cookie), and the controls stay usable
    await page.reload();
    await page.locator("#who", { hasText: "operator alice" }).waitFor();
    assert.equal(await page.locator("#login").count(), 0);

    // the review queue: cam1's flagged parts (its threshold was below every score), newest first
    await page.click("#nav-queue");
    const parts = page.locator("#queue li.part");
    await parts.first().waitFor({ timeout: 15_000 });
    const listed = await parts.evaluateAll((items) =>
      items.map((li) => {
        const { id, ts } = (li as unknown as { dataset: { id: string; ts: string } }).dataset;
        return { id: Number(id), ts: Number(ts) };
      }),
    );
    assert.ok(listed.length > 0);
    assert.ok(
      listed.every((r, i) => i === 0 || r.ts <= listed[i - 1]!.ts),
      "newest first",
    );
    const ids = listed.map((r) => r.id);
    // new defects arrive while it is open: cam1 flags every frame again, and the newest part moves to the top
    const before = Math.max(...ids);
    await page.selectOption("#filter-camera", "cam1");
    daemon.control.setThreshold("cam1", { value: 1e-9 }, { via: "config" });
    await page.waitForFunction(
      (old) => {
        const top = (globalThis as unknown as InPage).document.querySelector("#queue li.part") as {
          dataset?: { id: string };
        } | null;
        return Number(top?.dataset?.id) > old;
      },
      before,
      { timeout: 15_000 },
    );
    // a filter that matches nothing says so
    await page.fill("#filter-score", "1000000000000");
    await page.locator("#queue", { hasText: "no flagged parts match" }).waitFor();
    await page.fill("#filter-score", "");
    await parts.first().waitFor();
    await shot(page, "console-queue");
    // keyboard (once the filter field has lost the focus): j moves down, k back up, Enter opens the selected part
    await page.click("#queue h2");
    await page.keyboard.press("j");
    await page.locator("#queue li.part:nth-child(2).selected").waitFor();
    await page.keyboard.press("k");
    await page.locator("#queue li.part:nth-child(1).selected").waitFor();
    const chosen = Number(await page.locator("#queue li.part.selected").getAttribute("data-id"));
    await page.keyboard.press("Enter");
    await page.locator(`#part[data-id="${chosen}"]`).waitFor();
    assert.equal(new URL(page.url()).hash, `#/part/${chosen}`);
    await page.waitForFunction(
      () => {
        const img = (globalThis as unknown as InPage).document.querySelector("#part-image");
        return img?.complete === true && (img.naturalWidth ?? 0) > 0;
      },
      undefined,
      { timeout: 15_000 },
    );
    assert.match((await page.locator("#part").textContent()) ?? "", /against threshold 1\.000e-9/);
    await page.locator("#neighbours li a").first().waitFor();
    await shot(page, "console-part");
    // a label: whatever the server answers (labelled, or its one-line refusal) is shown, never a blank page
    await page.click("#label-false-alarm");
    const said = (await page.locator("#part-message").textContent({ timeout: 15_000 })) ?? "";
    assert.ok(said.length > 0 && !said.includes("\n"), said);
    await page.reload();
    await page.locator(`#part[data-id="${chosen}"]`).waitFor();

    // history and audit: either their data or the server's line
    await page.click("#nav-history");
    await page
      .locator('#history article[data-camera="cam1"] [data-role=parts]')
      .filter({ hasNotText: /^0$/ })
      .waitFor({ timeout: 15_000 });
    await page.locator("#history svg.histogram").first().waitFor();
    await shot(page, "console-history");
    // the export's default span: the last hour, counted back by the daemon when the link is followed
    assert.equal(
      await page.locator("#history a[data-role=export-csv]").getAttribute("href"),
      "/api/records/export.csv?since=1h",
    );
    await page.click("#nav-audit");
    await page.locator("#audit :is(ol.audit, p.message)").first().waitFor({ timeout: 15_000 });
    const audit = await fetch(`http://127.0.0.1:${httpPort}/api/audit?limit=50`);
    if (audit.ok) {
      const { entries } = (await audit.json()) as { entries: unknown[] };
      assert.equal(await page.locator("#audit ol.audit li").count(), Math.min(entries.length, 50));
    } else {
      // not served (yet): the page shows the server's own line
      const line = (await audit.text()).trim();
      assert.equal((await page.locator("#audit p.message").textContent())?.trim(), line);
    }

    // the daemon restarts under the open page: it says so and reconnects by itself; the login (in the old
    // daemon's memory) is gone, the first change says so, and logging in again works
    await page.click("#nav-live");
    await daemon.stop();
    await page.locator("#stream", { hasText: "reconnecting" }).waitFor({ timeout: 15_000 });
    daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
    await daemon.start();
    await page.locator("#stream", { hasText: "live" }).waitFor({ timeout: 15_000 });
    // the new daemon counts from 0 again; the card follows it
    await cam2.locator(".badge", { hasText: "streaming" }).waitFor({ timeout: 15_000 });
    await cam1.locator("[data-role=threshold-input]").fill("0.000000001");
    await cam1.locator("[data-role=set-threshold]").click();
    await page
      .locator("#log li", { hasText: "set_threshold: your login has expired or the daemon restarted" })
      .waitFor();
    await page.fill("#user", "alice");
    await page.fill("#password", "line7-operator");
    await page.click("#login-button");
    await page.locator("#who", { hasText: "operator alice" }).waitFor();
    await cam1.locator("[data-role=threshold-input]").fill("0.000000001");
    await cam1.locator("[data-role=set-threshold]").click();
    await page.locator("#log li", { hasText: '"new":1e-9' }).waitFor();
    assert.equal(daemon.snapshot().cameras[0]!.threshold, 1e-9);

    // a phone, 390 px wide: no page scrolls sideways, and its login survives a reload too
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const small = await phone.newPage();
    small.on("pageerror", (err) => errors.push(err.message));
    await small.goto(`http://127.0.0.1:${httpPort}/`);
    await small
      .locator('article[data-camera="cam1"] [data-role=score]')
      .filter({ hasNotText: "–" })
      .waitFor({ timeout: 15_000 });
    await small.fill("#user", "alice");
    await small.fill("#password", "line7-operator");
    await small.click("#login-button");
    await small.locator("#who", { hasText: "operator alice" }).waitFor();
    assert.equal(await overflow(small), 0, "live page at 390 px");
    await shot(small, "console-live-390");
    await small.reload();
    await small.locator("#who", { hasText: "operator alice" }).waitFor();
    for (const [hash, ready] of [
      ["#/queue", "#queue li.part"],
      [`#/part/${chosen}`, "#part"],
      ["#/history", "#history article"],
      ["#/audit", "#audit"],
      ["#/models", "#models"],
    ] as const) {
      await small.goto(`http://127.0.0.1:${httpPort}/${hash}`);
      await small.locator(ready).first().waitFor({ timeout: 15_000 });
      assert.equal(await overflow(small), 0, `${hash} at 390 px`);
    }
    await phone.close();
    assert.deepEqual(errors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await daemon.stop();
    await broker.stop();
  }
});
