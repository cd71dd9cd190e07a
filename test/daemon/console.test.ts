/**
 * The web console in a real browser (Debian's Chromium through playwright-core) against the real daemon: a replay
 * camera, the tiny bundle, a local mosquitto. Skips, saying why, where Chromium is not installed (`.ci/run` installs
 * it, so CI runs it).
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
  };
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
    await page.locator("#log li", { hasText: "login as alice refused" }).waitFor();
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
        /^threshold of camera cam1 set by http \(alice\): \S+ → 1000000000$/.test(l.msg ?? ""),
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

    // the daemon restarts under the open page: it says so, reconnects by itself, and the login still works
    await daemon.stop();
    await page.locator("#stream", { hasText: "reconnecting" }).waitFor({ timeout: 15_000 });
    daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
    await daemon.start();
    await page.locator("#stream", { hasText: "live" }).waitFor({ timeout: 15_000 });
    // the new daemon counts from 0 again; the card follows it
    await cam2.locator(".badge", { hasText: "streaming" }).waitFor({ timeout: 15_000 });
    await cam1.locator("[data-role=threshold-input]").fill("0.000000001");
    await cam1.locator("[data-role=set-threshold]").click();
    await page.locator("#log li", { hasText: '"new":1e-9' }).waitFor();
    assert.equal(daemon.snapshot().cameras[0]!.threshold, 1e-9);
    assert.deepEqual(errors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await daemon.stop();
    await broker.stop();
  }
});
