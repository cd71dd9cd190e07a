import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import type { Logger } from "../../src/core/log.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { normalFrames, writePart } from "./tiny-data.js";

export const TINY_SIZE = 64;

/**
 * A tiny MVTec-layout category at `root`: `good` good test parts and, per defect type (`blob`, `scratch`), that many
 * defective parts with their exact masks (the pixels where the part differs from the same part without the defect).
 */
export async function mvtecCategory(
  root: string,
  counts: { good: number; blob?: number; scratch?: number },
): Promise<void> {
  await mkdir(path.join(root, "test/good"), { recursive: true });
  for (let i = 0; i < counts.good; i++) {
    await writePart(path.join(root, `test/good/${name(i)}.png`), synthesizePart(TINY_SIZE, 700 + i, "none"));
  }
  for (const defect of ["blob", "scratch"] as const) {
    const count = counts[defect] ?? 0;
    if (count === 0) continue;
    await mkdir(path.join(root, `test/${defect}`), { recursive: true });
    await mkdir(path.join(root, `ground_truth/${defect}`), { recursive: true });
    for (let i = 0; i < count; i++) {
      const seed = 800 + i;
      const plain = synthesizePart(TINY_SIZE, seed, "none").rgb;
      const part = synthesizePart(TINY_SIZE, seed, defect);
      await writePart(path.join(root, `test/${defect}/${name(i)}.png`), part);
      const mask = new Uint8Array(TINY_SIZE * TINY_SIZE);
      for (let p = 0; p < mask.length; p++) {
        for (let c = 0; c < 3; c++)
          if (Math.abs(part.rgb[p * 3 + c]! - plain[p * 3 + c]!) > 30) mask[p] = 255;
      }
      await sharp(mask, { raw: { width: TINY_SIZE, height: TINY_SIZE, channels: 1 } })
        .png()
        .toFile(path.join(root, `ground_truth/${defect}/${name(i)}_mask.png`));
    }
  }
}

/** A bundle retrained for 2 epochs on 10 normal parts (random teacher) at `dir`, as the eval tests judge with. */
export async function tinyEvalBundle(work: string, dir: string, logger: Logger): Promise<void> {
  await writeFile(path.join(work, "teacher.onnx"), encodeModel(randomTeacher(3, 8)));
  const frames = await normalFrames(10, TINY_SIZE, path.join(work, "train"));
  await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: path.join(work, "teacher.onnx"),
    outDir: dir,
    epochs: 2,
    batchSize: 4,
    imageSize: TINY_SIZE,
    logger,
    progress: false,
  });
}

function name(i: number): string {
  return String(i).padStart(3, "0");
}
