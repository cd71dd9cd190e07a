/** retrain's third stage: SGD epochs on the cached features, each validated, until early stopping or the ceiling. */
import { performance } from "node:perf_hooks";
import cliProgress from "cli-progress";
import { StpmdError } from "../core/errors.js";
import { encodeModel } from "../onnx/onnx-graph.js";
import { createSession, floatInput, type ort } from "../onnx/ort.js";
import { fedSize, type Size } from "../stpm/geometry.js";
import { Random } from "../stpm/random.js";
import { EarlyStopping, type StopRecord } from "./early-stopping.js";
import type { FeatureCache, TrainingData } from "./retrain-data.js";
import type { RetrainOptions, RetrainPlan } from "./retrain-options.js";
import {
  cloneStudent,
  foldedStudentGraph,
  initStudent,
  Sgd,
  type StudentState,
  updateRunningStats,
} from "./student.js";
import { buildTrainingGraph, type StudentLayout } from "./training-graph.js";

function feedsFor(
  layout: StudentLayout,
  state: StudentState,
  x: Float32Array,
  feats: Float32Array[],
  cache: FeatureCache,
  n: number,
  input: Size,
): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {
    x: floatInput(x, [n, 3, input.height, input.width]),
    inv_batch: floatInput(new Float32Array([1 / n]), []),
  };
  feats.forEach((f, level) => {
    feeds[`teacher_${level}`] = floatInput(f, [n, ...cache.dims[level]!]);
  });
  layout.convs.forEach((c, k) => {
    feeds[`w_${k}`] = floatInput(state.weights[k]!, c.weightDims);
    feeds[`gamma_${k}`] = floatInput(state.gammas[k]!, [1, c.channels, 1, 1]);
    feeds[`beta_${k}`] = floatInput(state.betas[k]!, [1, c.channels, 1, 1]);
  });
  return feeds;
}

export type EpochHistory = {
  epoch: number;
  loss: number;
  val_mean_score: number;
  seconds: number;
  val_seconds: number;
}[];

/** The outcome of training: the kept epoch and how the run went. */
export interface TrainedStudent {
  best: { epoch: number; score: number; state: StudentState; scores: number[] };
  history: EpochHistory;
  epochsRun: number;
  stop: StopRecord;
  stoppingRule: string;
  batchSize: number;
  trainSeconds: number;
}

/**
 * Stage 3: trains epoch after epoch, validating each, until the early-stopping rule, the ceiling or the time
 * budget (counted from `started`, the start of the whole retrain) ends it.
 */
export async function trainStudent(
  plan: RetrainPlan,
  data: TrainingData,
  started: number,
): Promise<TrainedStudent> {
  const { opts, teacher, layout } = plan;
  const { logger } = opts;
  const { samples, validator } = data;
  let session: ort.InferenceSession | undefined;
  try {
    session = await createSession(encodeModel(buildTrainingGraph(teacher.graph, layout)), {
      memPattern: false,
      memArena: opts.lowMemory !== true,
      ...(opts.threads ? { intraOpThreads: opts.threads } : {}),
    });
    const rng = new Random(opts.seed);
    const state = initStudent(layout, rng);
    const sgd = new Sgd([...state.weights, ...state.gammas, ...state.betas], {
      lr: opts.lr,
      momentum: opts.momentum,
      weightDecay: opts.weightDecay,
    });
    let best = {
      epoch: 0,
      score: Number.POSITIVE_INFINITY,
      state: cloneStudent(state),
      scores: [] as number[],
    };
    const stopping = new EarlyStopping({
      patience: opts.patience,
      minDelta: opts.minDelta,
      minEpochs: opts.minEpochs,
      maxEpochs: opts.epochs,
    });
    let stop: StopRecord | undefined;
    const batchSize = Math.min(opts.batchSize, samples.length);
    const bar = progressBar(opts, Math.ceil(samples.length / batchSize));
    const trainStarted = performance.now();
    const history: EpochHistory = [];
    let epochsRun = 0;

    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const epochStarted = performance.now();
      const order = rng.shuffle(samples.map((_, i) => i));
      const steps = { lossSum: 0, batches: 0, runMs: 0 };
      for (let start = 0; start < order.length; start += batchSize) {
        const idx = order.slice(start, start + batchSize);
        // a single-image batch has no batch statistics to normalise with (PyTorch raises on it too)
        if (idx.length < 2) continue;
        const loss = await trainStep(plan, data, session, state, sgd, idx, epoch, steps);
        bar?.increment(1, { epoch, loss: loss.toFixed(4) });
      }
      const valStarted = performance.now();
      const scores = data.imageScores(await validator.scores(state));
      const valSeconds = (performance.now() - valStarted) / 1000;
      const meanScore = scores.reduce((a, b) => a + b, 0) / scores.length;
      const meanLoss = steps.lossSum / Math.max(1, steps.batches);
      const decision = stopping.observe(meanScore);
      if (decision.best) best = { epoch, score: meanScore, state: cloneStudent(state), scores };
      const seconds = (performance.now() - epochStarted) / 1000;
      history.push({
        epoch,
        loss: meanLoss,
        val_mean_score: meanScore,
        seconds: Number(seconds.toFixed(2)),
        val_seconds: Number(valSeconds.toFixed(2)),
      });
      epochsRun = epoch;
      if (decision.stop) {
        stop = stopping.stopRecord(decision.cause!, decision.reason!);
      } else {
        const budget = budgetStop(opts, started, seconds, valSeconds);
        if (budget) stop = stopping.stopRecord("time budget", budget);
      }
      const line = {
        epoch,
        epochs: opts.epochs,
        loss: meanLoss,
        val_mean_score: meanScore,
        best_epoch: best.epoch,
        ...(decision.trend ? { rate_per_epoch: Number(decision.trend.rate.toFixed(4)) } : {}),
        seconds: Number(seconds.toFixed(2)),
        val_seconds: Number(valSeconds.toFixed(2)),
        // the training step inside ONNX Runtime; the rest of seconds − val_seconds is batch assembly and SGD in JS
        step_seconds: Number((steps.runMs / 1000).toFixed(2)),
        ...(stop ? { stop: stop.reason } : {}),
      };
      if (bar) bar.update({ epoch, loss: meanLoss.toFixed(4) });
      const stopText = stop ? `; stopping: ${stop.reason}, keeping epoch ${best.epoch}` : "";
      logger.info(
        line,
        `epoch ${epoch}/${opts.epochs} loss ${meanLoss.toFixed(5)} val ${meanScore.toExponential(3)} ` +
          `best ${best.epoch}${stopText}`,
      );
      await opts.onEpoch?.({
        epoch,
        loss: meanLoss,
        valMeanScore: meanScore,
        decision,
        student: () => foldedStudentGraph(teacher.graph, layout, state),
      });
      if (stop) break;
    }
    bar?.stop();
    if (!stop) throw new Error("training ended without a stop decision");
    if (stop.note) logger.warn({ stop: stop.cause }, stop.note);
    const trainSeconds = (performance.now() - trainStarted) / 1000;
    const stoppingRule = stopping.describe();
    return { best, history, epochsRun, stop, stoppingRule, batchSize, trainSeconds };
  } finally {
    await validator.release();
    await session?.release();
  }
}

/**
 * The time budget's stop, if another epoch would end past it: the next epoch is assumed to take as long as the
 * last one, and writing the bundle about as long as one validation pass (it rescores the validation images with the
 * deployable graph). Checked between epochs, so at least one epoch always runs: a bundle needs a trained student.
 */
function budgetStop(
  opts: RetrainOptions,
  started: number,
  epochSeconds: number,
  valSeconds: number,
): string | undefined {
  if (opts.timeBudgetMin === undefined) return undefined;
  const usedS = (performance.now() - started) / 1000;
  const budgetS = opts.timeBudgetMin * 60;
  if (usedS + epochSeconds + valSeconds <= budgetS) return undefined;
  return (
    `time budget: ${(usedS / 60).toFixed(2)} of ${opts.timeBudgetMin} min used, and another epoch ` +
    `(${epochSeconds.toFixed(1)} s) would end past it`
  );
}

function progressBar(opts: RetrainOptions, batchesPerEpoch: number): cliProgress.SingleBar | undefined {
  if (!opts.progress || !process.stderr.isTTY) return undefined;
  const bar = new cliProgress.SingleBar(
    {
      format: "retrain [{bar}] {percentage}% | epoch {epoch}/{epochs} | loss {loss} | eta {eta_formatted}",
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(opts.epochs * batchesPerEpoch, 0, { epoch: 1, epochs: opts.epochs, loss: "-" });
  return bar;
}

/** One SGD step on the samples `idx`: forward and backward in ONNX Runtime, the update and running statistics here. */
async function trainStep(
  plan: RetrainPlan,
  data: TrainingData,
  session: ort.InferenceSession,
  state: StudentState,
  sgd: Sgd,
  idx: number[],
  epoch: number,
  steps: { lossSum: number; batches: number; runMs: number },
): Promise<number> {
  const { layout, geometry, opts } = plan;
  const input = fedSize(geometry); // each sample with its context margin
  const { cache } = data;
  const n = idx.length;
  const x = data.trainBatch(idx);
  const feats = cache.levels.map((lvl, l) => {
    const per = cache.perImage[l]!;
    const out = new Float32Array(n * per);
    idx.forEach((src, j) => {
      out.set(lvl.subarray(src * per, (src + 1) * per), j * per);
    });
    return out;
  });
  const runStarted = performance.now();
  const out = await session.run(feedsFor(layout, state, x, feats, cache, n, input));
  steps.runMs += performance.now() - runStarted;
  const loss = (out.loss!.data as Float32Array)[0]!;
  if (!Number.isFinite(loss)) {
    throw new StpmdError(
      "ERR_TRAINING_DIVERGED",
      `training diverged at epoch ${epoch} (loss ${loss}); try a lower --lr than ${opts.lr}`,
    );
  }
  const grad = (name: string): Float32Array => out[name]!.data as Float32Array;
  sgd.step([
    ...layout.convs.map((_, k) => grad(`grad_w_${k}`)),
    ...layout.convs.map((_, k) => grad(`grad_gamma_${k}`)),
    ...layout.convs.map((_, k) => grad(`grad_beta_${k}`)),
  ]);
  const perChannel = layout.convs.map((c) => {
    const [, , h, w] = layout.shapes.get(c.node.outputs[0]!)!;
    return n * h! * w!;
  });
  updateRunningStats(
    state,
    layout.convs.map((_, k) => grad(`batch_mean_${k}`)),
    layout.convs.map((_, k) => grad(`batch_var_${k}`)),
    perChannel,
  );
  steps.lossSum += loss;
  steps.batches += 1;
  return loss;
}
