import type { EventEmitter } from "node:events";
import type { CameraConfig } from "../config/index.js";
import type { CameraState, FrameOriginal, NativeFrame } from "../core/frame.js";
import { buildPipelineDescription } from "./pipeline-description.js";

export type { CameraState, NativeFrame };

export type CameraWarningKind =
  | "pipeline_invalid"
  | "pipeline_error"
  | "end_of_stream"
  | "no_sample"
  | "stalled"
  | "bad_frame"
  | "bad_file"
  | "process_exited";

/** A recoverable problem. Emitted as `warning` (never `error`, whose missing listener would kill the process). */
export interface CameraWarning {
  cameraId: string;
  kind: CameraWarningKind;
  message: string;
}

/**
 * What a source needs to capture: the camera's config reduced to plain data (it crosses to the capture process as
 * JSON), with the full pipeline description already built and validated.
 */
export interface SourceSpec {
  id: string;
  /** The user's source followed by stpmd's conversion, scaling and appsink ({@link buildPipelineDescription}). */
  description: string;
  /** Capture size (the model's input size). */
  width: number;
  height: number;
  /** 0: no stall check. */
  stallTimeoutMs: number;
  trigger: CameraConfig["trigger"];
  roi: { x: number; y: number; width: number; height: number } | null;
  /** Long-side cap of the frames requestOriginal delivers, and of native frames; null: none are delivered. */
  originalMaxLongSide: number | null;
  /**
   * Capture every frame also at the ROI's own resolution (its long side capped at `maxLongSide`), and keep the
   * newest of those, up to `maxBytes` of them, for {@link FrameSource.nativeFrame}. Null: none are kept.
   */
  native: NativeSpec | null;
}

/**
 * The spec of a camera: builds its pipeline description (so a bad source or size throws here, synchronously,
 * naming the camera) from its validated config slice.
 * @throws StpmdError ERR_CONFIG_INVALID for an unusable source or size.
 */
export function sourceSpec(
  config: CameraConfig,
  width: number,
  height: number,
  originalMaxLongSide: number | undefined,
  native?: NativeSpec,
): SourceSpec {
  return {
    id: config.id,
    description: buildPipelineDescription(
      config.source,
      width,
      height,
      `camera "${config.id}"`,
      config.roi,
      native?.maxLongSide,
    ),
    width,
    height,
    stallTimeoutMs: config.stall_timeout_s * 1000,
    trigger: config.trigger,
    roi: config.roi ?? null,
    originalMaxLongSide: originalMaxLongSide ?? null,
    native: native ?? null,
  };
}

/** Native frames (records.images.native): the memory they may take, how many, and their long-side cap. */
export interface NativeSpec {
  maxBytes: number;
  /** The most frames whose verdict can still be pending ({@link framesAwaitingVerdict}): no more are kept. */
  maxFrames: number;
  maxLongSide: number;
}

/**
 * The most frames of one camera that can be captured and still wait for their verdict: a full inference queue (all
 * of it this camera's, at worst), the batch being judged, and the batch whose results are being recorded.
 */
export function framesAwaitingVerdict(inference: { queue_size: number; max_batch: number }): number {
  return inference.queue_size + 2 * inference.max_batch;
}

/** A frame as a source captures it, before the camera numbers it. */
export type SourceFrame =
  | {
      captureTs: number;
      /** Packed RGB at the capture size. */
      rgb: Uint8Array;
      /** The source keeps this frame at the ROI's own resolution: its number there (nativeFrame) and size. */
      native?: NativeRef;
    }
  | {
      captureTs: number;
      /** The frame at collection size (see requestOriginal), still to be resized to the capture size. */
      original: FrameOriginal;
      /** It was asked for (the frame or two after the request that arrive before the switch are only resized). */
      wanted: boolean;
    };

/** Where a source keeps a frame at the ROI's own resolution: the number to fetch it by, and its size. */
export interface NativeRef {
  ref: number;
  width: number;
  height: number;
}

/** Why a run ended. The source is idle afterwards, until start() is called again. */
export interface RunEnd {
  kind: CameraWarningKind;
  /** One line, for the log and the warning. */
  message: string;
  /** Time of the run's first frame (null: none came): a run that streamed long enough resets the backoff. */
  streamingSince: number | null;
}

/** Counters a source keeps over all its runs. */
export interface SourceCounters {
  /**
   * Frames lost to bad input: replay files skipped (empty, not an image, truncated, or the one a replay stalled or
   * failed on), counted each time one is skipped; and frames of unexpected layout.
   */
  badFrames: number;
  /** Pipelines built: 1 for a source whose runs replay its pipeline, one per run for dynamic-pad sources. */
  pipelines: number;
}

export type FrameSourceEvents = {
  frame: [frame: SourceFrame];
  /** A hardware-triggered source heard nothing for the stall timeout: waiting for parts, not a fault. */
  idle: [];
  /** A problem that does not end the run (a replay file skipped, frames of unexpected layout). */
  warning: [kind: CameraWarningKind, message: string];
  /** A line GStreamer (or the capture process) wrote, for the log: repeats are expected and rate-limited there. */
  notice: [text: string];
  /** The run ended (error, end of stream, stall, a pipeline that cannot be built, the capture process died). */
  ended: [end: RunEnd];
};

/**
 * One camera's capture, as the camera's supervisor ({@link Camera}) drives it: start() plays one run, which lasts
 * until it fails (`ended`, once) or stop() is called; frames, warnings and idle reports come in between. A source
 * never restarts itself and never throws for pipeline problems: deciding when to try again is the supervisor's.
 * Nothing is emitted after stop() returns.
 */
export interface FrameSource extends EventEmitter<FrameSourceEvents> {
  /** Plays a run. Only called while no run plays (before the first, or after `ended`). */
  start(): void;
  /** Ends the run, if any, and releases the source's resources; start() may be called again later. Idempotent. */
  stop(): void;
  /**
   * Asks for the next frame at collection size, its long side capped at the spec's originalMaxLongSide. False when
   * the source cannot deliver one (no cap configured, or not playing).
   */
  requestOriginal(): boolean;
  /**
   * The frame numbered `ref` ({@link NativeRef}) at the ROI's own resolution, while the source still keeps it (the
   * newest frames, up to the spec's native.maxBytes); null when it no longer does, or never did.
   */
  nativeFrame(ref: number): Promise<NativeFrame | null>;
  counters(): SourceCounters;
}
