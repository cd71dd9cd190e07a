/** Statistics of validation image scores, from which thresholds and collection margins are set. */

export interface ScoreStats {
  count: number;
  min: number;
  max: number;
  mean: number;
  std: number;
  /** Quantiles of the validation image scores, keyed "p50", "p90", "p95", "p99". */
  quantiles: Record<string, number>;
}

export function scoreStats(scores: number[]): ScoreStats {
  const sorted = [...scores].sort((a, b) => a - b);
  const n = sorted.length;
  const mean = sorted.reduce((a, b) => a + b, 0) / n;
  const variance = sorted.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, n - 1);
  const q = (p: number): number => quantile(sorted, p);
  return {
    count: n,
    min: sorted[0]!,
    max: sorted[n - 1]!,
    mean,
    std: Math.sqrt(variance),
    quantiles: { p50: q(0.5), p90: q(0.9), p95: q(0.95), p99: q(0.99) },
  };
}

/** Linear-interpolated quantile of sorted values (numpy's default). */
export function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * Math.min(1, Math.max(0, p));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}
