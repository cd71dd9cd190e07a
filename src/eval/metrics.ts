/**
 * Detection metrics for evaluating a trained model on a labelled test set: image AUROC, pixel AUROC, AUPRO
 * (MVTec AD's per-region overlap) and best F1. A test set has millions of pixels, so every metric sorts once
 * with an O(n) radix argsort instead of a comparator sort.
 */
import { StpmdError } from "../core/errors.js";
import { labelComponents } from "../stpm/regions.js";

/** Points of a ROC curve, like sklearn's roc_curve with drop_intermediate=False. */
export interface RocCurve {
  /** Starts at 0 (threshold +Infinity) and ends at 1. */
  fpr: Float64Array;
  tpr: Float64Array;
  /** `thresholds[k]` is the score t of point k, where a sample counts as anomalous when score >= t. */
  thresholds: Float64Array;
}

export interface F1Max {
  f1: number;
  /** Samples with score >= threshold are called anomalous. */
  threshold: number;
}

/**
 * Area under the ROC curve: the probability that a random anomalous sample scores above a random normal one,
 * ties counting ½ (Mann–Whitney U with mid-ranks). A label is anomalous when it is non-zero.
 */
export function auroc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  checkSameLength(scores, labels, "scores", "labels");
  const positives = countPositives(labels);
  const negatives = labels.length - positives;
  requireBothClasses(positives, negatives, "AUROC");

  const sorted = sortScores(scores);
  const order = sorted.order;
  // Walk up in score order; each anomalous sample beats every normal one strictly below it and ties half of
  // those in its own run. Counts stay integers below 2^53, so the sum is exact.
  let wins = 0;
  let negativesBelow = 0;
  let start = 0;
  while (start < order.length) {
    let end = start;
    let runPositives = 0;
    do {
      if (labels[order[end]] !== 0) runPositives++;
      end++;
    } while (end < order.length && sameScore(sorted, end, start));
    const runNegatives = end - start - runPositives;
    wins += runPositives * negativesBelow + 0.5 * runPositives * runNegatives;
    negativesBelow += runNegatives;
    start = end;
  }
  return wins / (positives * negatives);
}

/** AUROC over all pixels of all images pooled, as sklearn's roc_auc_score on the flattened arrays. */
export function pixelAuroc(maps: Float32Array[], masks: Uint8Array[]): number {
  checkMapsMatchMasks(maps, masks);
  return auroc(
    concat(maps, (n) => new Float32Array(n)),
    concat(masks, (n) => new Uint8Array(n)),
  );
}

/**
 * ROC curve with one point per distinct score (ties move together), preceded by (0, 0) at threshold +Infinity.
 */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number>): RocCurve {
  checkSameLength(scores, labels, "scores", "labels");
  const positives = countPositives(labels);
  const negatives = labels.length - positives;
  requireBothClasses(positives, negatives, "a ROC curve");

  const fpr: number[] = [0];
  const tpr: number[] = [0];
  const thresholds: number[] = [Number.POSITIVE_INFINITY];
  forEachRunDescending(scores, labels, (score, truePositives, falsePositives) => {
    fpr.push(falsePositives / negatives);
    tpr.push(truePositives / positives);
    thresholds.push(score);
  });
  return {
    fpr: Float64Array.from(fpr),
    tpr: Float64Array.from(tpr),
    thresholds: Float64Array.from(thresholds),
  };
}

/**
 * Best F1 over the thresholds "score >= t" at each distinct score, precision and recall as in sklearn's
 * precision_recall_curve. When several thresholds reach the same F1 the lowest wins, as np.argmax picks over
 * sklearn's ascending thresholds.
 */
export function f1Max(scores: ArrayLike<number>, labels: ArrayLike<number>): F1Max {
  checkSameLength(scores, labels, "scores", "labels");
  const positives = countPositives(labels);
  if (positives === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `F1 needs at least one anomalous sample, but all ${labels.length} are normal`,
    );
  }
  let best: F1Max = { f1: 0, threshold: Number.POSITIVE_INFINITY };
  forEachRunDescending(scores, labels, (score, truePositives, falsePositives) => {
    // 2PR/(P+R) simplified to 2TP/(2TP+FP+FN), which needs no special case for TP = 0.
    const f1 = (2 * truePositives) / (truePositives + falsePositives + positives);
    if (f1 >= best.f1) best = { f1, threshold: score };
  });
  return best;
}

/**
 * Normalised area under the per-region-overlap curve up to `fprLimit`, exactly as MVTec AD's reference
 * evaluation code: every 8-connected ground-truth region weighs the same however large it is, the FPR is
 * taken over the normal pixels of all images, and the curve is integrated with the trapezoid rule up to
 * `fprLimit` (interpolating the last point) and divided by `fprLimit`.
 */
export function aupro(
  maps: Float32Array[],
  masks: Uint8Array[],
  width: number,
  height: number,
  fprLimit = 0.3,
): number {
  if (!(fprLimit > 0 && fprLimit <= 1)) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `AUPRO FPR limit ${fprLimit} is invalid; it must be in (0, 1]`,
    );
  }
  checkMapsMatchMasks(maps, masks);
  const pixelsPerImage = width * height;
  for (let k = 0; k < maps.length; k++) {
    if (maps[k].length !== pixelsPerImage) {
      throw new StpmdError(
        "ERR_MASK_SIZE",
        `anomaly map ${k} has ${maps[k].length} pixels but ${width}×${height} needs ${pixelsPerImage}`,
      );
    }
  }

  const { regionOf, regionWeight, regionCount, normalPixels } = groundTruthRegions(masks, width, height);
  if (regionCount === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `AUPRO needs at least one defect region, but all ${masks.length} masks are empty`,
    );
  }
  if (normalPixels === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `AUPRO needs normal pixels, but all ${masks.length} masks are fully defective`,
    );
  }

  const sorted = sortScores(concat(maps, (n) => new Float32Array(n)));
  const order = sorted.order;
  const integral = new TruncatedTrapezoid(fprLimit);
  let falsePositives = 0;
  let overlapSum = 0;
  // Descending score order; one curve point after each run of equal scores, so ties move together.
  for (let end = order.length - 1; end >= 0 && !integral.done; ) {
    const start = end;
    do {
      const region = regionOf[order[end]];
      if (region === 0) falsePositives++;
      else overlapSum += regionWeight[region];
      end--;
    } while (end >= 0 && sameScore(sorted, end, start));
    // Clipped at 1 like the reference, since summing 1/size per pixel may overshoot by a rounding error.
    integral.addPoint(Math.min(falsePositives / normalPixels, 1), Math.min(overlapSum / regionCount, 1));
  }
  integral.addPoint(1, 1);
  return integral.area / fprLimit;
}

/**
 * Indices that sort `values` ascending, stable for equal values (-0 and +0 are equal). O(n) LSD radix sort on
 * order-preserving integer keys: 32-bit keys when every value is exactly a float32, 64-bit keys otherwise.
 * Throws on NaN, which has no place in a ranking.
 */
export function radixArgsort(values: ArrayLike<number>): Uint32Array {
  return sortScores(values).order;
}

/** Ascending sort result; `keyHigh`/`keyLow` are the sorted keys, so equal scores are equal keys side by side. */
interface SortedScores {
  order: Uint32Array;
  keyHigh: Uint32Array;
  /** Low 32 bits of 64-bit keys; null when the scores fit float32 keys. */
  keyLow: Uint32Array | null;
}

const RADIX_BITS = 11;
const RADIX_BUCKETS = 1 << RADIX_BITS;
const DIGIT_MASK = RADIX_BUCKETS - 1;
const SIGN_BIT = 0x80000000;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function sortScores(values: ArrayLike<number>): SortedScores {
  const n = values.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (values instanceof Float32Array || fitsFloat32(values)) {
    const sorted = radixPasses(float32Keys(values), order, null);
    return { order: sorted.order, keyHigh: sorted.keys, keyLow: null };
  }
  const { high, low } = float64Keys(values);
  // LSD: sort by the low word first, then (stably) by the high word, carrying the other word along.
  const byLow = radixPasses(low, order, high);
  const byHigh = radixPasses(byLow.companion!, byLow.order, byLow.keys);
  return { order: byHigh.order, keyHigh: byHigh.keys, keyLow: byHigh.companion };
}

function sameScore(sorted: SortedScores, i: number, j: number): boolean {
  return (
    sorted.keyHigh[i] === sorted.keyHigh[j] &&
    (sorted.keyLow === null || sorted.keyLow[i] === sorted.keyLow[j])
  );
}

function fitsFloat32(values: ArrayLike<number>): boolean {
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (Number.isNaN(value)) throw nanScoreError(i, values.length);
    if (Math.fround(value) !== value) return false;
  }
  return true;
}

/**
 * Unsigned keys whose order is the numeric order of the float32 values: flip all bits of negatives (so larger
 * magnitudes sort lower) and set the sign bit of non-negatives (so they sort above all negatives).
 */
function float32Keys(values: ArrayLike<number>): Uint32Array {
  const floats = values instanceof Float32Array ? values : Float32Array.from(values);
  const bits = new Uint32Array(floats.buffer, floats.byteOffset, floats.length);
  const keys = new Uint32Array(floats.length);
  for (let i = 0; i < bits.length; i++) {
    let word = bits[i];
    if ((word & 0x7fffffff) > 0x7f800000) throw nanScoreError(i, bits.length);
    if (word === SIGN_BIT) word = 0; // -0 ties with +0
    keys[i] = word & SIGN_BIT ? ~word >>> 0 : (word | SIGN_BIT) >>> 0;
  }
  return keys;
}

/** The float64 analogue of float32Keys, as separate high and low 32-bit words. */
function float64Keys(values: ArrayLike<number>): { high: Uint32Array; low: Uint32Array } {
  const n = values.length;
  const doubles = Float64Array.from(values);
  const words = new Uint32Array(doubles.buffer);
  const highOffset = LITTLE_ENDIAN ? 1 : 0;
  const high = new Uint32Array(n);
  const low = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(doubles[i])) throw nanScoreError(i, n);
    let highWord = words[2 * i + highOffset];
    let lowWord = words[2 * i + 1 - highOffset];
    if (highWord === SIGN_BIT && lowWord === 0) highWord = 0; // -0 ties with +0
    if (highWord & SIGN_BIT) {
      highWord = ~highWord >>> 0;
      lowWord = ~lowWord >>> 0;
    } else {
      highWord = (highWord | SIGN_BIT) >>> 0;
    }
    high[i] = highWord;
    low[i] = lowWord;
  }
  return { high, low };
}

/**
 * Stable LSD radix sort of `keys` in 11-bit digits (3 passes for 32 bits), permuting `order` and the optional
 * `companion` along. Consumes its inputs: the results may live in them or in fresh arrays.
 */
function radixPasses(
  keys: Uint32Array,
  order: Uint32Array,
  companion: Uint32Array | null,
): { keys: Uint32Array; order: Uint32Array; companion: Uint32Array | null } {
  const n = keys.length;
  let srcKeys = keys;
  let srcOrder = order;
  let srcCompanion = companion;
  let dstKeys: Uint32Array = new Uint32Array(n);
  let dstOrder: Uint32Array = new Uint32Array(n);
  let dstCompanion: Uint32Array | null = companion === null ? null : new Uint32Array(n);
  const bucketStart = new Uint32Array(RADIX_BUCKETS);

  for (let shift = 0; shift < 32; shift += RADIX_BITS) {
    bucketStart.fill(0);
    for (let i = 0; i < n; i++) bucketStart[(srcKeys[i] >>> shift) & DIGIT_MASK]++;
    // A digit shared by every key would make this pass the identity (common for scores in a narrow range).
    if (n === 0 || bucketStart[(srcKeys[0] >>> shift) & DIGIT_MASK] === n) continue;
    let total = 0;
    for (let bucket = 0; bucket < RADIX_BUCKETS; bucket++) {
      const size = bucketStart[bucket];
      bucketStart[bucket] = total;
      total += size;
    }
    if (srcCompanion === null || dstCompanion === null) {
      for (let i = 0; i < n; i++) {
        const key = srcKeys[i];
        const to = bucketStart[(key >>> shift) & DIGIT_MASK]++;
        dstKeys[to] = key;
        dstOrder[to] = srcOrder[i];
      }
    } else {
      for (let i = 0; i < n; i++) {
        const key = srcKeys[i];
        const to = bucketStart[(key >>> shift) & DIGIT_MASK]++;
        dstKeys[to] = key;
        dstOrder[to] = srcOrder[i];
        dstCompanion[to] = srcCompanion[i];
      }
    }
    [srcKeys, dstKeys] = [dstKeys, srcKeys];
    [srcOrder, dstOrder] = [dstOrder, srcOrder];
    [srcCompanion, dstCompanion] = [dstCompanion, srcCompanion];
  }
  return { keys: srcKeys, order: srcOrder, companion: srcCompanion };
}

/**
 * Calls `visit` once per run of equal scores, highest score first, with the cumulative counts of anomalous
 * (true positive) and normal (false positive) samples scoring >= that score.
 */
function forEachRunDescending(
  scores: ArrayLike<number>,
  labels: ArrayLike<number>,
  visit: (score: number, truePositives: number, falsePositives: number) => void,
): void {
  const sorted = sortScores(scores);
  const order = sorted.order;
  let truePositives = 0;
  let falsePositives = 0;
  for (let end = order.length - 1; end >= 0; ) {
    const start = end;
    do {
      if (labels[order[end]] !== 0) truePositives++;
      else falsePositives++;
      end--;
    } while (end >= 0 && sameScore(sorted, end, start));
    visit(Number(scores[order[start]]), truePositives, falsePositives);
  }
}

/**
 * Trapezoid-rule area under a curve fed point by point with non-decreasing x, cut at `xLimit`. Matches the
 * MVTec reference: every point with x <= xLimit counts, and when xLimit falls strictly between two points
 * the curve is interpolated linearly to xLimit.
 */
class TruncatedTrapezoid {
  area = 0;
  done = false;
  private x = 0;
  private y = 0;

  constructor(private readonly xLimit: number) {}

  /** The curve implicitly starts at (0, 0). */
  addPoint(x: number, y: number): void {
    if (this.done) return;
    if (x <= this.xLimit) {
      this.area += 0.5 * (this.y + y) * (x - this.x);
      this.x = x;
      this.y = y;
      return;
    }
    if (this.x < this.xLimit) {
      const yAtLimit = this.y + ((y - this.y) * (this.xLimit - this.x)) / (x - this.x);
      this.area += 0.5 * (this.y + yAtLimit) * (this.xLimit - this.x);
    }
    this.done = true;
  }
}

interface GroundTruthRegions {
  /** Per pixel of the concatenated masks: 0 for normal, else a global region id 1..regionCount. */
  regionOf: Int32Array;
  /** `regionWeight[id]` = 1 / size of region id: one pixel's share of that region's overlap. */
  regionWeight: Float64Array;
  regionCount: number;
  normalPixels: number;
}

function groundTruthRegions(masks: Uint8Array[], width: number, height: number): GroundTruthRegions {
  const pixelsPerImage = width * height;
  const regionOf = new Int32Array(masks.length * pixelsPerImage);
  const weights: number[] = [0];
  let normalPixels = 0;
  for (let k = 0; k < masks.length; k++) {
    const { labels, sizes } = labelComponents(masks[k], width, height);
    const firstId = weights.length - 1; // global id = firstId + local label
    for (const size of sizes) weights.push(1 / size);
    const base = k * pixelsPerImage;
    for (let p = 0; p < pixelsPerImage; p++) {
      const label = labels[p];
      if (label === 0) normalPixels++;
      else regionOf[base + p] = firstId + label;
    }
  }
  return {
    regionOf,
    regionWeight: Float64Array.from(weights),
    regionCount: weights.length - 1,
    normalPixels,
  };
}

function countPositives(labels: ArrayLike<number>): number {
  let positives = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] !== 0) positives++;
  return positives;
}

function requireBothClasses(positives: number, negatives: number, metric: string): void {
  if (positives === 0 || negatives === 0) {
    const missing = positives === 0 ? "anomalous" : "normal";
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `${metric} needs both normal and anomalous samples, but none of the ${positives + negatives} is ${missing}`,
    );
  }
}

function checkSameLength(a: ArrayLike<number>, b: ArrayLike<number>, aName: string, bName: string): void {
  if (a.length !== b.length) {
    throw new StpmdError("ERR_MASK_SIZE", `${aName} has ${a.length} entries but ${bName} has ${b.length}`);
  }
}

function checkMapsMatchMasks(maps: Float32Array[], masks: Uint8Array[]): void {
  if (maps.length !== masks.length) {
    throw new StpmdError(
      "ERR_MASK_SIZE",
      `${maps.length} anomaly maps but ${masks.length} ground-truth masks`,
    );
  }
  for (let k = 0; k < maps.length; k++) {
    if (maps[k].length !== masks[k].length) {
      throw new StpmdError(
        "ERR_MASK_SIZE",
        `anomaly map ${k} has ${maps[k].length} pixels but its ground-truth mask has ${masks[k].length}`,
      );
    }
  }
}

function nanScoreError(index: number, count: number): StpmdError {
  // No code fits exactly; a NaN score almost always comes from a model whose weights went to NaN.
  return new StpmdError(
    "ERR_TRAINING_DIVERGED",
    `score ${index} of ${count} is NaN; anomaly scores must be numbers (NaN usually means the model diverged)`,
  );
}

/** The arrays of `parts` one after another, in a new array that `create` makes for the total length. */
function concat<T extends Float32Array | Uint8Array>(parts: T[], create: (length: number) => T): T {
  const out = create(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
