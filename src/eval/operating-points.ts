/**
 * What an engineer asks of a test set before trusting a threshold on the line: how many defective parts it
 * catches and how many good ones it rejects, at the threshold the daemon would use and at thresholds set for a
 * given false-alarm rate, each with a bootstrap interval (a few dozen test parts leave wide ones), and per defect
 * type. A part is judged defective when its score is above the threshold, as the daemon judges it.
 */
import { StpmdError } from "../core/errors.js";
import { Random } from "../stpm/random.js";
import { predictedFalseAlarmRate, resolveThreshold } from "../stpm/threshold.js";
import { auroc } from "./metrics.js";

/** A two-sided 95 % percentile bootstrap interval, `[low, high]`. */
export type Interval = [low: number, high: number];

export interface BootstrapOptions {
  /** Resamples drawn (stratified: good and defective parts each resampled with replacement). */
  resamples: number;
  seed: number;
}

export const BOOTSTRAP_DEFAULTS: BootstrapOptions = { resamples: 1000, seed: 0 };

/** The false-alarm rates of the test's good parts that eval sets thresholds for. */
export const FALSE_ALARM_TARGETS = [0.01, 0.001] as const;

/** Parts caught and false alarms at one threshold. */
export interface OperatingPoint {
  /** How the threshold was set, in words. */
  rule: string;
  threshold: number;
  /** Defective test parts scoring above the threshold, of `defective`. */
  caught: number;
  defective: number;
  /** Good test parts scoring above the threshold, of `good`. */
  false_alarms: number;
  good: number;
  caught_rate: number;
  caught_rate_95: Interval;
  false_alarm_rate: number;
  false_alarm_rate_95: Interval;
}

/** The threshold the daemon would use, with the false-alarm rate the bundle's own validation images predict. */
export interface ThresholdPoint extends OperatingPoint {
  /** Share of the bundle's validation scores above the threshold (null when it stores none). */
  predicted_false_alarm_rate: number | null;
  /** Exact one-sided 95 % upper bound on that rate (null when the bundle stores no validation scores). */
  predicted_false_alarm_upper95: number | null;
  validation_images: number;
}

/** A threshold set so that at most ⌊n·target⌋ of the n good test parts score above it. */
export interface FalseAlarmPoint extends OperatingPoint {
  target_false_alarm_rate: number;
  /**
   * False when the target is below 1/n: n good parts cannot show it, and the threshold is simply the highest good
   * score (its true rate is only known to be below about 3/n).
   */
  resolvable: boolean;
  /** The threshold as the bootstrap re-sets it on each resample of the good parts. */
  threshold_95: Interval;
}

/** One defect type (a `test/<type>/` folder) against the good parts. */
export interface DefectTypeRow {
  type: string;
  count: number;
  /** Parts of this type above the judged threshold. */
  caught: number;
  /** Image AUROC of this type's parts against all good parts. */
  image_auroc: number;
  mean_score: number;
}

export interface ScoredPart {
  score: number;
  label: 0 | 1;
  /** "good" or the defect type. */
  kind: string;
}

/** The ⌈n(1−p)⌉-th smallest good score: at most ⌊np⌋ good parts lie above it (the daemon's own rule). */
export function falseAlarmThreshold(sortedGood: readonly number[], rate: number): number {
  return resolveThreshold(
    { false_alarm_rate: rate },
    { threshold: Number.NaN, validation_scores: sortedGood, score_stats: { mean: 0, std: 0 } },
  ).value;
}

/** Parts caught and false alarms at `threshold`, at the bundle's threshold or an override. */
export function thresholdPoint(
  parts: readonly ScoredPart[],
  threshold: number,
  rule: string,
  validationScores: readonly number[],
  opts: BootstrapOptions = BOOTSTRAP_DEFAULTS,
): ThresholdPoint {
  const { good, defective } = split(parts);
  const [caughtRates, falseAlarmRates] = bootstrap(good, defective, opts, (g, d) => [
    shareAbove(d, threshold),
    shareAbove(g, threshold),
  ]);
  const predicted = predictedFalseAlarmRate(threshold, validationScores);
  return {
    ...point(rule, threshold, good, defective, caughtRates!, falseAlarmRates!),
    predicted_false_alarm_rate: predicted.rate,
    predicted_false_alarm_upper95: predicted.upper95,
    validation_images: validationScores.length,
  };
}

/**
 * The threshold that lets `target` of the good test parts through as false alarms, and what it catches. The
 * bootstrap sets the threshold again on every resample of the good parts, so its interval includes the
 * uncertainty of the threshold itself.
 */
export function falseAlarmPoint(
  parts: readonly ScoredPart[],
  target: number,
  opts: BootstrapOptions = BOOTSTRAP_DEFAULTS,
): FalseAlarmPoint {
  const { good, defective } = split(parts);
  const threshold = falseAlarmThreshold(sorted(good), target);
  const [caughtRates, falseAlarmRates, thresholds] = bootstrap(good, defective, opts, (g, d) => {
    const t = falseAlarmThreshold(sorted(g), target);
    return [shareAbove(d, t), shareAbove(g, t), t];
  });
  return {
    ...point(
      `${formatPercent(target)} false alarms of the test's good parts`,
      threshold,
      good,
      defective,
      caughtRates!,
      falseAlarmRates!,
    ),
    target_false_alarm_rate: target,
    resolvable: target >= 1 / good.length,
    threshold_95: percentileInterval(thresholds!),
  };
}

/** Per defect type: count, caught at `threshold`, image AUROC against all good parts, mean score. */
export function defectTypeRows(parts: readonly ScoredPart[], threshold: number): DefectTypeRow[] {
  const { good } = split(parts);
  const types = [...new Set(parts.filter((p) => p.label === 1).map((p) => p.kind))].sort();
  return types.map((type) => {
    const scores = parts.filter((p) => p.label === 1 && p.kind === type).map((p) => p.score);
    return {
      type,
      count: scores.length,
      caught: scores.filter((s) => s > threshold).length,
      image_auroc: auroc([...good, ...scores], [...good.map(() => 0), ...scores.map(() => 1)]),
      mean_score: mean(scores),
    };
  });
}

/** "1 %", "0.1 %": a rate as a person reads it. */
export function formatPercent(rate: number): string {
  return `${Number((rate * 100).toPrecision(3))} %`;
}

function point(
  rule: string,
  threshold: number,
  good: readonly number[],
  defective: readonly number[],
  caughtRates: number[],
  falseAlarmRates: number[],
): OperatingPoint {
  const caught = defective.filter((s) => s > threshold).length;
  const falseAlarms = good.filter((s) => s > threshold).length;
  return {
    rule,
    threshold,
    caught,
    defective: defective.length,
    false_alarms: falseAlarms,
    good: good.length,
    caught_rate: caught / defective.length,
    caught_rate_95: percentileInterval(caughtRates),
    false_alarm_rate: falseAlarms / good.length,
    false_alarm_rate_95: percentileInterval(falseAlarmRates),
  };
}

/**
 * Draws `opts.resamples` stratified resamples (good and defective parts each with replacement, their counts
 * kept) and collects `statistic`'s values, one array per value it returns.
 */
function bootstrap(
  good: readonly number[],
  defective: readonly number[],
  opts: BootstrapOptions,
  statistic: (good: number[], defective: number[]) => number[],
): number[][] {
  if (!Number.isInteger(opts.resamples) || opts.resamples < 1) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `bootstrap resamples must be a whole number ≥ 1, got ${opts.resamples}`,
    );
  }
  const random = new Random(opts.seed);
  const draw = (from: readonly number[]): number[] =>
    Array.from({ length: from.length }, () => from[Math.floor(random.next() * from.length)]!);
  const collected: number[][] = [];
  for (let b = 0; b < opts.resamples; b++) {
    statistic(draw(good), draw(defective)).forEach((value, k) => {
      if (collected[k] === undefined) collected[k] = [];
      collected[k].push(value);
    });
  }
  return collected;
}

/** The 2.5th and 97.5th percentiles of `values`: of B sorted values, those at 0-based ⌊0.025·B⌋ and ⌈0.975·B⌉−1. */
function percentileInterval(values: readonly number[]): Interval {
  const s = sorted(values);
  const n = s.length;
  return [s[Math.floor(0.025 * n)]!, s[Math.max(0, Math.ceil(0.975 * n) - 1)]!];
}

function split(parts: readonly ScoredPart[]): { good: number[]; defective: number[] } {
  const good = parts.filter((p) => p.label === 0).map((p) => p.score);
  const defective = parts.filter((p) => p.label === 1).map((p) => p.score);
  if (good.length === 0 || defective.length === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `judging a threshold needs good and defective parts, got ${good.length} good and ${defective.length} defective`,
    );
  }
  return { good, defective };
}

function shareAbove(scores: readonly number[], threshold: number): number {
  let above = 0;
  for (const s of scores) if (s > threshold) above++;
  return above / scores.length;
}

function sorted(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}
