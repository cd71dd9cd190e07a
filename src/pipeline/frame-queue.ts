import type { Frame } from "../core/frame.js";

/**
 * The bounded queue between capture and inference. Cameras never wait: when inference falls behind, the oldest
 * frame is dropped (and counted per camera), so memory stays flat and what is inspected stays recent.
 * Batches form like DeepStream's nvstreammux: up to `maxBatch` frames, or whatever has arrived `maxWaitMs` after
 * the first frame of the batch.
 */
export class FrameQueue {
  private readonly frames: Frame[] = [];
  private readonly dropped = new Map<string, number>();
  private waiter: (() => void) | undefined;
  private closed = false;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`queue capacity must be ≥ 1, got ${capacity}`);
  }

  push(frame: Frame): void {
    if (this.closed) return;
    if (this.frames.length >= this.capacity) {
      const old = this.frames.shift()!;
      this.dropped.set(old.cameraId, (this.dropped.get(old.cameraId) ?? 0) + 1);
    }
    this.frames.push(frame);
    this.wake();
  }

  get length(): number {
    return this.frames.length;
  }

  /** Frames dropped so far, per camera. */
  droppedByCamera(): Record<string, number> {
    return Object.fromEntries(this.dropped);
  }

  droppedTotal(): number {
    let n = 0;
    for (const v of this.dropped.values()) n += v;
    return n;
  }

  /** Capture time of the oldest waiting frame, or undefined when empty. */
  oldestCaptureTs(): number | undefined {
    return this.frames[0]?.captureTs;
  }

  /**
   * Resolves with 1..maxBatch frames, or an empty array once the queue is closed and drained.
   */
  async takeBatch(maxBatch: number, maxWaitMs: number): Promise<Frame[]> {
    while (this.frames.length === 0) {
      if (this.closed) return [];
      await this.sleepUntilPush(undefined);
    }
    const deadline = Date.now() + maxWaitMs;
    while (this.frames.length < maxBatch && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await this.sleepUntilPush(left);
    }
    return this.frames.splice(0, maxBatch);
  }

  /** Stops accepting frames; waiting takers get what is left, then empty batches. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private sleepUntilPush(timeoutMs: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => done(), timeoutMs);
      const done = (): void => {
        if (timer) clearTimeout(timer);
        if (this.waiter === done) this.waiter = undefined;
        resolve();
      };
      this.waiter = done;
    });
  }
}
