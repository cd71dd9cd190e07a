import { EventEmitter } from "node:events";
import type { CameraConfig } from "../config/index.js";
import type { CameraState, Frame, NativeFrame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import { resizeRgb } from "../data/images.js";
import { RestartBackoff } from "./backoff.js";
import {
  type CameraWarning,
  type CameraWarningKind,
  type FrameSource,
  type NativeSpec,
  type RunEnd,
  type SourceFrame,
  sourceSpec,
} from "./frame-source.js";
import { GstSource } from "./gst-source.js";
import { ProcessSource } from "./process-source.js";

export type { CameraState, CameraWarning, CameraWarningKind };

/** What a camera needs beyond its config: the frame size the model takes, and where to log. */
export interface CameraRuntime {
  /** Output frame size (the model's input size). */
  width: number;
  height: number;
  logger: Logger;
  /** First sequence number, so a camera rebuilt by the daemon (e.g. for a new model size) continues its count. */
  firstSeq?: number;
  /** A run that streamed at least this long resets the restart delay to its initial value (default 30 s). */
  resetAfterMs?: number;
  /**
   * Long-side cap of the frames {@link Camera.requestOriginal} delivers (`collection.max_long_side`); without it
   * the camera delivers none.
   */
  originalMaxLongSide?: number;
  /**
   * Keep frames at the ROI's own resolution (records.images.native), the newest within `maxBytes`, for
   * {@link Camera.nativeFrame}. Capture processes only (not STPMD_CAPTURE=in-process).
   */
  native?: NativeSpec;
}

export interface CameraStats {
  frames: number;
  /** The sequence number the next frame will get. */
  nextSeq: number;
  /** Restarts scheduled after any failure (error, end of stream, stall, unparsable pipeline, capture process death). */
  restarts: number;
  /** Free-run stalls detected. */
  stalls: number;
  /**
   * Frames lost to bad input: replay files skipped (empty, not an image, truncated, or the one a replay stalled or
   * failed on), counted each time one is skipped; and frames of unexpected layout.
   */
  badFrames: number;
  /** Pipelines that could not even be built (parse errors, missing elements). */
  startFailures: number;
  /** Pipelines built: 1 for a camera whose restarts replay its pipeline, one per run for dynamic-pad sources. */
  pipelines: number;
  /** captureTs of the last frame, or null before the first. */
  lastFrameTs: number | null;
  /** Frames per second over the last few seconds (0 when nothing arrived recently). */
  fps: number;
  state: CameraState;
}

export type CameraEvents = {
  frame: [frame: Frame];
  state: [state: CameraState];
  warning: [warning: CameraWarning];
};

const DEFAULT_RESET_AFTER_MS = 30_000;
/**
 * Sequence numbers whose native frame the camera can still name to its source: far more than a source keeps (a
 * 48 MiB ring holds 10 frames of 1500×1000), so the source's ring, not this map, decides what is still there. Asked
 * by sequence number, not by the source's own number, because a camera rebuilt for another model size continues the
 * sequence with a new source, which numbers its frames from 1 again.
 */
const NATIVE_REFS_KEPT = 1024;
/** A GStreamer warning or capture-process line that repeats is logged at most this often (with a count). */
const NOTICE_INTERVAL_MS = 60_000;
// biome-ignore lint/suspicious/noControlCharactersInRegex: GStreamer colours its debug output with ANSI escapes
const ANSI_ESCAPES = /\x1b\[[0-9;]*m/g;
const NUMBERS = /0x[0-9a-f]+|\d+(\.\d+)?/gi;

/**
 * Where cameras capture: each in a capture process of its own (the default), or in the daemon's process with
 * `STPMD_CAPTURE=in-process`, kept only to measure one against the other (benchmarks/daemon.ts, camera-restarts.ts):
 * in-process a camera holds two of libuv's four pool threads and a dynamic-pad source leaks a pipeline per restart.
 */
export function captureInProcess(): boolean {
  return process.env.STPMD_CAPTURE === "in-process";
}

/**
 * A camera: supervises its {@link FrameSource} and keeps it alive. When a run ends (pipeline error, end of stream,
 * unparsable description, stall, the capture process died) the camera reports why and starts the next run after an
 * exponential backoff ({@link RestartBackoff}), without ever throwing, so one broken camera never disturbs the
 * others. It numbers the frames (never reset by restarts), keeps the camera's state and counters, and logs the
 * source's warnings, repeated GStreamer notices rate-limited.
 */
export class Camera extends EventEmitter<CameraEvents> {
  readonly id: string;
  readonly width: number;
  readonly height: number;
  private readonly source: FrameSource;
  private readonly backoff: RestartBackoff;
  private readonly log: Logger;
  private readonly notices = new RepeatLimiter(NOTICE_INTERVAL_MS);

  private running = false;
  private currentState: CameraState = "stopped";
  private restartTimer: NodeJS.Timeout | null = null;

  private nextSeq = 0;
  private frames = 0;
  private restarts = 0;
  private stalls = 0;
  private startFailures = 0;
  /** Frames at collection size that could not be resized (the source counts its own bad frames). */
  private badResizes = 0;
  private lastFrameTs: number | null = null;
  private readonly frameRate = new RateMeter();
  /**
   * Frames still being resized from collection size, with the frames captured after them: each is emitted after
   * the one before it, so a camera's frames keep their order.
   */
  private emitQueue: Promise<void> = Promise.resolve();
  private queuedFrames = 0;
  /** The source's number of each recent frame it keeps at native resolution, by sequence number. */
  private readonly nativeRefs = new Map<number, number>();

  /**
   * @param config the camera's slice of the validated config (the schema guarantees its ranges).
   * @throws StpmdError ERR_CONFIG_INVALID for an unusable source or size.
   */
  constructor(config: CameraConfig, runtime: CameraRuntime) {
    super();
    const inProcess = captureInProcess();
    // native frames need a third pool thread per camera (a second appsink): in the daemon's own process two
    // cameras would take libuv's four, so only capture processes keep them
    const spec = sourceSpec(
      config,
      runtime.width,
      runtime.height,
      runtime.originalMaxLongSide,
      inProcess ? undefined : runtime.native,
    );
    this.id = config.id;
    this.width = runtime.width;
    this.height = runtime.height;
    this.backoff = new RestartBackoff(config.restart_backoff, runtime.resetAfterMs ?? DEFAULT_RESET_AFTER_MS);
    this.nextSeq = runtime.firstSeq ?? 0;
    // Tag log lines with the camera id unless the caller's logger already does (pino would repeat the key).
    const bound = runtime.logger.bindings().camera === config.id;
    this.log = bound ? runtime.logger : runtime.logger.child({ camera: config.id });
    this.source = inProcess ? new GstSource(spec) : new ProcessSource(spec);
    this.source.on("frame", (frame) => this.onFrame(frame));
    this.source.on("idle", () => this.setState("idle"));
    this.source.on("warning", (kind, message) => this.warn(kind, message));
    this.source.on("notice", (text) => this.notice(text));
    this.source.on("ended", (end) => this.onEnded(end));
  }

  get state(): CameraState {
    return this.currentState;
  }

  /** Starts the first run. Never throws for pipeline problems: they are logged and retried. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.launch();
  }

  /**
   * Stops the source and all timers. Idempotent. Emits a final `state` "stopped" synchronously; nothing is emitted
   * after stop() returns.
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    if (this.restartTimer !== null) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    this.source.stop();
    this.setState("stopped");
  }

  /**
   * Asks for the next frame at collection size: the cropped frame at its own resolution, its long side capped at
   * `originalMaxLongSide`. It arrives as a frame whose `original` holds it and whose `rgb` is it resized to the
   * capture size (with training's resize, not videoscale's), so the model judges the very image that is kept.
   * False when the camera cannot deliver one (not configured for it, or not playing).
   */
  requestOriginal(): boolean {
    return this.running && this.source.requestOriginal();
  }

  /**
   * Frame `seq` at the ROI's own resolution, while the camera's capture still keeps it (the newest frames, within
   * `native.maxBytes`); null when it does not (any more), or keeps none.
   */
  nativeFrame(seq: number): Promise<NativeFrame | null> {
    const ref = this.nativeRefs.get(seq);
    return ref === undefined ? Promise.resolve(null) : this.source.nativeFrame(ref);
  }

  stats(): CameraStats {
    const counters = this.source.counters();
    return {
      frames: this.frames,
      nextSeq: this.nextSeq,
      restarts: this.restarts,
      stalls: this.stalls,
      badFrames: counters.badFrames + this.badResizes,
      startFailures: this.startFailures,
      pipelines: counters.pipelines,
      lastFrameTs: this.lastFrameTs,
      fps: this.frameRate.rate(),
      state: this.currentState,
    };
  }

  private launch(): void {
    this.setState("starting");
    if (this.running) this.source.start(); // unless a state listener stopped us
  }

  private onEnded(end: RunEnd): void {
    if (!this.running) return;
    if (end.kind === "stalled") this.stalls++;
    if (end.kind === "pipeline_invalid") this.startFailures++;
    this.warn(end.kind, end.message);
    if (!this.running) return; // a warning listener stopped us
    const delayMs = this.backoff.delayAfter(end.streamingSince);
    this.restarts++;
    this.setState(end.kind === "stalled" ? "stalled" : "restarting");
    if (end.kind === "stalled") this.setState("restarting");
    if (!this.running) return; // a state listener stopped us
    this.log.info({ delay_ms: delayMs, restarts: this.restarts }, "camera restart scheduled");
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.running) this.launch();
    }, delayMs);
  }

  private onFrame(source: SourceFrame): void {
    if (!this.running) return;
    const { captureTs } = source;
    this.frames++;
    this.lastFrameTs = captureTs;
    this.frameRate.add(1, captureTs);
    if (this.currentState !== "streaming") this.setState("streaming");
    if (!this.running) return; // a state listener stopped us
    const seq = this.nextSeq++;
    const frame = { cameraId: this.id, seq, captureTs, width: this.width, height: this.height };
    if ("rgb" in source) {
      const { native } = source;
      let kept: Frame = { ...frame, rgb: source.rgb };
      if (native !== undefined) {
        this.rememberNative(seq, native.ref);
        kept = { ...kept, native: { width: native.width, height: native.height } };
      }
      if (this.queuedFrames === 0) this.emit("frame", kept);
      else this.emitInOrder(Promise.resolve(kept));
      return;
    }
    const { original, wanted } = source;
    const [pixels, channels] = "rgba" in original ? [original.rgba, 4 as const] : [original.rgb, 3 as const];
    const resized = resizeRgb(
      pixels,
      original.width,
      original.height,
      this.width,
      this.height,
      channels,
    ).then(
      (rgb): Frame => ({ ...frame, rgb, ...(wanted ? { original } : {}) }),
      (err: unknown) => {
        this.badResizes++;
        this.log.warn({ err }, "dropping a frame at collection size that could not be resized");
        return null;
      },
    );
    this.emitInOrder(resized);
  }

  private rememberNative(seq: number, ref: number): void {
    this.nativeRefs.set(seq, ref);
    if (this.nativeRefs.size > NATIVE_REFS_KEPT) {
      const oldest = this.nativeRefs.keys().next().value;
      if (oldest !== undefined) this.nativeRefs.delete(oldest);
    }
  }

  /** Emits `frame` after every frame queued before it; nothing after stop(). */
  private emitInOrder(frame: Promise<Frame | null>): void {
    this.queuedFrames++;
    this.emitQueue = this.emitQueue
      .then(async () => {
        const f = await frame;
        if (f !== null && this.running) this.emit("frame", f);
      })
      .catch((err: unknown) => this.log.error({ err }, "a frame listener failed"))
      .finally(() => {
        this.queuedFrames--;
      });
  }

  private setState(state: CameraState): void {
    // After stop() only the final "stopped" may be announced.
    if (state === this.currentState || (!this.running && state !== "stopped")) return;
    this.currentState = state;
    this.log.debug({ state }, "camera state");
    this.emit("state", state);
  }

  private warn(kind: CameraWarningKind, message: string): void {
    if (!this.running) return;
    this.log.warn({ kind }, message);
    this.emit("warning", { cameraId: this.id, kind, message });
  }

  /**
   * GStreamer says the same thing again and again (a flaky network camera): one line, then a count. Repeats are
   * told apart by their words only: GST_DEBUG lines start with a clock, a pid and a thread address, and messages
   * carry frame counts and timestamps.
   */
  private notice(text: string): void {
    const line = text.replace(ANSI_ESCAPES, "");
    const admitted = this.notices.admit(line.replace(NUMBERS, "#"));
    if (admitted === undefined) return;
    const fields = admitted.unlogged > 0 ? { repeats_unlogged: admitted.unlogged } : {};
    this.log.warn(fields, line);
  }
}
