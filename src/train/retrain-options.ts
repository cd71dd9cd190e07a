/** retrain's options, their bounds and defaults, and its first stage: checking all of them before any work. */
import { constants } from "node:fs";
import { access, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { MANIFEST_FILE } from "../bundle/bundle.js";
import { loadTeacher, type Teacher } from "../bundle/teacher.js";
import { StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { type NumberRule, numberProblem } from "../core/number-rule.js";
import { listImages, readImageSize } from "../data/images.js";
import type { Graph } from "../onnx/onnx-graph.js";
import {
  describeGeometry,
  fedSize,
  type Geometry,
  inputSizeProblem,
  marginProblem,
  type Roi,
  resizeGeometry,
  roiFieldsProblem,
  type Size,
  tiledGeometry,
} from "../stpm/geometry.js";
import type { PartScoreAggregation } from "../stpm/part-score.js";
import type { EpochDecision } from "./early-stopping.js";
import { type StudentLayout, studentLayout } from "./training-graph.js";

export interface RetrainOptions {
  framesDir: string;
  teacherFile: string;
  outDir: string;
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Model input in resize mode (the whole image is resized to it, aspect kept or not as the user chose). */
  imageSize: Size | number;
  /** Crop every image to this rectangle (source pixels) before anything else. */
  roi?: Roi;
  /** Tile mode: resize by `scale`, cut into `size`-pixel tiles overlapping by `overlap`; the student learns tiles. */
  tile?: { size: number; overlap: number; scale: number };
  /** Context margin in model-input pixels per side (geometry.ts's contextInput); default RETRAIN_DEFAULTS.margin. */
  margin?: number;
  seed: number;
  /** Fraction of the normal images held out for model selection and the threshold. */
  valFraction: number;
  /** threshold = mean + thresholdSigma · std of the validation image scores. */
  thresholdSigma: number;
  /** How a map becomes the image score (src/stpm/part-score.ts); default {@link DEFAULT_PART_SCORE}. */
  partScore?: PartScoreAggregation;
  logger: Logger;
  /** Draw a progress bar on stderr (only when it is a terminal). */
  progress: boolean;
  /**
   * Early stopping (src/train/early-stopping.ts): stop when the best mean validation score improves by less than
   * `minDelta` (relative) per epoch over the last `patience` epochs, never before `minEpochs`; `epochs` stays the
   * ceiling. `patience` 0 trains for exactly `epochs` (or until the time budget).
   */
  patience: number;
  minDelta: number;
  minEpochs: number;
  /**
   * Minutes the whole retrain may take, loading and writing included; no epoch starts that would end past it (at
   * the last epoch's pace). Undefined: no budget, the ceiling and the rule alone end the run.
   */
  timeBudgetMin?: number;
  /**
   * No ONNX Runtime memory arena for the training step: its buffers go back after every step, so the peak is the
   * step's live buffers, not the arena's rounded-up high-water mark (256×640: 0.9 GB less), for ~28 % more CPU
   * per step. For a box whose memory the daemon shares (benchmarks/results/retrain-memory.md).
   */
  lowMemory?: boolean;
  /**
   * ONNX Runtime intra-op threads of every session the retrain runs (teacher features, training step, validation,
   * threshold scoring); default ORT's own (one per core). A retrain job beside the live daemon runs with 1 so that
   * inspection keeps the other cores (docs/candidates.md).
   */
  threads?: number;
  /** Called after every epoch's validation (benchmarks use it to follow test metrics epoch by epoch). */
  onEpoch?: (e: EpochReport) => Promise<void> | void;
}

export interface EpochReport {
  epoch: number;
  loss: number;
  valMeanScore: number;
  decision: EpochDecision;
  /** The deployable student of this epoch (BatchNorm folded). */
  student: () => Graph;
}

/**
 * Batch 8 at lr 0.1 (the paper's batch 32 at lr 0.4, scaled linearly): measured on bottle
 * (benchmarks/results/bottle-retrain-curves.json, seeds 0–2), an epoch's training steps take 15 s at batch 8
 * against 18 s at batch 32 once warm, and 17.5 s against 35 s in the first epoch (the larger batch's 4.3 GiB of
 * intermediates page-fault in slowly); with four times the steps per epoch, batch 8 meets issue #10's
 * targets after 12 epochs on all three seeds where batch 32 needed 15 on seed 0.
 * Convergence, not the ceiling, ends a run (issue #19: 256×640 strips were still falling 10 % per epoch at the old
 * ceiling of 12): the rate rule (patience 5, min-delta 5 %/epoch, see early-stopping.ts) stops bottle's recorded
 * curves at epochs 13, 14, 13 (≈ 17 s/epoch: under 5 min), and the ceiling of 50 only bounds a run that never
 * flattens. No default time budget: a budget makes the model depend on the machine's load that day.
 */
export const RETRAIN_DEFAULTS = {
  epochs: 50,
  batchSize: 8,
  lr: 0.1,
  momentum: 0.9,
  weightDecay: 1e-4,
  imageSize: 256,
  tileOverlap: 32,
  scale: 1,
  // No context margin by default: on central crops of bottle and fryum whose object runs to the frame's edges
  // (benchmarks/border.ts, 128², 51 crops, 10 epochs, seed 0) margin 16 took 1.5× the epoch time and did not help:
  // normal maxima within 16 px of the edge 87 → 70 % (bottle) but 79 → 95 % (fryum), border defects caught at the
  // bundle's threshold 24 → 16 of 30 (bottle) and 3 → 2 of 40 (fryum), image AUROC 0.982 → 0.977 and 0.731 → 0.722;
  // with 20 epochs (bottle) still no gain: AUROC 0.992 → 0.989, border defects caught 27 → 23 of 30.
  margin: 0,
  seed: 0,
  valFraction: 0.2,
  thresholdSigma: 3,
  patience: 5,
  minDelta: 0.05,
  minEpochs: 6,
} as const;

/**
 * Every numeric option's bounds, as the CLI offers them (it parses with the same rules). `tile` and `scale` are
 * bounded further by the geometry (a multiple of 16, the scaled image's size).
 */
export const RETRAIN_RULES = {
  epochs: { flag: "--epochs", integer: true, min: 1 },
  batchSize: { flag: "--batch-size", integer: true, min: 2 },
  lr: { flag: "--lr", min: 0 },
  momentum: { flag: "--momentum", min: 0 },
  weightDecay: { flag: "--weight-decay", min: 0 },
  seed: { flag: "--seed", integer: true, min: 0 },
  // 1 would hold every image out and leave nothing to train on
  valFraction: { flag: "--val-fraction", min: 0, below: 1 },
  thresholdSigma: { flag: "--threshold-sigma", min: 0 },
  patience: { flag: "--patience", integer: true, min: 0 },
  minDelta: { flag: "--min-delta", min: 0, below: 1 },
  minEpochs: { flag: "--min-epochs", integer: true, min: 1 },
  timeBudgetMin: { flag: "--time-budget", min: 0, above: true },
  tile: { flag: "--tile", integer: true, min: 32 },
  tileOverlap: { flag: "--tile-overlap", integer: true, min: 0 },
  scale: { flag: "--scale", min: 0 },
  margin: { flag: "--margin", integer: true, min: 0 },
  threads: { flag: "--threads", integer: true, min: 1 },
} as const satisfies Record<string, NumberRule>;

/** A retrain whose options, inputs and output were all found usable. */
export interface RetrainPlan {
  opts: RetrainOptions;
  teacher: Teacher;
  files: string[];
  geometry: Geometry;
  layout: StudentLayout;
}

/**
 * Stage 1: refuses a bad option, frames folder, teacher or output path with one line naming it, before an image
 * is decoded or a feature computed: a typo must not cost the minutes the teacher's features take.
 */
export async function validateRetrain(opts: RetrainOptions): Promise<RetrainPlan> {
  checkOptionValues(opts);
  const teacher = await loadTeacher(opts.teacherFile);
  if (teacher.normalisation.source === "imagenet-default") {
    opts.logger.warn(
      { teacher: opts.teacherFile },
      "teacher metadata names no input_mean/input_std; using ImageNet's",
    );
  }
  const files = await listImages(opts.framesDir, "frames folder");
  await checkOutDir(opts);
  const geometry = await retrainGeometry(opts, files);
  const fed = fedSize(geometry);
  opts.logger.info({ geometry: describeGeometry(geometry) }, "geometry");
  const layout = studentLayout(teacher.graph, fed.height, fed.width);
  return { opts, teacher, files, geometry, layout };
}

export function optionError(flag: string, value: unknown, problem: string): StpmdError {
  return new StpmdError("ERR_OPTION_INVALID", `${flag} ${value}: ${problem}`);
}

/** The options' own values: numbers in their bounds, the image size, the ROI's numbers. */
function checkOptionValues(opts: RetrainOptions): void {
  const check = (rule: NumberRule, value: number): void => {
    const problem = numberProblem(rule, value);
    if (problem) throw optionError(rule.flag, value, problem);
  };
  for (const key of [
    "epochs",
    "batchSize",
    "lr",
    "momentum",
    "weightDecay",
    "seed",
    "valFraction",
    "thresholdSigma",
    "patience",
    "minDelta",
    "minEpochs",
  ] as const) {
    check(RETRAIN_RULES[key], opts[key]);
  }
  if (opts.timeBudgetMin !== undefined) check(RETRAIN_RULES.timeBudgetMin, opts.timeBudgetMin);
  if (opts.threads !== undefined) check(RETRAIN_RULES.threads, opts.threads);
  if (opts.tile) {
    check(RETRAIN_RULES.tile, opts.tile.size);
    check(RETRAIN_RULES.tileOverlap, opts.tile.overlap);
    check(RETRAIN_RULES.scale, opts.tile.scale);
  } else {
    const size = sizeOf(opts.imageSize);
    const problem = inputSizeProblem(size);
    if (problem) throw optionError("--image-size", `${size.width}x${size.height}`, problem);
  }
  if (opts.margin !== undefined) {
    // its own numbers now; whether the area has room for it once the geometry is known (retrainGeometry)
    const problem = marginProblem(opts.margin, {
      width: Number.POSITIVE_INFINITY,
      height: Number.POSITIVE_INFINITY,
    });
    if (problem) throw optionError(RETRAIN_RULES.margin.flag, opts.margin, problem);
  }
  if (opts.roi) {
    const { x, y, width, height } = opts.roi;
    const problem = roiFieldsProblem(opts.roi);
    if (problem) throw optionError("--roi", `${x},${y},${width},${height}`, problem);
  }
}

/**
 * The bundle replaces `--out` whole, old content and all: so it must not be, or hold, the frames folder; an
 * existing `--out` must be a bundle (or an empty folder); and it must be creatable where it is to be.
 */
async function checkOutDir(opts: RetrainOptions): Promise<void> {
  const out = path.resolve(opts.outDir);
  const fail = (problem: string): never => {
    throw optionError("--out", opts.outDir, problem);
  };
  const inside = path.relative(out, path.resolve(opts.framesDir));
  if (!inside.startsWith("..") && !path.isAbsolute(inside)) {
    fail(`holds the frames folder ${opts.framesDir}, which writing the bundle would delete`);
  }
  const existing = await stat(out).catch(() => undefined);
  if (existing) {
    if (!existing.isDirectory()) fail("exists and is not a directory");
    const entries = await readdir(out);
    if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
      fail(
        `exists and is not a model bundle (no ${MANIFEST_FILE}); writing the bundle would delete what it holds`,
      );
    }
  }
  // the nearest folder that exists must let us create the bundle (and its temporary sibling) in it
  let parent = path.dirname(out);
  for (;;) {
    const st = await stat(parent).catch(() => undefined);
    if (st) {
      if (!st.isDirectory()) fail(`${parent} is not a directory`);
      await access(parent, constants.W_OK | constants.X_OK).catch(() => fail(`${parent} is not writable`));
      return;
    }
    parent = path.dirname(parent);
  }
}

/**
 * The geometry of a retrain from its options and the first readable image's size (after the ROI): a resize to
 * `--image-size`, or `--tile` tiles of the image scaled by `--scale`.
 */
async function retrainGeometry(opts: RetrainOptions, files: string[]): Promise<Geometry> {
  let full: Size | undefined;
  for (const file of files) {
    full = await readImageSize(file).catch(() => undefined);
    if (full) break;
  }
  if (!full) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `${opts.framesDir}: none of its ${files.length} image(s) is readable`,
    );
  }
  const roi = opts.roi ?? null;
  if (roi && (roi.x + roi.width > full.width || roi.y + roi.height > full.height)) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `--roi ${roi.x},${roi.y},${roi.width},${roi.height}: lies outside the ${full.width}×${full.height} images of ${opts.framesDir}`,
    );
  }
  const source = roi ? { width: roi.width, height: roi.height } : full;
  const geometry = opts.tile
    ? tiledGeometry(source, roi, opts.tile.size, opts.tile.overlap, opts.tile.scale)
    : resizeGeometry(sizeOf(opts.imageSize), source, roi);
  const margin = opts.margin ?? RETRAIN_DEFAULTS.margin;
  // the context is reflected from the area the network inspects: the resized image, or the scaled image tiles are cut from
  const problem = marginProblem(margin, geometry.mode === "resize" ? geometry.input : geometry.capture);
  if (problem) throw optionError(RETRAIN_RULES.margin.flag, margin, problem);
  return { ...geometry, margin };
}

/** A single N means N×N. */
function sizeOf(size: Size | number): Size {
  return typeof size === "number" ? { width: size, height: size } : size;
}
