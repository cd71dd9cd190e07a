import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle, quantile, scoreStats, writeBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { Random } from "../../src/stpm/random.js";
import { foldedStudentGraph, initStudent } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";
import { tempDir } from "../helpers/tiny-data.js";

function manifestFields(version: string) {
  return {
    model_version: version,
    created_at: new Date().toISOString(),
    input: {
      name: "frames",
      height: 32,
      width: 32,
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
      normalisation_source: "metadata",
    },
    outputs: ["feat_s4", "feat_s8", "feat_s16"],
    teacher_source_path: "teacher.onnx",
    threshold: 0.5,
    threshold_rule: "test",
    validation_scores: [0.1, 0.2],
    score_stats: scoreStats([0.1, 0.2]),
    training: {},
  };
}

async function writeTiny(dir: string, version = "v1"): Promise<void> {
  const teacher = randomTeacher(1, 4);
  const layout = studentLayout(teacher, 32, 32);
  const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(1)));
  await writeBundle(dir, encodeModel(teacher), encodeModel(student), manifestFields(version));
}

test("a written bundle loads, and rewriting replaces it whole", async () => {
  const dir = path.join(await tempDir(), "model");
  await writeTiny(dir, "v1");
  assert.equal((await loadBundle(dir)).manifest.model_version, "v1");
  await writeTiny(dir, "v2");
  const b = await loadBundle(dir);
  assert.equal(b.manifest.model_version, "v2");
  assert.equal(b.student.outputs.length, 3);
});

test("a corrupted ONNX file is caught by its sha256 and named", async () => {
  const dir = path.join(await tempDir(), "model");
  await writeTiny(dir);
  const student = path.join(dir, "student.onnx");
  const bytes = await readFile(student);
  bytes[bytes.length - 10]! ^= 0xff;
  await writeFile(student, bytes);
  await assert.rejects(loadBundle(dir), {
    code: "ERR_BUNDLE_INVALID",
    message: /student ONNX student\.onnx is corrupt: sha256/,
  });
});

test("missing, unparsable or incomplete manifests are rejected with the reason", async () => {
  const root = await tempDir();
  await assert.rejects(loadBundle(root), {
    code: "ERR_BUNDLE_INVALID",
    message: /not a model bundle: manifest\.json cannot be read/,
  });
  const dir = path.join(root, "model");
  await writeTiny(dir);
  const file = path.join(dir, "manifest.json");
  const good = JSON.parse(await readFile(file, "utf8"));
  await writeFile(file, "{ not json");
  await assert.rejects(loadBundle(dir), { message: /manifest\.json is not valid JSON/ });
  await writeFile(file, JSON.stringify({ ...good, threshold: "high" }));
  await assert.rejects(loadBundle(dir), { message: /"threshold" is missing or not a number/ });
  await writeFile(file, JSON.stringify({ ...good, format_version: 99 }));
  await assert.rejects(loadBundle(dir), { message: /format_version 99 is not supported/ });
});

test("a student that does not mirror the teacher is a mismatch", async () => {
  const dir = path.join(await tempDir(), "model");
  const teacher = randomTeacher(1, 4);
  const other = randomTeacher(1, 4);
  other.nodes = other.nodes.filter((n) => n.op !== "MaxPool");
  await assert.rejects(
    writeBundle(dir, encodeModel(teacher), encodeModel(other), manifestFields("x")).then(() =>
      loadBundle(dir),
    ),
    { code: "ERR_BUNDLE_MISMATCH" },
  );
});

test("quantiles interpolate linearly like numpy", () => {
  assert.equal(quantile([1, 2, 3, 4], 0.5), 2.5);
  assert.equal(quantile([1, 2, 3, 4], 1), 4);
  assert.equal(quantile([0, 10], 0.25), 2.5);
  const s = scoreStats([2, 4, 4, 4, 5, 5, 7, 9]);
  assert.equal(s.mean, 5);
  assert.ok(Math.abs(s.std - Math.sqrt(32 / 7)) < 1e-12);
});
