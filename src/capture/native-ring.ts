import type { NativeFrame } from "../core/frame.js";

/**
 * The newest frames of a camera at the ROI's own resolution, by number, within a memory bound and a count: a
 * frame's verdict comes after it waited in the inference queue and its batch was judged, and only then is it known
 * whether the frame is worth keeping at full size. No more frames are kept than can still wait for a verdict
 * (`maxFrames`), so small frames take no more memory than they need. The oldest frames go first; the newest one is
 * always kept, even when it alone is over the bound, so that a bound smaller than one frame still keeps the frame
 * just captured.
 */
export class NativeRing {
  private readonly frames = new Map<number, NativeFrame>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly maxFrames: number,
  ) {}

  add(ref: number, frame: NativeFrame): void {
    this.frames.set(ref, frame);
    this.bytes += frame.rgb.byteLength;
    for (const [oldest, old] of this.frames) {
      const over = this.bytes > this.maxBytes || this.frames.size > this.maxFrames;
      if (!over || this.frames.size === 1) break;
      this.frames.delete(oldest);
      this.bytes -= old.rgb.byteLength;
    }
  }

  /** Lets a frame go that nobody will ask for (its frame was never sent on). */
  delete(ref: number): void {
    const frame = this.frames.get(ref);
    if (frame === undefined) return;
    this.frames.delete(ref);
    this.bytes -= frame.rgb.byteLength;
  }

  get(ref: number): NativeFrame | undefined {
    return this.frames.get(ref);
  }

  /** Frames held now (for tests and the capture's memory figure). */
  get size(): number {
    return this.frames.size;
  }
}
