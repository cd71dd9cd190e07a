import assert from "node:assert/strict";
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
  // an improvement must halve the score: after epoch 1, hardly any epoch does
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
  assert.equal(s.stoppedReason, "no improvement > 50% in 2 epochs");
  assert.equal(t.stopped_reason, s.stoppedReason);
  assert.equal(t.epochs_run, s.epochsRun);
  assert.equal(t.epochs, 30);
  const history = t.history as { val_mean_score: number }[];
  assert.equal(history.length, s.epochsRun);
  const lowest = Math.min(...history.map((h) => h.val_mean_score));
  assert.equal(history[s.bestEpoch - 1]!.val_mean_score, lowest);
  assert.equal(t.best_epoch, s.bestEpoch);
  assert.match(t.stopping_rule as string, /not improved by > 50% in 2 epochs/);
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
