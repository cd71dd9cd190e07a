/**
 * When retrain stops: on convergence of the mean validation image score (lower is better), measured as a rate.
 *
 * The rule, epoch by epoch:
 * - `best[e]` is the lowest score of epochs 1…e (the model retrain keeps). Working on the running best, not on
 *   the raw score, makes a single bad epoch (SGD at a constant learning rate spikes now and then: bottle seed 0's
 *   epoch 11 scored 0.070 between 0.042 and 0.038) read as "no progress this epoch", not as a trend reversal.
 * - The *rate* at epoch e is the best score's relative improvement per epoch over the last `patience` epochs,
 *   geometric mean: rate = 1 − (best[e] / best[e − patience])^(1 / patience).
 * - Training stops after epoch e when e ≥ `minEpochs`, a whole window lies behind it (e > patience) and
 *   rate < `minDelta`: "converged". Otherwise it stops at `maxEpochs` (retrain's `--epochs`, the ceiling), or
 *   earlier on retrain's time budget; either one, while the rate is still ≥ minDelta, is reported as stopping a run
 *   that was still improving.
 * `patience` 0 turns early stopping off (every run goes to the ceiling or the budget).
 *
 * Defaults (patience 5, minDelta 5 %/epoch) from the recorded validation curves: on bottle (seeds 0–2,
 * benchmarks/results/bottle-retrain-curves.json) the rule stops at epochs 13, 14, 13 and keeps epochs 12, 12, 13
 * (image AUROC 1.000/0.999/1.000, AUPRO 0.970/0.968/0.967); on the issue's 256×640 strips (0.230 at epoch 7,
 * 0.106 at 12) the rate at epoch 12 is 14 %/epoch, so the run goes on, as 30 epochs measured better there.
 */
export interface EarlyStoppingOptions {
  /** Window, in epochs, over which the improvement rate is measured; 0 = never stop early. */
  patience: number;
  /** Least relative improvement of the best score per epoch (over the window) that counts as still improving. */
  minDelta: number;
  /** Never stop early before this many epochs. */
  minEpochs: number;
  /** The ceiling (retrain's --epochs). */
  maxEpochs: number;
}

/** How the best score moved over the last epochs. */
export interface Trend {
  /** The best score `epochs` epochs ago, and now. */
  from: number;
  to: number;
  epochs: number;
  /** Relative improvement per epoch (geometric mean); 0 when flat. */
  rate: number;
  /** rate ≥ minDelta. */
  improving: boolean;
  /** The best score before this epoch, when this epoch lowered it (the last epoch's own improvement). */
  lastFrom?: number;
}

export interface EpochDecision {
  epoch: number;
  score: number;
  /** Lowest score so far: this epoch's model is the one to keep. */
  best: boolean;
  /** Undefined after the first epoch (no trend yet). */
  trend?: Trend;
  stop: boolean;
  /** What stops training here, and why in words; set only when stop is true. */
  cause?: "converged" | "epoch ceiling";
  reason?: string;
}

/** What ended a run, in the words the manifest and the retrain summary use. */
export type StopCause = "converged" | "epoch ceiling" | "time budget";

export interface StopRecord {
  cause: StopCause;
  /** One line: what stopped the run, with the numbers. */
  reason: string;
  /** True when the ceiling or the budget cut a curve that was still falling by ≥ minDelta per epoch. */
  stillImproving: boolean;
  /** "still improving: 0.118 → 0.106 in the last epoch (…); more epochs would likely help" when stillImproving. */
  note?: string;
}

export class EarlyStopping {
  private readonly bests: number[] = [];
  private epoch = 0;
  bestEpoch = 0;

  constructor(readonly opts: EarlyStoppingOptions) {
    if (!(opts.patience >= 0) || !(opts.minDelta >= 0 && opts.minDelta < 1) || !(opts.maxEpochs >= 1)) {
      throw new RangeError(`invalid early-stopping options ${JSON.stringify(opts)}`);
    }
  }

  /** The rule in words, as the manifest records it. */
  describe(): string {
    const { patience, minDelta, minEpochs, maxEpochs } = this.opts;
    if (patience === 0) return `fixed ${maxEpochs} epochs (early stopping off)`;
    return (
      `stop when the best mean validation score improves by < ${pct(minDelta)} per epoch over the last ` +
      `${patience} epochs (not before epoch ${minEpochs}); at most ${maxEpochs} epochs; keep the lowest-scoring epoch`
    );
  }

  /** Records the score of the next epoch and says whether to stop after it. */
  observe(score: number): EpochDecision {
    const epoch = ++this.epoch;
    const { patience, minDelta, minEpochs, maxEpochs } = this.opts;
    const previous = this.bests.at(-1) ?? Number.POSITIVE_INFINITY;
    const best = score < previous;
    if (best) this.bestEpoch = epoch;
    this.bests.push(Math.min(score, previous));
    const trend = this.trend();
    const decision: EpochDecision = { epoch, score, best, stop: false, ...(trend ? { trend } : {}) };
    const converged =
      patience > 0 && epoch >= minEpochs && epoch > patience && trend !== undefined && trend.rate < minDelta;
    if (converged && epoch < maxEpochs) {
      decision.stop = true;
      decision.cause = "converged";
      decision.reason =
        `converged: the best score improved ${pct(trend.rate)} per epoch over the last ${trend.epochs} epochs ` +
        `(${fmt(trend.from)} → ${fmt(trend.to)}; < ${pct(minDelta)})`;
    } else if (epoch >= maxEpochs) {
      decision.stop = true;
      decision.cause = "epoch ceiling";
      decision.reason = "epoch ceiling";
    }
    return decision;
  }

  /**
   * The best score's trend over the last `patience` epochs (fewer while fewer lie behind; 1 when early stopping is
   * off, so a fixed-length run still says whether it ended while improving); undefined before epoch 2.
   */
  trend(): Trend | undefined {
    const e = this.bests.length;
    if (e < 2) return undefined;
    const epochs = Math.min(Math.max(this.opts.patience, 1), e - 1);
    const to = this.bests[e - 1]!;
    const from = this.bests[e - 1 - epochs]!;
    // the first epoch improves on +∞: a rate from it would be 100 %; from a finite start it is a real rate
    const rate = Number.isFinite(from) && from > 0 ? 1 - (to / from) ** (1 / epochs) : 0;
    const before = this.bests[e - 2]!;
    return {
      from,
      to,
      epochs,
      rate,
      improving: rate >= this.opts.minDelta && rate > 0,
      ...(to < before ? { lastFrom: before } : {}),
    };
  }

  /**
   * What stopped the run, once it has stopped: `cause` is the loop's (the rule's own stop, the ceiling, or the
   * budget); a ceiling or budget stop says whether the curve was still improving, with the numbers.
   */
  stopRecord(cause: StopCause, reason: string): StopRecord {
    const trend = this.trend();
    if (cause === "converged" || !trend?.improving) return { cause, reason, stillImproving: false };
    const moved =
      trend.lastFrom !== undefined
        ? `${fmt(trend.lastFrom)} → ${fmt(trend.to)} in the last epoch`
        : `${fmt(trend.from)} → ${fmt(trend.to)} over the last ${trend.epochs} epochs`;
    const rate = `${pct(trend.rate)} per epoch over the last ${trend.epochs} epoch${trend.epochs === 1 ? "" : "s"}`;
    return {
      cause,
      reason,
      stillImproving: true,
      note: `still improving: ${moved} (${rate}); more epochs would likely help`,
    };
  }
}

function pct(x: number): string {
  return `${Number((x * 100).toPrecision(3))}%`;
}

function fmt(x: number): string {
  return Number(x.toPrecision(3)).toString();
}
