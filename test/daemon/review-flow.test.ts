/**
 * Issue 21's review loop as a quality engineer runs it, in a real browser (Debian's Chromium through
 * playwright-core) against the real daemon: a replay camera, a local mosquitto, the part record, the audit log.
 * Log in, see flagged parts arrive in the queue, filter, open a part, mark a false alarm and find the frame in the
 * camera's normal set (what `stpmd retrain --frames` reads), undo it, confirm a defect and find it in the labelled
 * set (MVTec layout, what `stpmd eval --data` reads), reload and stay logged in, read the audit page, export a CSV
 * of the last hour. With the shared data present the replay is MVTec bottle parts (so the screenshots that
 * STPMD_SCREENSHOTS=<dir> saves show real parts); else noise frames. Skips, saying why, without Chromium.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { chromium, type Page } from "playwright-core";
import sharp from "sharp";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import type { PartRecord } from "../../src/publish/records-api.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

const { logger } = capturingLogger();
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const skip = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`;
const SHOTS = process.env.STPMD_SCREENSHOTS;
/**
 * For the docs' screenshots: a real bundle (e.g. bottle's, from `stpmd retrain`) judging at its own threshold, so
 * the heatmaps show real defects. The test itself uses a tiny bundle that flags every frame.
 */
const SHOT_BUNDLE = process.env.STPMD_SCREENSHOT_BUNDLE;
const BOTTLE = path.resolve(process.env.STPMD_SHARED ?? "../shared", "data/mvtec_ad/bottle/test");

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS !== undefined) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Bottle parts (three broken, three good) at 256² as a replay folder, or undefined without the shared data. */
async function bottleReplay(dir: string): Promise<string | undefined> {
  if (!existsSync(BOTTLE)) return undefined;
  await mkdir(dir, { recursive: true });
  const picks = ["broken_large/000.png", "good/000.png", "contamination/001.png", "good/001.png"];
  picks.push("broken_small/002.png", "good/002.png");
  for (const [i, pick] of picks.entries()) {
    await sharp(path.join(BOTTLE, pick))
      .resize(256, 256)
      .png()
      .toFile(path.join(dir, `${String(i).padStart(3, "0")}.png`));
  }
  return dir;
}

/** Files under `dir` (recursively, relative), or [] when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

test("review loop in Chromium: queue, filter, part, false alarm into the normal set, undo, confirmed defect into the labelled set, reload, audit, CSV of the last hour", {
  skip,
}, async () => {
  const tiny = await tinyStation("stpmd-review-e2e-");
  const { work, noise } = tiny;
  const bundle = SHOT_BUNDLE ?? tiny.bundle;
  const flagAll = SHOT_BUNDLE === undefined ? { threshold: { value: 1e-9 } } : {};
  const frames = (await bottleReplay(path.join(work, "bottle"))) ?? noise;
  await writeFile(path.join(work, "alice"), "line7-quality\n");
  const broker = await MosquittoBroker.start();
  const httpPort = await freeLoopbackPort();
  const dirs = {
    normal: path.join(work, "frames"),
    labelled: path.join(work, "labelled"),
    records: path.join(work, "records"),
  };
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [
      { id: "cam1", source: replaySource(frames, 5), ...flagAll },
      { id: "cam2", source: replaySource(frames, 5), ...flagAll },
    ],
    mqtt: {
      url: broker.url,
      client_id: "review-e2e",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    http: {
      enabled: true,
      port: httpPort,
      console: { users: [{ username: "alice", password_file: path.join(work, "alice") }] },
    },
    records: { dir: dirs.records, labelled_dir: dirs.labelled },
    collection: { dir: dirs.normal },
    audit: { file: path.join(work, "audit.jsonl") },
    health: { watchdog: false },
  });
  const base = `http://127.0.0.1:${httpPort}`;
  const daemon = new Daemon(config, logger);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    await daemon.start();
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${base}/`);

    // log in
    await page.fill("#user", "alice");
    await page.fill("#password", "line7-quality");
    await page.click("#login-button");
    await page.locator("#who", { hasText: "operator alice" }).waitFor({ timeout: 15_000 });
    await page.locator('article[data-camera="cam1"] img[data-role=defect]').waitFor({ timeout: 20_000 });
    await page.locator("#ready", { hasText: /^ready$/ }).waitFor({ timeout: 20_000 });
    await page.locator("#node", { hasNotText: /^0\.00 fps/ }).waitFor({ timeout: 20_000 });
    await shot(page, "review-live");

    // flagged parts arrive in the queue; filtered to cam1 only cam1's remain
    await page.click("#nav-queue");
    const parts = page.locator("#queue li.part");
    await parts.first().waitFor({ timeout: 20_000 });
    await page.selectOption("#filter-camera", "cam1");
    await waitFor("only cam1's parts listed", async () => {
      const texts = await parts.allTextContents();
      return texts.length > 0 && texts.every((t) => t.includes("cam1") && !t.includes("cam2"));
    });
    await shot(page, "review-queue");

    // open the newest part
    const id = Number(await parts.first().getAttribute("data-id"));
    await parts.first().locator("a").click();
    await page.locator(`#part[data-id="${id}"]`).waitFor();
    assert.equal(new URL(page.url()).hash, `#/part/${id}`);
    const record = async (): Promise<PartRecord> => {
      const reply = (await (await fetch(`${base}/api/records?id=${id}`)).json()) as { records: PartRecord[] };
      return reply.records[0]!;
    };
    const camera = (await record()).camera;
    assert.equal(camera, "cam1");
    await page.waitForFunction(
      () => {
        const img = (
          globalThis as unknown as {
            document: { querySelector(s: string): { complete?: boolean; naturalWidth?: number } | null };
          }
        ).document.querySelector("#part-image");
        return img?.complete === true && (img.naturalWidth ?? 0) > 0;
      },
      undefined,
      { timeout: 15_000 },
    );
    await shot(page, "review-part");

    // a false alarm: the frame joins the camera's normal set and the labelled set's good parts
    await page.click("#label-false-alarm");
    await page.locator("#part-message.ok").waitFor({ timeout: 15_000 });
    const normal = path.join(dirs.normal, camera);
    await waitFor("the false alarm in the normal set", async () =>
      (await filesUnder(normal)).some((f) => f.endsWith("_false-alarm.png")),
    );
    const good = path.join(dirs.labelled, camera, "test", "good");
    assert.equal((await filesUnder(good)).length, 1, "and in the labelled set's test/good");
    assert.equal((await record()).label, "false_alarm");

    // undo: both copies are gone, the label too
    await page.click("#label-undo");
    await page.locator("#part-message", { hasText: "label undone" }).waitFor({ timeout: 15_000 });
    const undo = await (await fetch(`${base}/api/audit?action=unlabel&limit=1`)).text();
    assert.deepEqual(
      (await filesUnder(normal)).filter((f) => f.endsWith("_false-alarm.png")),
      [],
      "gone from the normal set",
    );
    assert.deepEqual(await filesUnder(good), [], `and from the labelled set (audit: ${undo})`);
    assert.equal((await record()).label, null);

    // a confirmed defect: the frame and its draft mask in the labelled set, MVTec layout
    await page.fill("#defect-type", "crack");
    await page.click("#label-defect");
    await page.locator("#part-message", { hasText: "confirmed the defect" }).waitFor({ timeout: 15_000 });
    const labelled = path.join(dirs.labelled, camera);
    await waitFor("the confirmed defect in the labelled set", async () =>
      (await filesUnder(labelled)).some((f) => f.startsWith(path.join("test", "crack"))),
    );
    const files = await filesUnder(labelled);
    const image = files.find((f) => f.startsWith(path.join("test", "crack")))!;
    const mask = path.join("ground_truth", "crack", `${path.basename(image, ".png")}_mask.png`);
    assert.ok(files.includes(mask), `draft mask ${mask} among ${files.join(", ")}`);
    await page.locator("#accept-mask").click();
    await page.locator("#part-message", { hasText: "draft mask accepted" }).waitFor();
    await shot(page, "review-part-labelled");

    // a reload keeps the login and shows the label
    await page.reload();
    await page.locator("#who", { hasText: "operator alice" }).waitFor();
    await page.locator(`#part[data-id="${id}"]`).waitFor();
    assert.equal((await record()).label, "confirmed_defect");

    // every step is in the audit log, shown in the console with who did it
    await page.click("#nav-audit");
    const audit = page.locator("#audit ol.audit li");
    await audit.first().waitFor({ timeout: 15_000 });
    const lines = await audit.allTextContents();
    for (const action of ["label", "unlabel", "accept_mask"]) {
      assert.ok(
        lines.some((l) => l.includes(action) && l.includes("alice")),
        `${action} by alice in the audit page: ${lines.slice(0, 6).join(" | ")}`,
      );
    }
    await shot(page, "review-audit");

    // a CSV of the last hour, downloaded from the history page
    await page.click("#nav-history");
    const link = page.locator("#history [data-role=export-csv]");
    await link.waitFor({ timeout: 15_000 });
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    const csv = await readFile((await download.path())!, "utf8");
    const rows = csv.trim().split("\r\n");
    assert.match(rows[0]!, /^id,time,camera,seq,/);
    assert.ok(rows.length > 2, `rows: ${rows.length}`);
    assert.ok(
      rows.some((r) => r.startsWith(`${id},`) && r.includes("confirmed_defect")),
      "the labelled part is in it",
    );
    await shot(page, "review-history");
    assert.deepEqual(errors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await daemon.stop();
    await broker.stop();
  }
});
