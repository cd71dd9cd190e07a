import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { isStpmdError } from "../../src/core/errors.js";
import { createLogger } from "../../src/core/log.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { Random } from "../../src/stpm/random.js";
import { splitTrainVal } from "../../src/stpm/split.js";
import { RETRAIN_DEFAULTS, type RetrainOptions, retrain } from "../../src/train/retrain.js";
import { foldedStudentGraph, initStudent, runningStatsStudentGraph } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";
import { capturingLogger } from "../helpers/logs.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";

const logger = createLogger("silent");

async function teacherFile(dir: string): Promise<string> {
  const file = path.join(dir, "teacher.onnx");
  await writeFile(file, encodeModel(randomTeacher(2, 8)));
  return file;
}

test("retrain writes a verified bundle, skips corrupt files, and the loss falls", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(12, 64, path.join(dir, "frames"));
  await writeFile(path.join(frames, "zz_truncated.png"), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a]));
  await writeFile(path.join(frames, "notes.txt"), "not an image, not even listed");
  const out = path.join(dir, "bundle");
  const s = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: await teacherFile(dir),
    outDir: out,
    epochs: 6,
    batchSize: 4,
    lr: 0.1,
    imageSize: 64,
    logger,
    progress: false,
  });
  assert.equal(s.skippedFiles.length, 1);
  assert.match(s.skippedFiles[0]!.file, /zz_truncated\.png$/);
  assert.equal(s.trainImages + s.valImages, 12);
  const history = s.manifest.training.history as { loss: number }[];
  assert.equal(history.length, 6);
  assert.ok(
    history[5]!.loss < history[0]!.loss,
    `loss should fall: ${history.map((h) => h.loss.toFixed(3))}`,
  );
  const bundle = await loadBundle(out);
  assert.equal(bundle.manifest.input.height, 64);
  assert.ok(bundle.manifest.threshold > bundle.manifest.score_stats.mean);
  assert.equal(bundle.manifest.validation_scores.length, s.valImages);
  // no temp or old directories are left beside the bundle
  assert.deepEqual((await readdir(dir)).sort(), ["bundle", "frames", "teacher.onnx"]);
});

test("--low-memory trains the same student: the arena changes where buffers live, not the numbers", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(8, 32, path.join(dir, "frames"));
  const opts = {
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: await teacherFile(dir),
    epochs: 3,
    batchSize: 4,
    imageSize: 32,
    logger,
    progress: false,
  };
  const arena = await retrain({ ...opts, outDir: path.join(dir, "arena") });
  const low = await retrain({ ...opts, outDir: path.join(dir, "low"), lowMemory: true });
  const losses = (s: typeof arena) => (s.manifest.training.history as { loss: number }[]).map((h) => h.loss);
  assert.deepEqual(losses(low), losses(arena));
  assert.deepEqual(low.manifest.validation_scores, arena.manifest.validation_scores);
  assert.equal(low.manifest.training.low_memory, true);
  assert.equal(arena.manifest.training.low_memory, false);
});

test("the folded student ONNX gives the training engine's eval-mode features", async () => {
  const teacher = randomTeacher(4, 8);
  const layout = studentLayout(teacher, 32, 32);
  const rng = new Random(3);
  const state = initStudent(layout, rng);
  // non-trivial BatchNorm state, as after training
  for (let k = 0; k < layout.convs.length; k++) {
    state.gammas[k] = state.gammas[k]!.map(() => 0.5 + rng.next());
    state.betas[k] = state.betas[k]!.map(() => rng.normal() * 0.3);
    state.runningMeans[k] = state.runningMeans[k]!.map(() => rng.normal());
    state.runningVars[k] = state.runningVars[k]!.map(() => 0.2 + 2 * rng.next());
  }
  const x = floatInput(
    new Float32Array(2 * 3 * 32 * 32).map(() => rng.normal()),
    [2, 3, 32, 32],
  );
  const folded = await createSession(encodeModel(foldedStudentGraph(teacher, layout, state)));
  const reference = await createSession(encodeModel(runningStatsStudentGraph(teacher, layout, state)));
  const a = await folded.run({ input: x });
  const b = await reference.run({ input: x });
  for (const o of teacher.outputs) {
    const fa = a[o.name]!.data as Float32Array;
    const fb = b[o.name]!.data as Float32Array;
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < fa.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(fa[i]! - fb[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(fb[i]!));
    }
    assert.ok(maxDiff <= 1e-4 * Math.max(1, maxAbs), `${o.name}: max diff ${maxDiff} (max |x| ${maxAbs})`);
  }
});

test("the validation split is seeded and disjoint", () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  const a = splitTrainVal(items, 0.2, 7);
  const b = splitTrainVal(items, 0.2, 7);
  assert.deepEqual(a, b);
  assert.equal(a.val.length, 10);
  assert.equal(new Set([...a.train, ...a.val]).size, 50);
  assert.notDeepEqual(splitTrainVal(items, 0.2, 8).val, a.val);
});

test("bad inputs give one clear error naming the file", async () => {
  const dir = await tempDir();
  const teacher = await teacherFile(dir);
  const base = {
    ...RETRAIN_DEFAULTS,
    teacherFile: teacher,
    outDir: path.join(dir, "b"),
    logger,
    progress: false,
  };
  await assert.rejects(retrain({ ...base, framesDir: path.join(dir, "missing") }), {
    code: "ERR_INPUT_MISSING",
    message: /missing: frames folder cannot be read/,
  });
  await assert.rejects(retrain({ ...base, framesDir: dir }), {
    code: "ERR_INPUT_EMPTY",
    message: /holds no images/,
  });
  const frames = await normalFrames(3, 32);
  const twoOutputs = randomTeacher(1, 4);
  twoOutputs.outputs = twoOutputs.outputs.slice(0, 2);
  const bad = path.join(dir, "two.onnx");
  await writeFile(bad, encodeModel(twoOutputs));
  await assert.rejects(retrain({ ...base, framesDir: frames, teacherFile: bad }), {
    code: "ERR_TEACHER_INVALID",
    message: /two\.onnx: a teacher needs exactly three feature outputs/,
  });
});

test("a bad option, frames folder or output fails in one line naming it, before any image is decoded", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(3, 64, path.join(dir, "frames"));
  const { logger: capturing, lines } = capturingLogger("debug");
  const base = {
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: await teacherFile(dir),
    outDir: path.join(dir, "new", "bundle"),
    imageSize: 64,
    logger: capturing,
    progress: false,
  };
  const aFile = path.join(dir, "a-file");
  await writeFile(aFile, "keep me");
  const notABundle = path.join(dir, "results");
  await mkdir(notABundle);
  await writeFile(path.join(notABundle, "report.csv"), "keep me too");
  const tile = { size: 32, overlap: 8, scale: 1 };
  const cases: [Partial<RetrainOptions>, RegExp][] = [
    [{ epochs: 0 }, /^--epochs 0: must be an integer ≥ 1$/],
    [{ epochs: 2.5 }, /^--epochs 2\.5: must be an integer ≥ 1$/],
    [{ batchSize: 1 }, /^--batch-size 1: must be an integer ≥ 2$/],
    [{ lr: Number.NaN }, /^--lr NaN: must be a number ≥ 0$/],
    [{ momentum: -0.5 }, /^--momentum -0\.5: must be a number ≥ 0$/],
    [{ weightDecay: Number.POSITIVE_INFINITY }, /^--weight-decay Infinity: must be a number ≥ 0$/],
    [{ seed: -1 }, /^--seed -1: must be an integer ≥ 0$/],
    [{ valFraction: 1 }, /^--val-fraction 1: must be a number ≥ 0 and below 1$/],
    [{ thresholdSigma: -1 }, /^--threshold-sigma -1: must be a number ≥ 0$/],
    [{ patience: 1.5 }, /^--patience 1\.5: must be an integer ≥ 0$/],
    [{ minDelta: 1 }, /^--min-delta 1: must be a number ≥ 0 and below 1$/],
    [{ minEpochs: 0 }, /^--min-epochs 0: must be an integer ≥ 1$/],
    [{ timeBudgetMin: 0 }, /^--time-budget 0: must be a number > 0$/],
    [{ timeBudgetMin: -1 }, /^--time-budget -1: must be a number > 0$/],
    [{ timeBudgetMin: Number.NaN }, /^--time-budget NaN: must be a number > 0$/],
    [{ imageSize: 40 }, /^--image-size 40x40: width 40 must be a multiple of 16 and at least 32$/],
    [{ imageSize: { width: 64, height: 8 } }, /^--image-size 64x8: height 8 must be a multiple of 16/],
    [{ roi: { x: 0, y: 0, width: 8, height: 64 } }, /^--roi 0,0,8,64: width and height must be at least 16$/],
    [
      { roi: { x: -1, y: 0, width: 32, height: 32 } },
      /^--roi -1,0,32,32: must be four non-negative integers/,
    ],
    [
      { roi: { x: 40, y: 40, width: 32, height: 32 } },
      /^--roi 40,40,32,32: lies outside the 64×64 images of /,
    ],
    [{ tile: { ...tile, size: 40 } }, /^--tile 40: must be a multiple of 16 and at least 32$/],
    [{ tile: { ...tile, overlap: 1.5 } }, /^--tile-overlap 1\.5: must be an integer ≥ 0$/],
    [
      { tile: { ...tile, overlap: 32 } },
      /^--tile-overlap 32: must be a whole number of pixels, at least 0 and below the tile size 32$/,
    ],
    [{ tile: { ...tile, scale: 0 } }, /^--scale 0: must be above 0 and at most 4$/],
    [{ tile: { ...tile, size: 128 } }, /^--tile 128: tile 128 is larger than the scaled image \(64×64\)/],
    [
      { outDir: frames },
      /^--out .*frames: holds the frames folder .*, which writing the bundle would delete$/,
    ],
    [{ outDir: dir }, /^--out .*: holds the frames folder/],
    [{ outDir: aFile }, /^--out .*a-file: exists and is not a directory$/],
    [{ outDir: path.join(aFile, "bundle") }, /^--out .*: .*a-file is not a directory$/],
    [{ outDir: notABundle }, /^--out .*results: exists and is not a model bundle \(no manifest\.json\)/],
    [{ framesDir: path.join(dir, "missing") }, /missing: frames folder cannot be read/],
    [{ teacherFile: path.join(dir, "missing.onnx") }, /missing\.onnx: teacher ONNX cannot be read/],
  ];
  for (const [bad, message] of cases) {
    const what = JSON.stringify(bad);
    await assert.rejects(
      retrain({ ...base, ...bad }),
      (err: Error) => {
        assert.ok(isStpmdError(err), `${what}: ${err.stack}`);
        assert.match(err.message, message, what);
        assert.doesNotMatch(err.message, /\n/, `${what}: one line`);
        return true;
      },
      what,
    );
    // refused before the first stage's end: not a line logged (no geometry, images or teacher features), nothing written
    assert.deepEqual(
      lines.map((l) => l.msg),
      [],
      what,
    );
    assert.equal(existsSync(path.join(dir, "new")), false, what);
  }
  assert.equal(await readFile(aFile, "utf8"), "keep me");
  assert.deepEqual(await readdir(notABundle), ["report.csv"]);
  assert.equal((await readdir(frames)).length, 3);
});

test("a validation fraction that leaves nothing to train on is refused before the teacher's features", async () => {
  const dir = await tempDir();
  const { logger: capturing, lines } = capturingLogger("debug");
  await assert.rejects(
    retrain({
      ...RETRAIN_DEFAULTS,
      framesDir: await normalFrames(2, 64, path.join(dir, "frames")),
      teacherFile: await teacherFile(dir),
      outDir: path.join(dir, "bundle"),
      imageSize: 64,
      valFraction: 0.9,
      logger: capturing,
      progress: false,
    }),
    {
      code: "ERR_OPTION_INVALID",
      message: /^--val-fraction 0\.9: holds out all 2 readable images of .*frames; none is left to train on$/,
    },
  );
  assert.deepEqual(
    lines.map((l) => l.msg),
    ["geometry"],
  );
});

test("retrain scores the threshold by its --part-score, stores every aggregation's scores, and predicts the false-alarm rate", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(10, 32, path.join(dir, "frames"));
  const out = path.join(dir, "bundle");
  const s = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: await teacherFile(dir),
    outDir: out,
    epochs: 1,
    batchSize: 4,
    imageSize: 32,
    partScore: "top_k_mean",
    logger,
    progress: false,
  });
  const m = (await loadBundle(out)).manifest;
  assert.deepEqual(m.score, { aggregation: "top_k_mean", k: 0.01 });
  const by = m.validation_scores_by_aggregation!;
  assert.deepEqual(Object.keys(by).sort(), ["max", "smoothed_max", "top_k_mean"]);
  assert.deepEqual(m.validation_scores, by.top_k_mean);
  assert.equal(by.max!.length, s.valImages);
  // each image's top-1 % mean (here the top 10 of 1024 pixels) is at most its maximum
  for (let i = 0; i < s.valImages; i++) assert.ok(by.top_k_mean![i]! <= by.max![by.max!.length - 1]!);
  const stats = m.score_stats;
  assert.ok(Math.abs(m.threshold - (stats.mean + 3 * stats.std)) < 1e-12);
  const above = m.validation_scores.filter((v) => v > m.threshold).length;
  assert.equal(s.predictedFalseAlarms.false_alarms, above);
  assert.equal(s.predictedFalseAlarms.normals, s.valImages);
});
