import type { NativeFrame } from "../core/frame.js";
import type { CameraWarningKind, RunEnd, SourceCounters, SourceFrame, SourceSpec } from "./frame-source.js";
import type { ResumePoint } from "./gst-source.js";

/**
 * The wire between a camera's capture process and the daemon: the child writes length-prefixed messages to a
 * socketpair (its fd 3), the parent writes one JSON command per line back. One stream for frames and events keeps
 * their order (a run's last frames before its end), which two channels (a pipe and Node's IPC) would not.
 *
 * Message: u32 LE body length, u8 type, body. A frame's body: u32 run, f64 captureTs, u32 width, u32 height,
 * u8 layout, u32 ref, then the pixels. An event's body: UTF-8 JSON ({@link ChildEvent}).
 *
 * Layouts: packed RGB at capture size (with a ref other than 0, the capture process keeps the frame at its native
 * size, width × height, under that number); RGBA at collection size, asked for or not; RGB at collection size,
 * asked for (a camera keeping native frames); and a native frame the daemon asked for by its ref (packed RGB,
 * width × height), which is not a new frame and is not acknowledged.
 */
export const MESSAGE_FRAME = 1;
export const MESSAGE_EVENT = 2;
const HEAD_BYTES = 5;
const FRAME_HEAD_BYTES = 25;
const LAYOUT_RGB = 0;
const LAYOUT_RGBA_WANTED = 1;
const LAYOUT_RGBA = 2;
const LAYOUT_NATIVE = 3;
const LAYOUT_RGB_WANTED = 4;

/** What the capture process is started with (its one argument, as JSON). */
export interface CaptureArgs {
  spec: SourceSpec;
  resume: ResumePoint | null;
}

/** Events of the capture process; `run` tells a late event of an earlier run from the current one's. */
export type ChildEvent =
  | { t: "ended"; run: number; end: RunEnd; reusable: boolean; resume: ResumePoint; counters: SourceCounters }
  | { t: "warning"; run: number; kind: CameraWarningKind; message: string }
  | { t: "idle"; run: number }
  | { t: "notice"; text: string }
  | { t: "counters"; counters: SourceCounters }
  /** The native frame `ref` the daemon asked for is no longer kept (or never was). */
  | { t: "native_missing"; ref: number };

/**
 * Commands of the parent: play run `run`, stop it, ask for a frame at collection size, ask for the native frame
 * `ref`, exit; and `ack`, one per frame message received, so the capture process knows how many frames are still
 * on their way.
 */
export type ParentCommand =
  | { t: "start"; run: number }
  | { t: "stop" }
  | { t: "original" }
  | { t: "native"; ref: number }
  | { t: "exit" }
  | { t: "ack" };

/** The `ack` command as written, once per frame. */
export const ACK_LINE = `${JSON.stringify({ t: "ack" } satisfies ParentCommand)}\n`;

/**
 * The header of a frame message; the pixels follow as a second write (a writev on the socket: no copy to join
 * them).
 */
export function frameHeader(run: number, frame: SourceFrame): { head: Buffer; pixels: Uint8Array } {
  if ("original" in frame) {
    const { original, wanted } = frame;
    const { width, height } = original;
    if ("rgb" in original)
      return header(run, frame.captureTs, width, height, LAYOUT_RGB_WANTED, 0, original.rgb);
    const layout = wanted ? LAYOUT_RGBA_WANTED : LAYOUT_RGBA;
    return header(run, frame.captureTs, width, height, layout, 0, original.rgba);
  }
  const { native } = frame;
  return header(
    run,
    frame.captureTs,
    native?.width ?? 0,
    native?.height ?? 0,
    LAYOUT_RGB,
    native?.ref ?? 0,
    frame.rgb,
  );
}

/** The header of a native frame the daemon asked for by its number; the pixels follow as for a frame. */
export function nativeHeader(ref: number, frame: NativeFrame): { head: Buffer; pixels: Uint8Array } {
  return header(0, 0, frame.width, frame.height, LAYOUT_NATIVE, ref, frame.rgb);
}

function header(
  run: number,
  captureTs: number,
  width: number,
  height: number,
  layout: number,
  ref: number,
  pixels: Uint8Array,
): { head: Buffer; pixels: Uint8Array } {
  const head = Buffer.allocUnsafe(HEAD_BYTES + FRAME_HEAD_BYTES);
  head.writeUInt32LE(FRAME_HEAD_BYTES + pixels.byteLength, 0);
  head.writeUInt8(MESSAGE_FRAME, 4);
  head.writeUInt32LE(run, 5);
  head.writeDoubleLE(captureTs, 9);
  head.writeUInt32LE(width, 17);
  head.writeUInt32LE(height, 21);
  head.writeUInt8(layout, 25);
  head.writeUInt32LE(ref, 26);
  return { head, pixels };
}

export function eventMessage(event: ChildEvent): Buffer {
  const json = Buffer.from(JSON.stringify(event));
  const head = Buffer.allocUnsafe(HEAD_BYTES);
  head.writeUInt32LE(json.byteLength, 0);
  head.writeUInt8(MESSAGE_EVENT, 4);
  return Buffer.concat([head, json]);
}

/**
 * A frame message's body: a new frame with its run, or a native frame asked for by its number; the pixels are a
 * view of `body` (no copy).
 */
export function decodeFrame(
  body: Buffer,
): { run: number; frame: SourceFrame } | { ref: number; native: NativeFrame } {
  const run = body.readUInt32LE(0);
  const captureTs = body.readDoubleLE(4);
  const width = body.readUInt32LE(12);
  const height = body.readUInt32LE(16);
  const layout = body.readUInt8(20);
  const ref = body.readUInt32LE(21);
  const pixels = new Uint8Array(
    body.buffer,
    body.byteOffset + FRAME_HEAD_BYTES,
    body.byteLength - FRAME_HEAD_BYTES,
  );
  if (layout === LAYOUT_NATIVE) return { ref, native: { width, height, rgb: pixels } };
  if (layout === LAYOUT_RGB) {
    const native = ref === 0 ? {} : { native: { ref, width, height } };
    return { run, frame: { captureTs, rgb: pixels, ...native } };
  }
  if (layout === LAYOUT_RGB_WANTED) {
    return { run, frame: { captureTs, original: { width, height, rgb: pixels }, wanted: true } };
  }
  const original = { width, height, rgba: pixels };
  return { run, frame: { captureTs, original, wanted: layout === LAYOUT_RGBA_WANTED } };
}

/**
 * Splits the byte stream into messages. A message that arrived in one chunk is handed out as a view of it; one
 * that spans chunks (a frame larger than a socket read, 64 kB) is copied once, chunk by chunk, into a buffer of its
 * own size: the only copy on this side of the socket. The copies are not what a frame costs here: 196 kB frames
 * sent back to back cost this side 60 µs each (four reads and the copy); paced at 100 per second, 0.7–0.9 ms of CPU
 * each on a loaded 2-core VM, against 0.2–0.3 ms for a 100-byte message at the same pace, i.e. the event loop's
 * wake-ups per read, which Node's stream reads (64 kB at most) do not let us batch.
 */
export class MessageReader {
  private readonly head = Buffer.alloc(HEAD_BYTES);
  private headFill = 0;
  private type = 0;
  private body: Buffer | null = null;
  private bodyFill = 0;

  constructor(private readonly onMessage: (type: number, body: Buffer) => void) {}

  feed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.byteLength) {
      if (this.body === null) {
        if (this.headFill === 0 && chunk.byteLength - at >= HEAD_BYTES) {
          const length = chunk.readUInt32LE(at);
          this.type = chunk.readUInt8(at + 4);
          at += HEAD_BYTES;
          if (chunk.byteLength - at >= length) {
            this.onMessage(this.type, chunk.subarray(at, at + length));
            at += length;
            continue;
          }
          this.body = Buffer.allocUnsafe(length);
          this.bodyFill = 0;
        } else {
          const n = Math.min(HEAD_BYTES - this.headFill, chunk.byteLength - at);
          chunk.copy(this.head, this.headFill, at, at + n);
          this.headFill += n;
          at += n;
          if (this.headFill < HEAD_BYTES) return;
          this.headFill = 0;
          this.type = this.head.readUInt8(4);
          this.body = Buffer.allocUnsafe(this.head.readUInt32LE(0));
          this.bodyFill = 0;
        }
      }
      const body = this.body;
      const n = Math.min(body.byteLength - this.bodyFill, chunk.byteLength - at);
      chunk.copy(body, this.bodyFill, at, at + n);
      this.bodyFill += n;
      at += n;
      if (this.bodyFill === body.byteLength) {
        this.body = null;
        this.onMessage(this.type, body);
      }
    }
  }
}
