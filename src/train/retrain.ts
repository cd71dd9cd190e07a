import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import {
  type Manifest,
  recoverBundle,
  scoreStats,
  scoresByAggregation,
  writeBundle,
} from "../bundle/bundle.js";
import type { Teacher } from "../bundle/teacher.js";
import { encodeModel, type Graph } from "../onnx/onnx-graph.js";
import { ort } from "../onnx/ort.js";
import { describeGeometry, type Geometry, marginOf } from "../stpm/geometry.js";
import { scoreImages } from "../stpm/image-scoring.js";
import { DEFAULT_PART_SCORE, describePartScore, partScore, partScoreOf } from "../stpm/part-score.js";
import { Scorer } from "../stpm/scorer.js";
import {
  describeFalseAlarms,
  type PredictedFalseAlarms,
  predictedFalseAlarmRate,
} from "../stpm/threshold.js";
import type { StopRecord } from "./early-stopping.js";
import { loadTrainingData, type TrainingData } from "./retrain-data.js";
import { type TrainedStudent, trainStudent } from "./retrain-loop.js";
import { type RetrainOptions, type RetrainPlan, validateRetrain } from "./retrain-options.js";
import { foldedStudentGraph, type StudentState } from "./student.js";
import type { StudentLayout } from "./training-graph.js";

export {
  type EpochReport,
  RETRAIN_DEFAULTS,
  RETRAIN_RULES,
  type RetrainOptions,
  validateRetrain,
} from "./retrain-options.js";

export interface RetrainSummary {
  manifest: Manifest;
  trainImages: number;
  valImages: number;
  skippedFiles: { file: string; reason: string }[];
  bestEpoch: number;
  bestValScore: number;
  wallTimeS: number;
  secondsPerEpoch: number;
  epochsRun: number;
  stoppedReason: string;
  /** What ended the run, and whether the ceiling or budget cut a curve that was still improving. */
  stop: StopRecord;
  /** The bundle's threshold on its own validation normals: how often it would flag a normal part. */
  predictedFalseAlarms: PredictedFalseAlarms;
}

/**
 * Distils a student from normal images and writes a verified model bundle, in four stages: every option, file and
 * size is checked before any work ({@link validateRetrain}), then the images and the teacher's features are
 * loaded, the student trained, and the bundle written.
 */
export async function retrain(opts: RetrainOptions): Promise<RetrainSummary> {
  const started = performance.now();
  // what killed retrains left at --out (a whole bundle each) goes now, not after this one's minutes of training
  await recoverBundle(opts.outDir, opts.logger);
  const plan = await validateRetrain(opts);
  const data = await loadTrainingData(plan, started);
  const trained = await trainStudent(plan, data, started);
  return finalizeBundle(plan, data, trained, started);
}

/** Stage 4: the threshold from the deployable scoring graph itself, and the bundle written atomically. */
async function finalizeBundle(
  plan: RetrainPlan,
  data: TrainingData,
  trained: TrainedStudent,
  started: number,
): Promise<RetrainSummary> {
  const { opts, teacher, layout, geometry } = plan;
  const { input } = geometry;
  const { train, val, skipped, samples } = data;
  const { best, epochsRun, stop, trainSeconds } = trained;
  // rescore the kept epoch with the Scorer: the threshold must hold for the graph the daemon runs; every
  // aggregation's scores are kept, so a camera may score by another one with a threshold from its own scores
  const valMaps = await validationMaps(
    teacher,
    layout,
    best.state,
    val.map((v) => v.rgb),
    geometry,
    opts.threads,
  );
  const { width, height } = geometry.capture;
  const byAggregation = scoresByAggregation((spec) => valMaps.map((m) => partScore(m, width, height, spec)));
  const score = partScoreOf(opts.partScore ?? DEFAULT_PART_SCORE);
  // the per-epoch validator scores by the graph's maximum (it picks the epoch); the drift check compares like
  const keptMax = valMaps.map((m) => partScore(m, width, height, partScoreOf("max")));
  const keptScores = valMaps.map((m) => partScore(m, width, height, score));
  const drift = Math.max(...keptMax.map((v, i) => Math.abs(v - best.scores[i]!) / Math.max(v, 1e-12)));
  opts.logger.debug({ max_relative_difference: drift }, "validation scores: per-epoch validator vs Scorer");

  const studentGraph = foldedStudentGraph(teacher.graph, layout, best.state);
  const sortedScores = [...keptScores].sort((a, b) => a - b);
  const stats = scoreStats(sortedScores);
  const threshold = stats.mean + opts.thresholdSigma * stats.std;
  const predictedFalseAlarms = predictedFalseAlarmRate(threshold, sortedScores);
  opts.logger.info(
    { score: describePartScore(score), threshold, predicted_false_alarms: predictedFalseAlarms },
    `threshold ${threshold.toPrecision(4)} (${describePartScore(score)}): ${describeFalseAlarms(predictedFalseAlarms)}`,
  );
  const studentBytes = encodeModel(studentGraph, "stpm-student");
  const createdAt = new Date();
  const wallTimeS = (performance.now() - started) / 1000;
  const { mean, std } = teacher.normalisation;
  const manifest = await writeBundle(opts.outDir, teacher.bytes, studentBytes, {
    // the time alone repeats when two students are written in the same second (a candidate beside its live model)
    model_version: `${createdAt.toISOString().replace(/[-:]/g, "").slice(0, 15)}Z-${createHash("sha256").update(studentBytes).digest("hex").slice(0, 8)}`,
    created_at: createdAt.toISOString(),
    input: {
      name: "frames",
      height: input.height,
      width: input.width,
      mean,
      std,
      normalisation_source: teacher.normalisation.source,
    },
    geometry,
    outputs: teacher.graph.outputs.map((o) => o.name),
    teacher_source_path: opts.teacherFile,
    threshold,
    threshold_rule: `mean + ${opts.thresholdSigma}·std of validation image scores`,
    score,
    validation_scores: sortedScores,
    validation_scores_by_aggregation: byAggregation,
    score_stats: stats,
    training: {
      frames_dir: opts.framesDir,
      epochs: opts.epochs,
      epochs_run: epochsRun,
      best_epoch: best.epoch,
      stopped_on: stop.cause,
      stopped_reason: stop.reason,
      still_improving: stop.stillImproving,
      ...(stop.note ? { stop_note: stop.note } : {}),
      stopping_rule: trained.stoppingRule,
      patience: opts.patience,
      min_delta: opts.minDelta,
      min_epochs: opts.minEpochs,
      time_budget_min: opts.timeBudgetMin ?? null,
      low_memory: opts.lowMemory === true,
      threads: opts.threads ?? null,
      batch_size: trained.batchSize,
      lr: opts.lr,
      momentum: opts.momentum,
      weight_decay: opts.weightDecay,
      seed: opts.seed,
      val_fraction: opts.valFraction,
      train_images: train.length,
      train_samples: samples.length,
      geometry: describeGeometry(geometry),
      val_images: val.length,
      skipped_files: skipped,
      wall_time_s: Number(wallTimeS.toFixed(1)),
      seconds_per_epoch: Number((trainSeconds / epochsRun).toFixed(2)),
      engine: `onnxruntime-node ${ort.env.versions.common} (CPU, hand-built backward graph)`,
      history: trained.history,
    },
  });
  return {
    manifest,
    trainImages: train.length,
    valImages: val.length,
    skippedFiles: skipped,
    bestEpoch: best.epoch,
    bestValScore: best.score,
    wallTimeS,
    secondsPerEpoch: trainSeconds / epochsRun,
    epochsRun,
    stoppedReason: stop.reason,
    stop,
    predictedFalseAlarms,
  };
}

/** The validation images' anomaly maps under the deployable Scorer (at capture size; stitched in tile mode). */
async function validationMaps(
  teacher: Teacher,
  layout: StudentLayout,
  state: StudentState,
  images: Uint8Array[],
  geometry: Geometry,
  threads: number | undefined,
): Promise<Float32Array[]> {
  const student: Graph = foldedStudentGraph(teacher.graph, layout, state);
  const scorer = await Scorer.create(
    teacher.graph,
    student,
    {
      height: geometry.input.height,
      width: geometry.input.width,
      margin: marginOf(geometry),
      mean: teacher.normalisation.mean,
      std: teacher.normalisation.std,
    },
    threads ? { intraOpThreads: threads } : {},
  );
  try {
    return (await scoreImages((packed, n) => scorer.score(packed, n), images, geometry, 8)).maps;
  } finally {
    await scorer.release();
  }
}
