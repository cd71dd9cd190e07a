import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { loadBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";

test("retrain stops early by its rule, keeps the best epoch and says why in the manifest", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(10, 32, path.join(dir, "frames"));
  const teacherFile = path.join(dir, "teacher.onnx");
  await writeFile(teacherFile, encodeModel(randomTeacher(2, 8)));
  const opts = {
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile,
    batchSize: 4,
    lr: 0.05,
    imageSize: 32,
    logger: createLogger("silent"),
    progress: false,
  };
  // the best score must halve every epoch over a 2-epoch window: the tiny run's does not
  const s = await retrain({
    ...opts,
    outDir: path.join(dir, "early"),
    epochs: 30,
    patience: 2,
    minDelta: 0.5,
    minEpochs: 3,
  });
  const t = s.manifest.training as Record<string, unknown>;
  assert.ok(s.epochsRun >= 3 && s.epochsRun < 30, `epochs run: ${s.epochsRun}`);
  assert.match(
    s.stoppedReason,
    /^converged: the best score improved [\d.]+% per epoch over the last 2 epochs/,
  );
  assert.equal(t.stopped_reason, s.stoppedReason);
  assert.equal(t.stopped_on, "converged");
  assert.equal(t.still_improving, false);
  assert.equal(t.stop_note, undefined);
  assert.equal(t.time_budget_min, null);
  assert.equal(t.epochs_run, s.epochsRun);
  assert.equal(t.epochs, 30);
  const history = t.history as { val_mean_score: number }[];
  assert.equal(history.length, s.epochsRun);
  const lowest = Math.min(...history.map((h) => h.val_mean_score));
  assert.equal(history[s.bestEpoch - 1]!.val_mean_score, lowest);
  assert.equal(t.best_epoch, s.bestEpoch);
  assert.match(t.stopping_rule as string, /improves by < 50% per epoch over the last 2 epochs/);
  // the stored validation scores are the kept epoch's, from the deployable scoring graph (the validator picks the
  // epoch by the map's maximum, whatever part score the bundle's threshold is in)
  const bundle = await loadBundle(path.join(dir, "early"));
  const maxima = bundle.manifest.validation_scores_by_aggregation!.max!;
  const mean = maxima.reduce((a, b) => a + b, 0) / s.valImages;
  assert.ok(Math.abs(mean - lowest) <= 1e-4 * lowest, `${mean} vs ${lowest}`);

  // patience 0: exactly --epochs
  const fixed = await retrain({ ...opts, outDir: path.join(dir, "fixed"), epochs: 4, patience: 0 });
  assert.equal(fixed.epochsRun, 4);
  assert.equal(fixed.stoppedReason, "epoch ceiling");
});

test("retrain runs past 12 epochs while the validation curve falls, and says the ceiling cut it", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(10, 32, path.join(dir, "frames"));
  const teacherFile = path.join(dir, "teacher.onnx");
  await writeFile(teacherFile, encodeModel(randomTeacher(2, 8)));
  // this tiny run's curve (seed 0, lr 0.05) is flat for 6 epochs, then falls by 6–13 % per epoch to epoch 20
  const s = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile,
    batchSize: 4,
    lr: 0.05,
    imageSize: 32,
    logger: createLogger("silent"),
    progress: false,
    outDir: path.join(dir, "long"),
    epochs: 16,
    minEpochs: 8,
    minDelta: 0.03,
  });
  assert.equal(s.epochsRun, 16);
  assert.equal(s.stop.cause, "epoch ceiling");
  assert.equal(s.stop.stillImproving, true);
  const t = s.manifest.training as Record<string, unknown>;
  const h = (t.history as { val_mean_score: number }[]).map((x) => x.val_mean_score);
  const fmt = (x: number): string => String(Number(x.toPrecision(3)));
  assert.ok(h[15]! < h[14]!, `the last epoch improved: ${h[14]} → ${h[15]}`);
  assert.match(
    s.stop.note!,
    new RegExp(
      `^still improving: ${fmt(h[14]!)} → ${fmt(h[15]!)} in the last epoch \\([\\d.]+% per epoch over the last 5 epochs\\); more epochs would likely help$`,
    ),
  );
  assert.equal(t.stopped_on, "epoch ceiling");
  assert.equal(t.still_improving, true);
  assert.equal(t.stop_note, s.stop.note);
});

test("a time budget stops the run between epochs, and the summary says so", async () => {
  const dir = await tempDir();
  const frames = await normalFrames(10, 32, path.join(dir, "frames"));
  const teacherFile = path.join(dir, "teacher.onnx");
  await writeFile(teacherFile, encodeModel(randomTeacher(2, 8)));
  const out = path.join(dir, "budget");
  // 0.001 min = 60 ms: loading alone takes longer, so the run stops after its one guaranteed epoch
  const r = spawnSync(
    process.execPath,
    [
      "dist/src/main.cjs",
      "retrain",
      ...["--frames", frames, "--teacher", teacherFile, "--out", out, "--image-size", "32"],
      ...["--batch-size", "4", "--time-budget", "0.001", "--no-progress"],
    ],
    { encoding: "utf8", timeout: 60_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /, 1 epochs \(time budget: [\d.]+ of 0\.001 min used, and another epoch \([\d.]+ s\) would end past it\), best epoch 1,/,
  );
  const t = (await loadBundle(out)).manifest.training;
  assert.equal(t.stopped_on, "time budget");
  assert.equal(t.time_budget_min, 0.001);
  assert.equal(t.epochs_run, 1);
  // one epoch shows no trend: nothing to say about improving
  assert.equal(t.still_improving, false);
});
