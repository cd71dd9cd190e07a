import type { ThresholdRule } from "../config/index.js";
import type { ScoreStats } from "./statistics.js";

/** What a threshold rule needs from a bundle: its own threshold and its validation image scores. */
export interface ThresholdBasis {
  threshold: number;
  /** Sorted ascending. */
  validation_scores: readonly number[];
  score_stats: Pick<ScoreStats, "mean" | "std">;
}

export interface ResolvedThreshold {
  value: number;
  /** A caveat worth a log line (e.g. a false-alarm rate finer than the validation set can resolve). */
  warning?: string;
}

/**
 * The image-score threshold a rule gives for a bundle.
 *
 * `false_alarm_rate: p` is the empirical estimator: the threshold is the ⌈n(1−p)⌉-th smallest of the n stored
 * validation scores, so at most ⌊np⌋ of the validation images score above it — the rate p as the validation set
 * measures it. With n validation images the rate is resolved in steps of 1/n, and a rate below 1/n can only pick
 * the largest validation score, whose true false-alarm rate is known only to be below about 3/n (the "rule of
 * three": 95 % upper bound when none of n normal images is above); the warning says so.
 */
export function resolveThreshold(rule: ThresholdRule | undefined, basis: ThresholdBasis): ResolvedThreshold {
  if (rule === undefined) return { value: basis.threshold };
  if ("value" in rule) return { value: rule.value };
  if ("sigma" in rule) return { value: basis.score_stats.mean + rule.sigma * basis.score_stats.std };
  const scores = basis.validation_scores;
  const n = scores.length;
  if (n === 0) {
    return {
      value: basis.threshold,
      warning: "the bundle stores no validation scores; using its own threshold",
    };
  }
  const p = rule.false_alarm_rate;
  const rank = Math.min(n, Math.max(1, Math.ceil(n * (1 - p))));
  const value = scores[rank - 1]!;
  if (p < 1 / n) {
    return {
      value,
      warning: `false_alarm_rate ${p} is below 1/${n} (the bundle has ${n} validation scores): the threshold is the largest validation score, whose false-alarm rate is only known to be below about ${(3 / n).toPrecision(2)}`,
    };
  }
  return { value };
}
