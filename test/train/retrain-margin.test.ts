import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { bundleGeometry, loadBundle, scoringOptions } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { scoreImages } from "../../src/stpm/image-scoring.js";
import { Scorer } from "../../src/stpm/scorer.js";
import { RETRAIN_DEFAULTS, type RetrainOptions, retrain } from "../../src/train/retrain.js";
import { normalFrames, SHARED_TEACHER, tempDir } from "../helpers/tiny-data.js";

const logger = createLogger("silent");
const SIZE = 64;

async function options(dir: string, frames: string, margin: number): Promise<RetrainOptions> {
  const teacherFile = path.join(dir, "teacher.onnx");
  await writeFile(teacherFile, encodeModel(randomTeacher(2, 8)));
  return {
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile,
    outDir: path.join(dir, `bundle-m${margin}`),
    epochs: 4,
    batchSize: 4,
    imageSize: SIZE,
    margin,
    patience: 0,
    logger,
    progress: false,
  };
}

const PATCH = 8;

/** A bright PATCH×PATCH contamination whose top-left corner is (x, y): at the very edge when x or y is 0 or SIZE − PATCH. */
function withPatch(rgb: Uint8Array, x: number, y: number): Uint8Array {
  const out = rgb.slice();
  for (let dy = 0; dy < PATCH; dy++) {
    for (let dx = 0; dx < PATCH; dx++) out.set([235, 200, 120], ((y + dy) * SIZE + x + dx) * 3);
  }
  return out;
}

/** A part that runs to all four edges of the frame: the middle SIZE² of a synthetic part of 1.5·SIZE. */
function edgeToEdge(seed: number): Uint8Array {
  const big = (SIZE * 3) / 2;
  const part = synthesizePart(big, seed, "none").rgb;
  const o = (big - SIZE) / 2;
  const out = new Uint8Array(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++)
    out.set(part.subarray(((y + o) * big + o) * 3, ((y + o) * big + o + SIZE) * 3), y * SIZE * 3);
  return out;
}

// a random teacher's features do not separate an 8-px patch from these parts even inside the frame (measured: its
// interior patches scored below normal parts as often as above), so this needs the shared ImageNet teacher
test("with a context margin, defects at the very border are caught above every normal part, where they are", {
  skip: !existsSync(SHARED_TEACHER) && `no shared teacher at ${SHARED_TEACHER}`,
}, async () => {
  const dir = await tempDir();
  const frames = path.join(dir, "frames");
  await mkdir(frames);
  for (let i = 0; i < 16; i++) {
    await sharp(edgeToEdge(100 + i), { raw: { width: SIZE, height: SIZE, channels: 3 } })
      .png()
      .toFile(path.join(frames, `part_${i}.png`));
  }
  await retrain({ ...(await options(dir, frames, 8)), teacherFile: SHARED_TEACHER, epochs: 12 });
  const bundle = await loadBundle(path.join(dir, "bundle-m8"));
  const geometry = bundleGeometry(bundle.manifest);
  assert.equal(geometry.margin, 8, "the bundle records its margin");
  assert.match(String(bundle.manifest.training.geometry), /context margin 8/);
  const normals = [0, 1, 2, 3, 4, 5].map((i) => edgeToEdge(500 + i));
  const e = SIZE - PATCH;
  // on every edge and in two corners, touching the frame's outermost pixels
  const spots: [number, number][] = [
    [0, 30],
    [e, 20],
    [28, 0],
    [36, e],
    [0, 0],
    [e, e],
  ];
  const defects = normals.map((n, i) => withPatch(n, ...spots[i]!));
  const scorer = await Scorer.create(bundle.teacher, bundle.student, scoringOptions(bundle.manifest));
  const good = await scoreImages((p, n) => scorer.score(p, n), normals, geometry, 4);
  const bad = await scoreImages((p, n) => scorer.score(p, n), defects, geometry, 4);
  await scorer.release();
  const worstNormal = Math.max(...good.scores);
  bad.scores.forEach((score, i) => {
    assert.ok(score > worstNormal, `border defect ${i} at ${spots[i]}: ${score} ≤ normal ${worstNormal}`);
    const map = bad.maps[i]!;
    assert.equal(map.length, SIZE * SIZE, "the map is cropped back to the inspected area");
    let peak = 0;
    for (let k = 1; k < map.length; k++) if (map[k]! > map[peak]!) peak = k;
    const [x, y] = spots[i]!;
    const px = peak % SIZE;
    const py = Math.floor(peak / SIZE);
    // the peak lies on the patch or next to it (the teacher's coarsest level is 16 px a cell)
    assert.ok(
      px >= x - PATCH && px < x + 2 * PATCH && py >= y - PATCH && py < y + 2 * PATCH,
      `defect ${i} at (${x}, ${y}) peaks at (${px}, ${py})`,
    );
  });
});

test("a margin the inspected area has no room for, or not a multiple of 8, is one line naming --margin", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(3, 32, path.join(dir, "frames"));
  const base = { ...(await options(dir, frames, 0)), imageSize: 32 };
  await assert.rejects(retrain({ ...base, margin: 32 }), {
    code: "ERR_OPTION_INVALID",
    message:
      /^--margin 32: is larger than the room: the context beyond the inspected area's edge is the area reflected, so the margin must be below its shorter side \(32×32: below 32\)$/,
  });
  await assert.rejects(retrain({ ...base, margin: 12 }), {
    code: "ERR_OPTION_INVALID",
    message: /^--margin 12: must be a whole number of pixels, at least 0 and a multiple of 8/,
  });
  await assert.rejects(retrain({ ...base, tile: { size: 32, overlap: 8, scale: 1 }, margin: 40 }), {
    code: "ERR_OPTION_INVALID",
    message: /^--margin 40: is larger than the room.*\(32×32: below 32\)$/,
  });
});
