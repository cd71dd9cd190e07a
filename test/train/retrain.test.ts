import assert from "node:assert/strict";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { Random } from "../../src/stpm/random.js";
import { splitTrainVal } from "../../src/stpm/split.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { foldedStudentGraph, initStudent, runningStatsStudentGraph } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";
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
