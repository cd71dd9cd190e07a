import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle, scoreStats, writeBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { rgbToChw } from "../../src/data/images.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { encodeModel, type Graph } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { type Geometry, tiledGeometry } from "../../src/stpm/geometry.js";
import { Random } from "../../src/stpm/random.js";
import {
  CALIBRATION_DEFAULTS,
  calibrate,
  calibrationInputs,
  executedOpCounts,
  quantizationPoints,
  quantizeBundle,
  quantizeGraph,
  quantizeWeightsPerChannel,
  uint8Params,
} from "../../src/train/quantize.js";
import { foldedStudentGraph, initStudent } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";

const S = 32;
const MEAN = [0.5, 0.5, 0.5];
const STD = [0.5, 0.5, 0.5];

/** Normalised NCHW input of synthetic normal parts (different seeds give different parts of one kind). */
function parts(count: number, firstSeed: number): Float32Array {
  const x = new Float32Array(count * 3 * S * S);
  for (let i = 0; i < count; i++)
    rgbToChw(synthesizePart(S, firstSeed + i, "none").rgb, S, S, MEAN, STD, x, i);
  return x;
}

async function features(graph: Graph, x: Float32Array, n: number): Promise<Record<string, Float32Array>> {
  const session = await createSession(encodeModel(graph));
  const out = await session.run({ input: floatInput(x, [n, 3, S, S]) });
  await session.release();
  return Object.fromEntries(graph.outputs.map((o) => [o.name, out[o.name]!.data as Float32Array]));
}

test("uint8Params maps the range onto 0..255 with zero exactly representable", () => {
  const p = uint8Params({ min: -1, max: 3 });
  assert.ok(Math.abs(p.scale - 4 / 255) < 1e-7);
  assert.equal(p.zeroPoint, 64); // 1 / (4/255) = 63.75
  // an all-positive range still starts at zero (ReLU outputs), an all-negative one ends there
  assert.equal(uint8Params({ min: 0.5, max: 2 }).zeroPoint, 0);
  assert.equal(uint8Params({ min: -2, max: -0.5 }).zeroPoint, 255);
  assert.deepEqual(uint8Params({ min: 0, max: 0 }), { scale: 1, zeroPoint: 0 });
  // behind a ReLU6 the quantized ceiling must not pass 6, or ONNX Runtime keeps the Clip
  const clipped = uint8Params({ min: 0, max: 6 }, { min: 0, max: 6 });
  assert.ok(Math.fround(clipped.scale * 255) - 6 <= 2 ** -23);
});

test("weights quantize symmetrically per output channel", () => {
  const w = new Float32Array([0.5, -1, 0.25, 0, 0, 0, 2, 1, -0.5]);
  const { values, scales } = quantizeWeightsPerChannel(w, 3);
  assert.ok(Math.abs(scales[0]! - 1 / 127) < 1e-9);
  assert.equal(scales[1], 1); // an all-zero channel keeps a usable scale
  assert.ok(Math.abs(scales[2]! - 2 / 127) < 1e-9);
  assert.deepEqual([...values], [64, -127, 32, 0, 0, 0, 127, 64, -32]); // 63.5 → 64, 31.75 → 32
});

test("the int8 graph runs, keeps the features, and ONNX Runtime executes it with int8 kernels", async () => {
  const teacher = randomTeacher(3, 8);
  const ranges = await calibrate(teacher, parts(8, 10), 8, S, CALIBRATION_DEFAULTS);
  const int8 = quantizeGraph(teacher, ranges);

  const ops = int8.nodes.map((n) => n.op);
  assert.ok(ops.includes("QuantizeLinear"));
  const convs = teacher.nodes.filter((n) => n.op === "Conv").length;
  // every Conv reads its weights through a per-output-channel DequantizeLinear
  const weightDq = int8.nodes.filter((n) => n.op === "DequantizeLinear" && n.attrs.axis === 0);
  assert.equal(weightDq.length, 2 * convs); // weights and biases
  assert.deepEqual(
    int8.outputs.map((o) => o.name),
    teacher.outputs.map((o) => o.name),
  );

  const executed = await executedOpCounts(encodeModel(int8));
  assert.equal(executed["com.microsoft:QLinearConv"], convs, JSON.stringify(executed));
  assert.equal(executed.Conv ?? 0, 0);

  // unseen parts of the same kind as the calibration ones
  const n = 4;
  const x = parts(n, 50);
  const f32 = await features(teacher, x, n);
  const i8 = await features(int8, x, n);
  for (const o of teacher.outputs) {
    const a = f32[o.name]!;
    const b = i8[o.name]!;
    const c = o.dims[1] as number;
    const hw = a.length / (n * c);
    let worst = 1;
    for (let img = 0; img < n; img++) {
      for (let p = 0; p < hw; p++) {
        let ab = 0;
        let aa = 0;
        let bb = 0;
        for (let k = 0; k < c; k++) {
          const u = a[(img * c + k) * hw + p]!;
          const v = b[(img * c + k) * hw + p]!;
          ab += u * v;
          aa += u * u;
          bb += v * v;
        }
        // a position where both vectors are zero (ReLU) is identical, not dissimilar
        if (aa === 0 && bb === 0) continue;
        worst = Math.min(worst, ab / Math.sqrt(aa * bb));
      }
    }
    assert.ok(worst > 0.98, `${o.name}: worst per-position cosine ${worst}`);
  }
});

test("a teacher and its student quantize to the same architecture", async () => {
  const teacher = randomTeacher(4, 4);
  const layout = studentLayout(teacher, S, S);
  const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(2)));
  const x = parts(4, 1);
  const qt = quantizeGraph(teacher, await calibrate(teacher, x, 4, S));
  const qs = quantizeGraph(student, await calibrate(student, x, 4, S));
  assert.deepEqual(
    qt.nodes.map((n) => n.op),
    qs.nodes.map((n) => n.op),
  );
  // feature outputs: dequantized int8 by default, the float op results with outputs "float"
  const producer = (g: Graph, name: string): string => g.nodes.find((n) => n.outputs.includes(name))!.op;
  const floatOuts = quantizeGraph(teacher, await calibrate(teacher, x, 4, S), { outputs: "float" });
  for (const o of teacher.outputs) {
    assert.equal(producer(qt, o.name), "DequantizeLinear");
    assert.equal(producer(floatOuts, o.name), producer(teacher, o.name));
  }
  // a Conv feeding only its activation gets no Q/DQ in between (they fuse)
  const points = new Set(quantizationPoints(teacher));
  const convIntoActivation = teacher.nodes.find(
    (n) => n.op === "Conv" && teacher.nodes.some((m) => m.op === "Clip" && m.inputs[0] === n.outputs[0]),
  )!;
  assert.ok(!points.has(convIntoActivation.outputs[0]!));
});

test("quantize writes an int8 bundle that loads and re-derives the threshold from held-out images", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(6, S, path.join(dir, "frames"));
  const teacher = randomTeacher(6, 4);
  const layout = studentLayout(teacher, S, S);
  const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(6)));
  const fp32Scores = [0.1, 0.2, 0.3];
  await writeBundle(path.join(dir, "fp32"), encodeModel(teacher), encodeModel(student), {
    model_version: "v1",
    created_at: new Date().toISOString(),
    input: { name: "frames", height: S, width: S, mean: MEAN, std: STD, normalisation_source: "metadata" },
    outputs: teacher.outputs.map((o) => o.name),
    teacher_source_path: "random",
    threshold: 0.2 + 2 * 0.1, // mean + 2·std of fp32Scores
    threshold_rule: "mean + 2·std of validation image scores",
    validation_scores: fp32Scores,
    score_stats: scoreStats(fp32Scores),
    // the split retrain would have made: 3 of 6 frames held out with seed 0
    training: { frames_dir: frames, seed: 0, val_fraction: 0.5, skipped_files: [] },
  });
  const logger = createLogger("silent");
  const summary = await quantizeBundle({
    modelDir: path.join(dir, "fp32"),
    framesDir: frames,
    outDir: path.join(dir, "int8"),
    calibrationImages: 4,
    calibration: CALIBRATION_DEFAULTS,
    outputs: "quantized",
    logger,
  });
  assert.equal(summary.calibrationImages, 4);
  assert.equal(summary.thresholdSource, "int8-validation");
  const bundle = await loadBundle(path.join(dir, "int8"));
  const m = bundle.manifest;
  assert.equal(m.training.precision, "int8");
  assert.equal(m.model_version, "v1-int8");
  assert.equal(m.validation_scores.length, 3);
  const stats = scoreStats(m.validation_scores);
  assert.ok(Math.abs(m.threshold - (stats.mean + 2 * stats.std)) < 1e-9);
  assert.ok(bundle.teacher.nodes.some((n) => n.op === "QuantizeLinear"));
  await assert.rejects(
    quantizeBundle({
      modelDir: path.join(dir, "int8"),
      framesDir: frames,
      outDir: path.join(dir, "again"),
      calibrationImages: 2,
      calibration: CALIBRATION_DEFAULTS,
      outputs: "quantized",
      logger,
    }),
    /already int8/,
  );
});

/** An fp32 bundle of a random teacher and an untrained student fed `fed`² inputs, with `geometry`, at `dir`. */
async function writeRandomBundle(
  dir: string,
  version: string,
  geometry: Geometry,
  fed: number,
  frames: string,
): Promise<void> {
  const teacher = randomTeacher(7, 4);
  const layout = studentLayout(teacher, fed, fed);
  const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(7)));
  const scores = [0.1, 0.2, 0.3];
  await writeBundle(dir, encodeModel(teacher), encodeModel(student), {
    model_version: version,
    created_at: new Date().toISOString(),
    input: { name: "frames", height: S, width: S, mean: MEAN, std: STD, normalisation_source: "metadata" },
    outputs: teacher.outputs.map((o) => o.name),
    teacher_source_path: "random",
    threshold: 0.4,
    threshold_rule: "mean + 2·std of validation image scores",
    validation_scores: scores,
    score_stats: scoreStats(scores),
    geometry,
    training: { frames_dir: frames, seed: 0, val_fraction: 0.5, skipped_files: [] },
  });
}

test("quantize calibrates on what a tiled ROI bundle's model is fed, and the int8 bundle keeps its geometry", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(6, 64, path.join(dir, "frames"));
  // the 48×48 ROI at (8, 8) of 64×64 frames, at native scale, in 32-pixel tiles overlapping by 16: 2×2 tiles
  const geometry = tiledGeometry({ width: 48, height: 48 }, { x: 8, y: 8, width: 48, height: 48 }, S, 16, 1);
  const files = (await readdir(frames)).sort().map((f) => path.join(frames, f));
  const calib = await calibrationInputs(files, 3, geometry, MEAN, STD);
  assert.equal(calib.count, 3 * 4, "every tile of every calibration image");
  assert.equal(calib.inputs.length, 12 * 3 * S * S);

  await writeRandomBundle(path.join(dir, "fp32"), "tiled", geometry, S, frames);
  await quantizeBundle({
    modelDir: path.join(dir, "fp32"),
    framesDir: frames,
    outDir: path.join(dir, "int8"),
    calibrationImages: 3,
    calibration: CALIBRATION_DEFAULTS,
    outputs: "quantized",
    logger: createLogger("silent"),
  });
  const m = (await loadBundle(path.join(dir, "int8"))).manifest;
  assert.deepEqual(m.geometry, geometry);
  assert.equal(m.validation_scores.length, 3, "held-out images rescored through the tiles");
});

test("quantize calibrates a margin bundle on its inputs with their context, and keeps the margin", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(6, 64, path.join(dir, "frames"));
  const margin = 8;
  const geometry = { ...tiledGeometry({ width: 64, height: 64 }, null, S, 16, 1), margin };
  const fed = S + 2 * margin;
  const files = (await readdir(frames)).sort().map((f) => path.join(frames, f));
  const calib = await calibrationInputs(files, 2, geometry, MEAN, STD);
  assert.equal(calib.count, 2 * 9, "every tile of every calibration image");
  assert.equal(calib.inputs.length, calib.count * 3 * fed * fed, "each tile with its context margin");
  await writeRandomBundle(path.join(dir, "fp32"), "margin", geometry, fed, frames);
  const summary = await quantizeBundle({
    modelDir: path.join(dir, "fp32"),
    framesDir: frames,
    outDir: path.join(dir, "int8"),
    calibrationImages: 2,
    calibration: CALIBRATION_DEFAULTS,
    outputs: "quantized",
    logger: createLogger("silent"),
  });
  assert.equal(summary.thresholdSource, "int8-validation");
  const m = (await loadBundle(path.join(dir, "int8"))).manifest;
  assert.equal(m.geometry?.margin, margin);
  assert.ok(m.validation_scores.every(Number.isFinite), `int8 scores ${m.validation_scores}`);
});
