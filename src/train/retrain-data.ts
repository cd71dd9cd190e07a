/** retrain's second stage: the images decoded and split, and what the teacher makes of them, computed once. */
import { performance } from "node:perf_hooks";
import type { Teacher } from "../bundle/teacher.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { loadRgb, type RgbImage, rgbToChw } from "../data/images.js";
import { createSession, floatInput } from "../onnx/ort.js";
import { fedSize, marginOf, type Roi, type Size } from "../stpm/geometry.js";
import { modelInputs } from "../stpm/image-scoring.js";
import { l2NormalizeChannels } from "../stpm/normalize.js";
import { splitTrainVal } from "../stpm/split.js";
import { optionError, type RetrainPlan } from "./retrain-options.js";
import { Validator } from "./validation.js";

/** Decodes every image (its ROI) at `size`, skipping (and reporting) the ones that fail, four at a time. */
export async function loadImages(
  files: string[],
  size: Size,
  logger: Logger,
  roi?: Roi,
): Promise<{ images: RgbImage[]; skipped: { file: string; reason: string }[] }> {
  const images: (RgbImage | undefined)[] = new Array(files.length);
  const skipped: { file: string; reason: string }[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const i = next++;
      try {
        images[i] = await loadRgb(files[i]!, size.width, size.height, roi);
      } catch (err) {
        const reason = errorMessage(err);
        logger.warn({ file: files[i] }, `skipping image: ${reason}`);
        skipped.push({ file: files[i]!, reason });
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return { images: images.filter((x): x is RgbImage => x !== undefined), skipped };
}

export interface FeatureCache {
  /** Per level: numImages × C × h × w, L2-normalised over C. */
  levels: Float32Array[];
  perImage: number[];
  dims: number[][];
}

/** The teacher's features of `count` inputs, made batch by batch by `inputs(start, n)`. */
async function cacheTeacherFeatures(
  teacher: Teacher,
  inputs: (start: number, n: number) => Float32Array,
  count: number,
  input: Size,
  threads: number | undefined,
  normalise = true,
): Promise<FeatureCache> {
  const session = await createSession(teacher.bytes, threads ? { intraOpThreads: threads } : {});
  const levels: Float32Array[] = [];
  const perImage: number[] = [];
  const dims: number[][] = [];
  const batch = 8;
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const x = floatInput(inputs(start, n), [n, 3, input.height, input.width]);
    const out = await session.run({ [teacher.graph.inputs[0]!.name]: x });
    teacher.graph.outputs.forEach((o, level) => {
      const t = out[o.name]!;
      const [, c, h, w] = t.dims as number[];
      const per = c! * h! * w!;
      if (start === 0) {
        levels.push(new Float32Array(count * per));
        perImage.push(per);
        dims.push([c!, h!, w!]);
      }
      const raw = t.data as Float32Array;
      // normalised in place, so on a copy; raw features are copied once, by the set below
      const data = normalise ? l2NormalizeChannels(raw.slice(), n, c!, h! * w!) : raw;
      levels[level]!.set(data, start * per);
    });
  }
  await session.release();
  return { levels, perImage, dims };
}

/** What training reads: the split images, the model inputs, the teacher's features and the per-epoch validator. */
export interface TrainingData {
  train: RgbImage[];
  val: RgbImage[];
  skipped: { file: string; reason: string }[];
  /** What the student learns: whole images, or every tile of every training image. */
  samples: Uint8Array[];
  /**
   * The normalised model inputs of the samples `idx`, made when a step needs them: holding them all as floats would
   * cost 4 bytes per subpixel for the whole run (334 MB for 170 images at 256×640) to save a conversion that takes
   * ~5 ms per batch.
   */
  trainBatch: (idx: number[]) => Float32Array;
  cache: FeatureCache;
  validator: Validator;
  /** Validation image scores from the validator's per-input scores (in tile mode, each image's tiles' maximum). */
  imageScores: (perInput: number[]) => number[];
}

/** Stage 2: decodes the images, splits them, and computes the teacher's features once for the whole run. */
export async function loadTrainingData(plan: RetrainPlan, started: number): Promise<TrainingData> {
  const { opts, teacher, files, geometry, layout } = plan;
  const { logger } = opts;
  // the network is fed each input with its context margin (geometry.ts's contextInput)
  const input = fedSize(geometry);
  const { images, skipped } = await loadImages(files, geometry.capture, logger, opts.roi);
  if (images.length < 2) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `${opts.framesDir}: ${images.length} readable image(s); retrain needs at least 2 (one to train, one to validate)`,
    );
  }
  const { train, val } = splitTrainVal(images, opts.valFraction, opts.seed);
  if (train.length === 0) {
    throw optionError(
      "--val-fraction",
      opts.valFraction,
      `holds out all ${images.length} readable images of ${opts.framesDir}; none is left to train on`,
    );
  }
  logger.info(
    { train: train.length, val: val.length, skipped: skipped.length, convs: layout.convs.length },
    "images loaded",
  );

  const chw = 3 * input.width * input.height;
  const { mean, std } = teacher.normalisation;
  const toInputs = (rgbs: Uint8Array[]): Float32Array => {
    const out = new Float32Array(rgbs.length * chw);
    rgbs.forEach((rgb, i) => {
      rgbToChw(rgb, input.width, input.height, mean, std, out, i);
    });
    return out;
  };
  const samples = modelInputs(
    train.map((img) => img.rgb),
    geometry,
  );
  const trainBatch = (idx: number[]): Float32Array => toInputs(idx.map((i) => samples[i]!));
  const cache = await cacheTeacherFeatures(
    teacher,
    (start, n) => toInputs(samples.slice(start, start + n)),
    samples.length,
    input,
    plan.opts.threads,
  );
  logger.info({ seconds: ((performance.now() - started) / 1000).toFixed(1) }, "teacher features cached");

  // validation inputs and teacher features are fixed: computed once, fed with each epoch's weights. In tile mode
  // the validator scores every tile and an image's score is its tiles' maximum — a close proxy of the stitched
  // map's maximum (it also sees the overlaps' far halves), good enough to pick the epoch; the kept epoch is then
  // rescored through the real tiling and stitching for the threshold.
  const valSamples = modelInputs(
    val.map((v) => v.rgb),
    geometry,
  );
  const tilesPerImage = valSamples.length / val.length;
  const valInputs = toInputs(valSamples);
  const valCache = await cacheTeacherFeatures(
    teacher,
    (start, n) => valInputs.subarray(start * chw, (start + n) * chw),
    valSamples.length,
    input,
    plan.opts.threads,
    false,
  );
  const validator = await Validator.create(
    teacher.graph,
    layout,
    valInputs,
    valCache.levels,
    valSamples.length,
    { ...geometry.input, margin: marginOf(geometry) },
    8,
    plan.opts.threads,
  );
  const imageScores = (perInput: number[]): number[] =>
    val.map((_, i) => Math.max(...perInput.slice(i * tilesPerImage, (i + 1) * tilesPerImage)));
  return { train, val, skipped, samples, trainBatch, cache, validator, imageScores };
}
