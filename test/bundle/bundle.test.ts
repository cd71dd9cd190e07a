import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import {
  bundlePartScore,
  loadBundle,
  quantile,
  scoreStats,
  scoringBasis,
  writeBundle,
} from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { processStartTicks, processTag } from "../../src/core/process-identity.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { capturingLogger } from "../helpers/logs.js";
import { killedWrite, manifestFields, writeTinyBundle as writeTiny } from "../helpers/tiny-bundle.js";
import { tempDir } from "../helpers/tiny-data.js";

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

/** The names beside a bundle (its own and what writes left). */
async function siblings(dir: string): Promise<string[]> {
  return (await readdir(path.dirname(dir))).sort();
}

test("a write killed between its two renames: the next load finds the previous bundle, and says so", async () => {
  const dir = path.join(await tempDir(), "model");
  await writeTiny(dir, "v1");
  const pid = await killedWrite(dir, "v2");
  // the crash as the field saw it: no bundle at the name, the old one aside, the new one in its temp directory
  const left = await siblings(dir);
  assert.equal(left.length, 2, left.join(", "));
  assert.ok(
    left.every((name) => /^model\.(old|tmp)-/.test(name)),
    left.join(", "),
  );

  const { logger, lines } = capturingLogger();
  const bundle = await loadBundle(dir, logger);
  assert.equal(bundle.manifest.model_version, "v1");
  assert.deepEqual(await siblings(dir), ["model"], "the dead writer's temp directory is removed");
  const warnings = lines.filter((l) => l.level === 40);
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0]!.msg,
    new RegExp(
      `^bundle ${dir} was missing: a write by process ${pid} was killed between its two renames; restored the previous bundle from ${dir}\\.old-${pid}`,
    ),
  );
  // and the interrupted write can simply be done again
  await writeTiny(dir, "v2");
  assert.equal((await loadBundle(dir)).manifest.model_version, "v2");
  assert.deepEqual(await siblings(dir), ["model"]);
});

test("a write removes the temp directories of dead writers, never one of a writer still running", async () => {
  const dir = path.join(await tempDir(), "model");
  await writeTiny(dir, "v1");
  // dead writers' leftovers (a whole bundle each, 4.3 MB in the field): a killed write's, and an older stpmd's
  await killedWrite(dir, "v2");
  await mkdir(`${dir}.tmp-1999999999-0badf00d`); // an older stpmd's name: pid only (beyond pid_max, so not running)
  // a live writer: another process, mid-write
  const live: ChildProcess = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], {
    stdio: "ignore",
  });
  try {
    const livePid = live.pid!;
    const liveTemp = `${dir}.tmp-${processTag(livePid, await processStartTicks(livePid))}-cafecafe`;
    await mkdir(liveTemp);
    await writeFile(path.join(liveTemp, "teacher.onnx"), "being written");

    await writeTiny(dir, "v3");
    assert.equal((await loadBundle(dir)).manifest.model_version, "v3");
    assert.deepEqual(await siblings(dir), ["model", path.basename(liveTemp)]);

    const exited = new Promise((resolve) => live.once("exit", resolve));
    live.kill("SIGKILL");
    await exited;
    await writeTiny(dir, "v4");
    assert.deepEqual(await siblings(dir), ["model"], "removed once its writer is gone");
    // a name that only looks like a leftover (a user's backup) is never touched
    await mkdir(`${dir}.old-2024-01`);
    await writeTiny(dir, "v5");
    assert.deepEqual(await siblings(dir), ["model", "model.old-2024-01"]);
  } finally {
    live.kill("SIGKILL");
  }
});

test("the part score round-trips through the manifest; a bundle without it scores by max; a bad one is refused", async () => {
  const root = await tempDir();
  const teacher = randomTeacher(1, 4);
  const bytes = encodeModel(teacher);
  const byAggregation = { max: [0.1, 0.2], smoothed_max: [0.05, 0.08], top_k_mean: [0.04, 0.06] };
  const dir = path.join(root, "smoothed");
  await writeBundle(dir, bytes, bytes, {
    ...manifestFields("s1"),
    score: { aggregation: "smoothed_max", sigma: 4 },
    validation_scores: byAggregation.smoothed_max,
    validation_scores_by_aggregation: byAggregation,
  });
  const loaded = (await loadBundle(dir)).manifest;
  assert.deepEqual(bundlePartScore(loaded), { aggregation: "smoothed_max", sigma: 4 });
  assert.deepEqual(loaded.validation_scores_by_aggregation, byAggregation);
  // the bundle's own aggregation: its threshold as it is; another: the same σ multiple over that one's scores
  assert.equal(scoringBasis(loaded)!.threshold, 0.5);
  assert.equal(scoringBasis(loaded, "smoothed_max")!.threshold, 0.5);
  const top = scoringBasis(loaded, "top_k_mean")!;
  const k = (0.5 - loaded.score_stats.mean) / loaded.score_stats.std;
  assert.ok(Math.abs(top.threshold - (0.05 + k * scoreStats([0.04, 0.06]).std)) < 1e-12);
  assert.deepEqual(top.score, { aggregation: "top_k_mean", k: 0.01 });

  const oldDir = path.join(root, "old");
  await writeTiny(oldDir);
  const old = (await loadBundle(oldDir)).manifest;
  assert.equal(old.score, undefined);
  assert.deepEqual(bundlePartScore(old), { aggregation: "max" });
  assert.equal(scoringBasis(old, "max")!.threshold, 0.5);
  assert.equal(scoringBasis(old, "smoothed_max"), undefined);

  const file = path.join(dir, "manifest.json");
  const good = JSON.parse(await readFile(file, "utf8"));
  await writeFile(file, JSON.stringify({ ...good, score: { aggregation: "mean" } }));
  await assert.rejects(loadBundle(dir), {
    code: "ERR_BUNDLE_INVALID",
    message: /manifest\.json: score: aggregation must be one of max, smoothed_max, top_k_mean$/,
  });
});
