/**
 * When retrain stops: patience on the mean validation image score (lower is better).
 *
 * The rule, epoch by epoch:
 * - An epoch *improves* when its score is below the reference by more than `minDelta` (relative):
 *   score < reference · (1 − minDelta). The reference is the score of the last improving epoch (epoch 1 always
 *   improves on +∞). Smaller gains still update the kept (best) model, but they do not reset the patience, so a
 *   curve that only creeps down stops.
 * - Training stops after epoch e when e ≥ `minEpochs` and `patience` epochs have passed since the last improving
 *   epoch (e − last ≥ patience): "no improvement > x% in N epochs".
 * - Otherwise it stops at `maxEpochs` (retrain's `--epochs`, the ceiling): "epoch ceiling".
 * `patience` 0 turns early stopping off (every run goes to the ceiling).
 *
 * The kept model is always the epoch with the lowest score seen, whatever stopped the run.
 */
export interface EarlyStoppingOptions {
  /** Epochs without an improvement > minDelta before stopping; 0 = never stop early. */
  patience: number;
  /** Relative improvement that counts as one, e.g. 0.01 = 1 %. */
  minDelta: number;
  /** Never stop early before this many epochs. */
  minEpochs: number;
  /** The ceiling (retrain's --epochs). */
  maxEpochs: number;
}

export interface EpochDecision {
  epoch: number;
  score: number;
  /** Lowest score so far: this epoch's model is the one to keep. */
  best: boolean;
  /** Improved on the reference by more than minDelta: the patience starts again. */
  improved: boolean;
  /** Epochs since the last improving epoch. */
  sinceImprovement: number;
  stop: boolean;
  /** Why training stops here; set only when stop is true. */
  reason?: string;
}

export class EarlyStopping {
  private reference = Number.POSITIVE_INFINITY;
  private lastImproved = 0;
  private bestScore = Number.POSITIVE_INFINITY;
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
      `stop when the mean validation score has not improved by > ${pct(minDelta)} in ${patience} epochs ` +
      `(not before epoch ${minEpochs}); at most ${maxEpochs} epochs; keep the lowest-scoring epoch`
    );
  }

  /** Records the score of the next epoch and says whether to stop after it. */
  observe(score: number): EpochDecision {
    const epoch = ++this.epoch;
    const { patience, minDelta, minEpochs, maxEpochs } = this.opts;
    const best = score < this.bestScore;
    if (best) {
      this.bestScore = score;
      this.bestEpoch = epoch;
    }
    const improved = score < this.reference * (1 - minDelta);
    if (improved) {
      this.reference = score;
      this.lastImproved = epoch;
    }
    const sinceImprovement = epoch - this.lastImproved;
    const decision: EpochDecision = { epoch, score, best, improved, sinceImprovement, stop: false };
    if (patience > 0 && epoch >= minEpochs && sinceImprovement >= patience && epoch < maxEpochs) {
      decision.stop = true;
      decision.reason = `no improvement > ${pct(minDelta)} in ${patience} epochs`;
    } else if (epoch >= maxEpochs) {
      decision.stop = true;
      decision.reason = "epoch ceiling";
    }
    return decision;
  }
}

function pct(x: number): string {
  return `${Number((x * 100).toPrecision(3))}%`;
}
