import type { CameraConfig } from "../config/index.js";

/**
 * The restart policy: the delay before each restart grows by `factor` up to `max_ms`, and goes back to
 * `initial_ms` after a run that streamed for at least `resetAfterMs` (a camera that fails once a day should not wait
 * the maximum).
 */
export class RestartBackoff {
  private nextMs: number;

  constructor(
    private readonly policy: CameraConfig["restart_backoff"],
    private readonly resetAfterMs: number,
  ) {
    this.nextMs = policy.initial_ms;
  }

  /** The delay before the next start, after a run whose first frame came at `streamingSince` (null: none came). */
  delayAfter(streamingSince: number | null, now = Date.now()): number {
    if (streamingSince !== null && now - streamingSince >= this.resetAfterMs)
      this.nextMs = this.policy.initial_ms;
    const delayMs = this.nextMs;
    this.nextMs = Math.min(delayMs * this.policy.factor, this.policy.max_ms);
    return delayMs;
  }
}
