import assert from "node:assert/strict";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { before, test } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../src/core/log.js";
import { loadRgb } from "../../src/data/images.js";
import { evaluate } from "../../src/eval/evaluate.js";
import { REPORT_MARKER } from "../../src/eval/report-dir.js";
import { tempDir } from "../helpers/tiny-data.js";
import { mvtecCategory, TINY_SIZE, tinyEvalBundle } from "../helpers/tiny-mvtec.js";

const logger = createLogger("silent");
let work: string;
let bundle: string;
let data: string;

before(async () => {
  work = await tempDir("stpmd-report-");
  bundle = path.join(work, "model");
  await tinyEvalBundle(work, bundle, logger);
  data = path.join(work, "category");
  await mvtecCategory(data, { good: 4, blob: 3, scratch: 2 });
});

function count(text: string, pattern: RegExp): number {
  return text.match(new RegExp(pattern.source, "g"))?.length ?? 0;
}

test("--report writes a self-contained page: numbers, histogram with thresholds, bounded galleries of heatmaps", async () => {
  const dir = path.join(work, "report");
  // above every score: all 5 defective parts are misses, no good part is a false alarm
  const r = await evaluate(bundle, data, logger, { threshold: 1e6, report: { dir, images: 3 } });
  assert.equal(r.report, dir);
  assert.equal(r.operating_points.at_threshold.caught, 0);
  const html = await readFile(path.join(dir, "index.html"), "utf8");
  const images = (await readdir(path.join(dir, "images"))).sort();
  // at most 3 per list: the 3 highest good parts, the 3 lowest misses
  assert.deepEqual(images, [
    "false-alarm-01.jpg",
    "false-alarm-02.jpg",
    "false-alarm-03.jpg",
    "miss-01.jpg",
    "miss-02.jpg",
    "miss-03.jpg",
  ]);
  for (const file of images) {
    const meta = await sharp(path.join(dir, "images", file)).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["jpeg", TINY_SIZE, TINY_SIZE]);
    assert.equal(count(html, new RegExp(`<img src="images/${file}"`)), 1);
  }
  assert.equal(count(html, /<img /), 6);
  assert.match(html, /3 of 4 good parts shown \(at most 3\)/);
  assert.match(html, /3 of 5 misses shown \(at most 3\)/);
  // the galleries show the right parts in the right order
  const sources = [...html.matchAll(/alt="([^"]+)"/g)].map((m) => m[1]!);
  const good = r.images.filter((im) => im.label === 0).sort((a, b) => b.score - a.score);
  const missed = r.images.filter((im) => im.label === 1).sort((a, b) => a.score - b.score);
  assert.deepEqual(
    sources,
    [...good.slice(0, 3), ...missed.slice(0, 3)].map((im) => im.file),
  );
  // each map is drawn scaled to its part's score, so even far below the threshold a good part shows its peak
  const drawn = await sharp(path.join(dir, "images/false-alarm-03.jpg")).raw().toBuffer();
  const plain = (await loadRgb(good[2]!.file, TINY_SIZE, TINY_SIZE)).rgb;
  const largest = drawn.reduce((m, v, i) => Math.max(m, Math.abs(v - plain[i]!)), 0);
  assert.ok(largest > 40, `the heatmap changes the image by at most ${largest}`);
  // histogram: 30 bins per class plus a legend swatch each; one line for the judged threshold, one shared by the
  // two false-alarm targets (4 good parts show neither: both are the highest good score)
  assert.equal(count(html, /<svg class="histogram"/), 1);
  assert.equal(count(html, /<rect class="good"/), 31);
  assert.equal(count(html, /<rect class="defective"/), 31);
  assert.equal(count(html, /<line class="threshold"/), 2);
  assert.match(html, />1 % = 0\.1 %</);
  assert.match(html, /4 good parts resolve false-alarm rates in steps of 1\/4 = 25 %/);
  assert.match(html, /<td>blob<\/td><td>3<\/td><td>0 \(0\.0 %\)<\/td>/);
  assert.match(html, /<td>scratch<\/td><td>2<\/td><td>0 \(0\.0 %\)<\/td>/);
  // nothing fetched from elsewhere
  assert.doesNotMatch(html, /https?:\/\/|<script|<link/);
  const marker = JSON.parse(await readFile(path.join(dir, REPORT_MARKER), "utf8"));
  assert.deepEqual(marker.operating_points, r.operating_points);
  assert.deepEqual(await leftovers(), []);

  // a rerun replaces the report whole: at a threshold below every score there are no misses
  const again = await evaluate(bundle, data, logger, { threshold: 1e-9, report: { dir, images: 3 } });
  assert.equal(again.operating_points.at_threshold.caught, 5);
  const html2 = await readFile(path.join(dir, "index.html"), "utf8");
  assert.deepEqual((await readdir(path.join(dir, "images"))).sort(), [
    "false-alarm-01.jpg",
    "false-alarm-02.jpg",
    "false-alarm-03.jpg",
  ]);
  assert.match(html2, /Misses: [^<]*<\/h2>\n<p class="note">None\.<\/p>/);
  assert.deepEqual(await leftovers(), []);
});

test("--report refuses a file or a foreign folder before scoring, and a failed run leaves the old report as it was", async () => {
  const file = path.join(work, "a-file");
  await writeFile(file, "keep me");
  await assert.rejects(evaluate(bundle, data, logger, { report: { dir: file } }), {
    code: "ERR_OPTION_INVALID",
    message: `--report ${file}: is a file, not a folder; name a folder for the report`,
  });
  const foreign = path.join(work, "photos");
  await mkdir(foreign);
  await writeFile(path.join(foreign, "holiday.jpg"), "keep me too");
  await assert.rejects(evaluate(bundle, data, logger, { report: { dir: foreign } }), {
    message: new RegExp(`^--report ${foreign}: folder exists and is not an stpmd eval report`),
  });
  assert.deepEqual(await readdir(foreign), ["holiday.jpg"]);
  const blocked = path.join(file, "report");
  await assert.rejects(evaluate(bundle, data, logger, { report: { dir: blocked } }), {
    message: `--report ${blocked}: ${file} is not an existing folder`,
  });
  // a place the process may not write (even root may not write into /proc)
  await assert.rejects(evaluate(bundle, data, logger, { report: { dir: "/proc/report" } }), {
    message: /^--report \/proc\/report: cannot write there \(/,
  });

  const dir = path.join(work, "kept");
  await evaluate(bundle, data, logger, { report: { dir } });
  const before = await readFile(path.join(dir, "index.html"), "utf8");
  const broken = path.join(work, "broken");
  await mvtecCategory(broken, { good: 2, blob: 2 });
  await sharp({ create: { width: 8, height: 8, channels: 3, background: "black" } })
    .png()
    .toFile(path.join(broken, "ground_truth/blob/001_mask.png"));
  await assert.rejects(evaluate(bundle, broken, logger, { report: { dir } }), { code: "ERR_MASK_SIZE" });
  assert.equal(await readFile(path.join(dir, "index.html"), "utf8"), before);
  assert.deepEqual(await leftovers(), []);
});

/** Temp or moved-aside report folders left in the work folder. */
async function leftovers(): Promise<string[]> {
  return (await readdir(work)).filter((name) => /\.(tmp|old)-/.test(name));
}
