import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { evaluate } from "../../src/eval/evaluate.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { normalFrames, tempDir, writePart } from "../helpers/tiny-data.js";

const SIZE = 64;
const logger = createLogger("silent");

/** A tiny MVTec-layout category: 3 good test parts, 3 with a contamination blob and its mask. */
async function mvtecCategory(root: string): Promise<void> {
  await mkdir(path.join(root, "test/good"), { recursive: true });
  await mkdir(path.join(root, "test/blob"), { recursive: true });
  await mkdir(path.join(root, "ground_truth/blob"), { recursive: true });
  for (let i = 0; i < 3; i++) {
    await writePart(path.join(root, `test/good/00${i}.png`), synthesizePart(SIZE, 700 + i, "none"));
    const part = synthesizePart(SIZE, 800 + i, "blob");
    await writePart(path.join(root, `test/blob/00${i}.png`), part);
    // the blob is the only near-white, yellow-tinted area: its mask is where blue is well below red
    const mask = new Uint8Array(SIZE * SIZE);
    for (let p = 0; p < mask.length; p++)
      mask[p] = part.rgb[p * 3]! > 200 && part.rgb[p * 3 + 2]! < 180 ? 255 : 0;
    await sharp(mask, { raw: { width: SIZE, height: SIZE, channels: 1 } })
      .png()
      .toFile(path.join(root, `ground_truth/blob/00${i}_mask.png`));
  }
}

test("eval reports the standard metrics for an MVTec-layout split and rejects masks of the wrong size", async () => {
  const work = await tempDir("stpmd-eval-");
  await writeFile(path.join(work, "teacher.onnx"), encodeModel(randomTeacher(3, 8)));
  const frames = await normalFrames(10, SIZE, path.join(work, "train"));
  const bundle = path.join(work, "model");
  await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: path.join(work, "teacher.onnx"),
    outDir: bundle,
    epochs: 2,
    batchSize: 4,
    imageSize: SIZE,
    logger,
    progress: false,
  });
  const data = path.join(work, "category");
  await mvtecCategory(data);
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

  await sharp({ create: { width: SIZE / 2, height: SIZE / 2, channels: 3, background: "black" } })
    .png()
    .toFile(path.join(data, "ground_truth/blob/001_mask.png"));
  await assert.rejects(evaluate(bundle, data, logger), {
    code: "ERR_MASK_SIZE",
    message: /001_mask\.png: mask is 32×32 but its image is 64×64/,
  });
});
