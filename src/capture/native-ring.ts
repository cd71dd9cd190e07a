import type { NativeFrame } from "../core/frame.js";

/**
 * The newest frames of a camera at the ROI's own resolution, by number, within a memory bound: a frame's verdict
 * comes some tens of milliseconds after it was captured (a queue and a batch later), and only then is it known
 * whether the frame is worth keeping at full size. The oldest frames go first; the newest one is always kept, even
 * when it alone is over the bound, so that a bound smaller than one frame still keeps the frame just captured.
 */
export class NativeRing {
  private readonly frames = new Map<number, NativeFrame>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  add(ref: number, frame: NativeFrame): void {
    this.frames.set(ref, frame);
    this.bytes += frame.rgb.byteLength;
    for (const [oldest, old] of this.frames) {
      if (this.bytes <= this.maxBytes || this.frames.size === 1) break;
      this.frames.delete(oldest);
      this.bytes -= old.rgb.byteLength;
    }
  }

  get(ref: number): NativeFrame | undefined {
    return this.frames.get(ref);
  }

  /** Frames held now (for tests and the capture's memory figure). */
  get size(): number {
    return this.frames.size;
  }
}
