import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rm } from "node:fs/promises";
import path from "node:path";
import { before, test } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../src/core/log.js";
import { evaluate } from "../../src/eval/evaluate.js";
import { tempDir } from "../helpers/tiny-data.js";
import { mvtecCategory, TINY_SIZE, tinyEvalBundle } from "../helpers/tiny-mvtec.js";

const logger = createLogger("silent");
let work: string;
let bundle: string;

before(async () => {
  work = await tempDir("stpmd-eval-");
  bundle = path.join(work, "model");
  await tinyEvalBundle(work, bundle, logger);
});

test("eval reports the standard metrics for an MVTec-layout split and rejects masks of the wrong size", async () => {
  const data = path.join(work, "category");
  await mvtecCategory(data, { good: 3, blob: 3 });
  const r = await evaluate(bundle, data, logger);
  assert.equal(r.num_images, 6);
  assert.equal(r.num_good, 3);
  assert.equal(r.num_defective, 3);
  for (const key of ["image_auroc", "pixel_auroc", "aupro", "image_f1_max"] as const) {
    assert.ok(r[key] >= 0 && r[key] <= 1, `${key} = ${r[key]}`);
  }
  const c = r.at_threshold;
  assert.equal(c.true_positive + c.false_negative, 3);
  assert.equal(c.true_negative + c.false_positive, 3);

  await sharp({ create: { width: TINY_SIZE / 2, height: TINY_SIZE / 2, channels: 3, background: "black" } })
    .png()
    .toFile(path.join(data, "ground_truth/blob/001_mask.png"));
  await assert.rejects(evaluate(bundle, data, logger), {
    code: "ERR_MASK_SIZE",
    message: /001_mask\.png: mask is 32×32 but its image is 64×64/,
  });
});

test("eval judges every part at the threshold: counts, defect types, false-alarm thresholds, seeded intervals", async () => {
  const data = path.join(work, "two-types");
  await mvtecCategory(data, { good: 4, blob: 3, scratch: 2 });
  const base = await evaluate(bundle, data, logger);
  assert.deepEqual(
    base.images.map((im) => `${im.kind}/${path.basename(im.file)}`),
    [
      "blob/000.png",
      "blob/001.png",
      "blob/002.png",
      "good/000.png",
      "good/001.png",
      "good/002.png",
      "good/003.png",
      "scratch/000.png",
      "scratch/001.png",
    ],
  );
  // a threshold between the 2nd and 3rd highest good score: exactly 2 false alarms, whatever the model learnt
  const good = base.images
    .filter((im) => im.label === 0)
    .map((im) => im.score)
    .sort((a, b) => b - a);
  const threshold = (good[1]! + good[2]!) / 2;
  const r = await evaluate(bundle, data, logger, { threshold });
  const p = r.operating_points.at_threshold;
  assert.equal(p.threshold, threshold);
  assert.equal(p.rule, "--threshold");
  assert.equal(p.false_alarms, 2);
  assert.equal(p.good, 4);
  const caught = r.images.filter((im) => im.label === 1 && im.score > threshold).length;
  assert.equal(p.caught, caught);
  assert.equal(p.defective, 5);
  assert.deepEqual(
    [r.at_threshold.true_positive, r.at_threshold.false_positive, r.at_threshold.false_negative],
    [caught, 2, 5 - caught],
  );
  assert.equal(r.good_parts.false_alarms, 2);
  assert.deepEqual(
    r.by_defect_type.map((t) => [t.type, t.count, t.caught]),
    [
      ["blob", 3, r.images.filter((im) => im.kind === "blob" && im.score > threshold).length],
      ["scratch", 2, r.images.filter((im) => im.kind === "scratch" && im.score > threshold).length],
    ],
  );
  // 4 good parts cannot show 1 % or 0.1 %: both thresholds are the highest good score, with no false alarm
  assert.equal(r.smallest_false_alarm_rate, 0.25);
  for (const far of r.operating_points.false_alarm_targets) {
    assert.equal(far.resolvable, false);
    assert.equal(far.threshold, good[0]);
    assert.equal(far.false_alarms, 0);
  }
  // the judged point's intervals hold its estimates, and the same seed gives the same intervals
  assert.ok(p.caught_rate_95[0] <= p.caught_rate && p.caught_rate <= p.caught_rate_95[1]);
  assert.ok(p.false_alarm_rate_95[0] <= 0.5 && 0.5 <= p.false_alarm_rate_95[1]);
  const again = await evaluate(bundle, data, logger, { threshold });
  assert.deepEqual(again.operating_points, r.operating_points);
});

test("an eval folder without defects, or without test/, is one line naming --data", async () => {
  const data = path.join(work, "good-only");
  await mvtecCategory(data, { good: 3 });
  await assert.rejects(evaluate(bundle, data, logger), {
    code: "ERR_INPUT_EMPTY",
    message: new RegExp(`^--data ${data}: .*holds 3 good and 0 defective images; evaluating needs both`),
  });
  const cli = spawnSync(process.execPath, ["dist/src/main.cjs", "eval", "--model", bundle, "--data", data], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(cli.status, 1);
  assert.match(
    cli.stderr,
    /^stpmd: --data \S+good-only: .*holds 3 good and 0 defective images; evaluating needs both .*\[ERR_INPUT_EMPTY\]\n$/,
  );
  await rm(path.join(data, "test"), { recursive: true });
  await assert.rejects(evaluate(bundle, data, logger), {
    message: new RegExp(`^--data ${data}: no test/ folder`),
  });
});
