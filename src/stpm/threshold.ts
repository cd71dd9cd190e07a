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
 * How a threshold will do on normal parts, as the bundle's held-out normal images predict it: `false_alarms` of
 * `normals` validation scores are above it (a frame is flagged when its score is above the threshold), the point
 * estimate `rate` = false_alarms / normals, and `upper95`, the exact one-sided 95 % Clopper–Pearson upper bound on
 * the true rate. With 30 normals and none above, the estimate is 0 and the bound 1 − 0.05^(1/30) ≈ 0.095: thirty
 * clean images cannot show a rate below 9.5 %.
 */
export interface PredictedFalseAlarms {
  false_alarms: number;
  normals: number;
  /** false_alarms / normals; null without validation scores. */
  rate: number | null;
  /** 95 % upper bound on the true rate; null without validation scores. */
  upper95: number | null;
}

/** The confidence of every bound here: one-sided, because a line cares how high the rate may be. */
export const FALSE_ALARM_CONFIDENCE = 0.95;

/** The predicted false-alarm rate of `threshold` from validation scores of normal images (any order). */
export function predictedFalseAlarmRate(
  threshold: number,
  validationScores: readonly number[],
): PredictedFalseAlarms {
  const n = validationScores.length;
  const k = validationScores.filter((s) => !(s <= threshold)).length;
  if (n === 0) return { false_alarms: 0, normals: 0, rate: null, upper95: null };
  return { false_alarms: k, normals: n, rate: k / n, upper95: binomialUpperBound(k, n) };
}

/** "0/30 validation normals above (0 %, ≤ 9.5 % at 95 %)": the prediction in one phrase for logs and summaries. */
export function describeFalseAlarms(p: PredictedFalseAlarms): string {
  if (p.rate === null || p.upper95 === null)
    return "false-alarm rate unknown (the bundle stores no validation scores)";
  const pct = (x: number): string => `${Number((x * 100).toPrecision(2))} %`;
  return `predicted false-alarm rate ${pct(p.rate)} (${p.false_alarms}/${p.normals} validation normals above), at most ${pct(p.upper95)} at 95 %`;
}

/**
 * The exact (Clopper–Pearson) one-sided upper confidence bound on a binomial rate after `k` events in `n` trials:
 * the rate p at which seeing k or fewer has probability 1 − confidence. For k = 0 it is 1 − (1 − confidence)^(1/n)
 * (≈ 3/n, the "rule of three").
 */
export function binomialUpperBound(k: number, n: number, confidence = FALSE_ALARM_CONFIDENCE): number {
  if (k >= n) return 1;
  const alpha = 1 - confidence;
  if (k === 0) return 1 - alpha ** (1 / n);
  // P(X ≤ k) falls as p rises: bisect for P(X ≤ k; n, p) = alpha
  let lo = k / n;
  let hi = 1;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (binomialCdf(k, n, mid) > alpha) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** P(X ≤ k) for X ~ Binomial(n, p), summed in log space so that large n does not underflow. */
function binomialCdf(k: number, n: number, p: number): number {
  if (p <= 0) return 1;
  if (p >= 1) return k >= n ? 1 : 0;
  const logRatio = Math.log(p) - Math.log1p(-p);
  let logTerm = n * Math.log1p(-p);
  let sum = Math.exp(logTerm);
  for (let i = 0; i < k; i++) {
    logTerm += Math.log((n - i) / (i + 1)) + logRatio;
    sum += Math.exp(logTerm);
  }
  return Math.min(1, sum);
}

/**
 * How many held-out normal images a `false_alarm_rate: p` rule needs to be trusted: the smallest n from which on
 * the rule's threshold (⌊np⌋ validation scores above it) has a 95 % upper bound of at most 2p, i.e. the true rate
 * is shown to be no worse than double the rate asked. About 550 for 1 %, 5 500 for 0.1 % (the bound at k events is
 * ≈ (k + 1.6√k + 2)/n, so k must reach ~6). Within a run of n with the same ⌊np⌋ the bound falls as n grows, so
 * it is checked where ⌊np⌋ steps up.
 */
export function normalsNeeded(p: number, confidence = FALSE_ALARM_CONFIDENCE): number {
  const ok = (n: number): boolean => binomialUpperBound(Math.floor(n * p), n, confidence) <= 2 * p;
  let lastFailingStep = -1;
  // step m starts at n = ⌈m/p⌉; the bound at a step's start shrinks towards p as m grows, so 60 steps suffice
  for (let m = 0; m <= 60; m++) {
    const start = Math.max(1, Math.ceil(m / p));
    if (!ok(start)) lastFailingStep = m;
  }
  const from = Math.max(1, Math.ceil(lastFailingStep / p));
  const to = Math.ceil((lastFailingStep + 1) / p) - 1;
  // inside the failing step the bound falls with n: bisect for the first n that passes (or the next step's start)
  let lo = from;
  let hi = to + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (mid <= to && ok(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The image-score threshold a rule gives for a bundle.
 *
 * `false_alarm_rate: p` is the empirical estimator: the threshold is the ⌈n(1−p)⌉-th smallest of the n stored
 * validation scores, so at most ⌊np⌋ of the validation images score above it — the rate p as the validation set
 * measures it. Few normals cannot show a small rate: when the 95 % upper bound of the threshold's rate
 * ({@link predictedFalseAlarmRate}) is above 2p, the warning says so and how many normals p needs
 * ({@link normalsNeeded}).
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
  const predicted = predictedFalseAlarmRate(value, scores);
  if (predicted.upper95! > 2 * p) {
    return {
      value,
      warning: `false_alarm_rate ${p}: the bundle has ${n} validation normals, too few to show it (${describeFalseAlarms(predicted)}); showing ${p} within 2× needs at least ${normalsNeeded(p)} held-out normals`,
    };
  }
  return { value };
}
