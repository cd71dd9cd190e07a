import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import type gst from "gstreamer-superficial";
import type { CameraConfig } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { CameraState, Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import { resizeRgb } from "../data/images.js";
import {
  buildPipelineDescription,
  CAPS_NAME,
  captureCaps,
  findReplay,
  originalCaps,
  packRgbRows,
  SINK_NAME,
} from "./pipeline-description.js";
import { type BadReplayFile, ReplayCursor, type ReplaySegment } from "./replay.js";

// The addon's package.json "main" has no file extension; Node's ESM loader resolves it to the raw .node file and
// refuses to load it, while CommonJS require loads the addon as intended.
const gstreamer = createRequire(import.meta.url)("gstreamer-superficial") as typeof gst;

export type { CameraState };

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
}

export type CameraWarningKind =
  | "pipeline_invalid"
  | "pipeline_error"
  | "end_of_stream"
  | "no_sample"
  | "stalled"
  | "bad_frame"
  | "bad_file"
  | "thread_pool";

/** A recoverable problem. Emitted as `warning` (never `error`, whose missing listener would kill the process). */
export interface CameraWarning {
  cameraId: string;
  kind: CameraWarningKind;
  message: string;
}

export interface CameraStats {
  frames: number;
  /** The sequence number the next frame will get. */
  nextSeq: number;
  /** Restarts scheduled after any failure (error, end of stream, stall, unparsable pipeline). */
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
 * After the appsink reports "no more samples" we wait this long for the bus to say why (EOS or an error text)
 * before restarting with a generic reason. When a pipeline fails to reach PLAYING at all, the addon stops polling
 * the bus after its first message, so the reason may never come.
 */
const NO_SAMPLE_GRACE_MS = 250;
/** After the bus reports end of stream, how long the appsink may take to hand out the frames it still holds. */
const EOS_DRAIN_GRACE_MS = 500;
/**
 * Threads of libuv's pool that one camera keeps busy: the addon's bus poll blocks a pool thread for as long as the
 * pipeline plays, and each appsink pull blocks one until a frame arrives.
 */
export const THREAD_POOL_THREADS_PER_CAMERA = 2;
/** Pool threads left for everything else (fs, dns, zlib, native addons' async work). */
const THREAD_POOL_RESERVE = 4;
/** Below this many free pool threads we warn (libuv's default of 4 is fine for one camera, not for two). */
const THREAD_POOL_MIN_FREE = 2;

/**
 * The UV_THREADPOOL_SIZE a process running `cameraCount` cameras needs so that file I/O, DNS and other addons'
 * async work are not starved by the cameras' blocking GStreamer calls. Set it in the environment before the
 * process starts (or before its first thread-pool use).
 */
export function recommendedThreadPoolSize(cameraCount: number): number {
  return THREAD_POOL_RESERVE + THREAD_POOL_THREADS_PER_CAMERA * cameraCount;
}

function currentThreadPoolSize(): number {
  const configured = Number.parseInt(process.env.UV_THREADPOOL_SIZE ?? "", 10);
  return Number.isInteger(configured) && configured > 0 ? configured : 4; // libuv's default
}

/** Cameras currently started in this process, for the thread-pool warning. */
let startedCameras = 0;

/** A built pipeline. Restarts replay it (NULL → PLAYING) rather than build another: see the class comment. */
interface Pipe {
  pipeline: gst.Pipeline;
  pull: (callback: gst.PullCallback) => void;
  /** The capsfilter before the appsink, switched for a frame at collection size; null if GStreamer lost it. */
  caps: gst.Element | null;
  /** The replay's multifilesrc (named by findReplay), or null when the source is not a replay. */
  replayElement: gst.Element | null;
  /** One bus callback per pipeline: the addon keeps every callback passed to pollBus alive forever. */
  onBus: (message: gst.BusMessage) => void;
  /**
   * Whether the addon's bus poll loop runs for this pipeline. The addon re-polls after each callback unless the
   * pipeline is in NULL by then, and never otherwise stops; a second pollBus while one runs would block another
   * pool thread.
   */
  polling: boolean;
}

/** One play of a pipeline: from PLAYING until it fails or stop() is called. */
interface Run {
  pipe: Pipe;
  /** The pipeline played before this run, so a not-linked error means dynamic pads. */
  replayed: boolean;
  /** The files a replay plays in this run. */
  segment: ReplaySegment | null;
  /** Frames delivered by this run, and when the latest came. */
  frames: number;
  lastFrameAt: number | null;
  /** A pull of this run is queued (it comes back with null once the run's pipeline is stopped). */
  pulling: boolean;
  ended: boolean;
  /** Time of the run's first frame; a run that streamed long enough resets the backoff. */
  streamingSince: number | null;
  silenceTimer: NodeJS.Timeout | null;
  noSampleTimer: NodeJS.Timeout | null;
  warnedBadFrame: boolean;
  /** The bus said end of stream; the run ends once the appsink has handed out the frames it still holds. */
  endOfStream: boolean;
  /** A pull came back empty: the appsink holds no more frames. */
  drained: boolean;
}

/**
 * A GStreamer camera that emits packed RGB frames and keeps itself alive: pipeline errors, end of stream,
 * unparsable descriptions and (free-run) stalls tear the pipeline down and rebuild it after an exponential backoff,
 * without ever throwing, so one broken camera never disturbs the others.
 *
 * A restart replays the camera's pipeline (NULL, then PLAYING again) instead of building a new one: the addon never
 * frees a pipeline (its destructor is empty, and pollBus holds a reference to the JS object forever), so each new
 * pipeline stays in memory for good, with the JS objects its bus callback holds. Measured with
 * benchmarks/camera-restarts.ts (200 restarts after 50 of warm-up, median kB per restart): a pipeline built per
 * restart kept 91 kB for a 64×48 test source and 625 kB for 640×480 scaled to 256×256 (the field report: 480 kB);
 * replaying one keeps under 1 kB.
 * gst_parse_launch links dynamic pads (rtspsrc, decodebin, demuxers) only once, so a replayed pipeline with such an
 * element fails with "not-linked" before its first frame. That failure marks the camera as not replayable and from
 * then on each restart builds a fresh pipeline (leaking as above, at a rate bounded by the backoff's maxMs).
 */
export class Camera extends EventEmitter<CameraEvents> {
  readonly id: string;
  readonly width: number;
  readonly height: number;
  private readonly description: string;
  private readonly stallTimeoutMs: number;
  private readonly trigger: CameraConfig["trigger"];
  private readonly backoff: CameraConfig["restart_backoff"];
  private readonly resetAfterMs: number;
  private readonly log: Logger;
  private readonly roi: CameraConfig["roi"];

  private running = false;
  private currentState: CameraState = "stopped";
  private run: Run | null = null;
  /**
   * The latest run, ended or not. A replay waits until that run's last pull has come back: a pull still waiting in
   * the appsink when the pipeline plays again would take the replay's first frame, and drop it as stale.
   */
  private lastRun: Run | null = null;
  private launchAfterPull: (() => void) | null = null;
  /** Where a multifilesrc replay is in its files; null for other sources. */
  private readonly replayCursor: ReplayCursor | null;
  /** Bad replay files already reported, so that a looping replay names each one once. */
  private readonly reportedFiles = new Set<string>();
  /** The pipeline the next run replays; null before the first build and while unusable. */
  private pipe: Pipe | null = null;
  /** False once a replay failed with "not-linked" (dynamic pads): every run then builds its own pipeline. */
  private replayable = true;
  private restartTimer: NodeJS.Timeout | null = null;
  private nextDelayMs: number;

  private nextSeq = 0;
  private frames = 0;
  private restarts = 0;
  private stalls = 0;
  private badFrames = 0;
  private startFailures = 0;
  private pipelines = 0;
  private lastFrameTs: number | null = null;
  /** Time between the last two frames of a run: the pace a replay keeps from one segment to the next. */
  private frameGapMs = 0;
  private readonly frameRate = new RateMeter();
  private readonly originalMaxLongSide: number | undefined;
  /** The collector asked for a frame at collection size and the capsfilter is switched to originalCaps. */
  private originalWanted = false;
  /**
   * Frames still being resized from collection size, with the frames captured after them: each is emitted after
   * the one before it, so a camera's frames keep their order.
   */
  private emitQueue: Promise<void> = Promise.resolve();
  private queuedFrames = 0;

  /**
   * @param config the camera's slice of the validated config (the schema guarantees its ranges).
   * @throws StpmdError ERR_CONFIG_INVALID for an unusable source or size.
   */
  constructor(config: CameraConfig, runtime: CameraRuntime) {
    super();
    const where = `camera "${config.id}"`;
    const description = buildPipelineDescription(
      config.source,
      runtime.width,
      runtime.height,
      where,
      config.roi,
    );
    const replay = findReplay(description);
    this.description = replay?.source ?? description;
    this.replayCursor = replay === null ? null : new ReplayCursor(replay.replay);
    this.id = config.id;
    this.width = runtime.width;
    this.height = runtime.height;
    this.stallTimeoutMs = config.stall_timeout_s * 1000;
    this.trigger = config.trigger;
    this.roi = config.roi;
    this.backoff = config.restart_backoff;
    this.resetAfterMs = runtime.resetAfterMs ?? DEFAULT_RESET_AFTER_MS;
    this.nextSeq = runtime.firstSeq ?? 0;
    // Tag log lines with the camera id unless the caller's logger already does (pino would repeat the key).
    const bound = runtime.logger.bindings().camera === config.id;
    this.log = bound ? runtime.logger : runtime.logger.child({ camera: config.id });
    this.nextDelayMs = config.restart_backoff.initial_ms;
    this.originalMaxLongSide = runtime.originalMaxLongSide;
  }

  /** The full pipeline description this camera launches. */
  get pipelineDescription(): string {
    return this.description;
  }

  get state(): CameraState {
    return this.currentState;
  }

  /** Builds and plays the pipeline. Never throws for pipeline problems: they are logged and retried. */
  start(): void {
    if (this.running) return;
    this.running = true;
    startedCameras++;
    this.checkThreadPool();
    this.launch();
  }

  /**
   * Stops the pipeline and all timers. Idempotent. Emits a final `state` "stopped" synchronously; nothing is emitted
   * after stop() returns (late callbacks from GStreamer are recognised by their run and dropped).
   */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    startedCameras--;
    if (this.restartTimer !== null) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
    }
    this.launchAfterPull = null;
    if (this.run !== null) this.endRun(this.run);
    else if (this.pipe?.polling) this.endIdlePoll(this.pipe);
    this.setState("stopped");
  }

  /**
   * Asks for the next frame at collection size: the cropped frame at its own resolution, its long side capped at
   * `originalMaxLongSide`. It arrives as a frame whose `original` holds it and whose `rgb` is it resized to the
   * capture size (with training's resize, not videoscale's), so the model judges the very image that is kept. One
   * frame per request: the capsfilter switches back as soon as it arrives, so the path costs nothing otherwise.
   * False when the camera cannot deliver one (not configured for it, or not playing).
   */
  requestOriginal(): boolean {
    const caps = this.run?.pipe.caps;
    if (this.originalMaxLongSide === undefined || !this.running || !caps) return false;
    if (!this.originalWanted) {
      caps.caps = originalCaps(this.originalMaxLongSide);
      this.originalWanted = true;
    }
    return true;
  }

  stats(): CameraStats {
    const fps = this.frameRate.rate();
    return {
      frames: this.frames,
      nextSeq: this.nextSeq,
      restarts: this.restarts,
      stalls: this.stalls,
      badFrames: this.badFrames,
      startFailures: this.startFailures,
      pipelines: this.pipelines,
      lastFrameTs: this.lastFrameTs,
      fps,
      state: this.currentState,
    };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Pipeline lifecycle
  // ---------------------------------------------------------------------------------------------------------------

  /** Plays the camera's pipeline (built if needed). `continued`: the replay run this one continues, seamlessly. */
  private launch(continued?: Run): void {
    if (continued === undefined) this.setState("starting");
    if (!this.running) return; // a state listener stopped us
    if (this.lastRun?.pulling && this.lastRun.pipe === this.pipe) {
      this.launchAfterPull = () => this.launch(continued);
      return;
    }
    const replayed = this.pipe !== null;
    const pipe = this.pipe ?? this.buildPipe();
    if (pipe === null) return; // reported; a restart is scheduled
    this.pipe = pipe;
    const segment = this.planReplay(pipe);
    if (segment === false) return; // reported; a restart is scheduled
    const run: Run = {
      pipe,
      replayed,
      segment,
      frames: 0,
      lastFrameAt: null,
      pulling: true,
      ended: false,
      streamingSince: continued?.streamingSince ?? null,
      silenceTimer: null,
      noSampleTimer: null,
      warnedBadFrame: false,
      endOfStream: false,
      drained: false,
    };
    this.run = run;
    this.lastRun = run;
    if (!pipe.polling) {
      pipe.polling = true;
      pipe.pipeline.pollBus(pipe.onBus);
    }
    pipe.pipeline.play();
    pipe.pull((buf, caps) => this.onSample(run, buf, caps));
    this.armSilenceTimer(run);
  }

  /**
   * Points a replay's multifilesrc at the next good files: the files are checked before each run, because pngdec
   * skips empty and non-image files without a word and stalls for good on a truncated one. Null: not a replay (or
   * its files are missing, which GStreamer reports). False: nothing left to play; reported, restart scheduled.
   */
  private planReplay(pipe: Pipe): ReplaySegment | null | false {
    const cursor = this.replayCursor;
    const element = pipe.replayElement;
    if (cursor === null || element === null) return null;
    cursor.rescan();
    if (!cursor.hasFiles) return null;
    const segment = cursor.nextSegment((bad) => this.skipFile(bad));
    if (segment === "end" || segment === "unusable") {
      const { location } = cursor.settings;
      if (segment === "end")
        this.warn("end_of_stream", `replay ${location} ended (its last files are unusable)`);
      else this.warn("bad_file", `replay ${location}: every file is unusable`);
      this.scheduleRestart("restarting", null);
      return false;
    }
    // The addon sets numbers as floats; GLib converts them to multifilesrc's integer properties. Setting either
    // index sets both (multifilesrc starts, and loops back, at one index).
    element["start-index"] = segment.from;
    element.index = segment.from;
    element["stop-index"] = segment.loop ? cursor.settings.stopIndex : segment.to;
    element.loop = segment.loop;
    return segment;
  }

  /** Counts a skipped replay file, and names it in a warning the first time. */
  private skipFile(bad: BadReplayFile): void {
    this.badFrames++;
    const key = `${bad.file}\n${bad.problem}`;
    if (this.reportedFiles.has(key)) return;
    this.reportedFiles.add(key);
    this.warn("bad_file", `replay file ${bad.file} ${bad.problem}; skipping it`);
  }

  /** A new pipeline, or null (reported, restart scheduled) when GStreamer cannot build it. */
  private buildPipe(): Pipe | null {
    let pipeline: gst.Pipeline;
    try {
      pipeline = new gstreamer.Pipeline(this.description);
    } catch (err) {
      // A description GStreamer cannot build (typo, missing plugin) stays broken until someone fixes the config or
      // installs the plugin, but the daemon must keep serving the other cameras, so retry with backoff like any
      // other failure (the backoff keeps this cheap).
      this.startFailures++;
      this.warn(
        "pipeline_invalid",
        `GStreamer could not build the pipeline "${this.description}": ${errorMessage(err)}`,
      );
      this.scheduleRestart("restarting", null);
      return null;
    }
    this.pipelines++;
    this.originalWanted = false; // a new pipeline starts with the capture caps
    const sink = pipeline.findChild(SINK_NAME);
    if (typeof sink?.pull !== "function") {
      // Cannot happen with our own description (validation rejects a second sink name), but never pull from nothing.
      this.startFailures++;
      this.warn("pipeline_invalid", `pipeline has no appsink named "${SINK_NAME}"`);
      this.scheduleRestart("restarting", null);
      return null;
    }
    const pipe: Pipe = {
      pipeline,
      // Bound: the addon finds its appsink through `this`; an unbound call would crash natively.
      pull: sink.pull.bind(sink),
      caps: pipeline.findChild(CAPS_NAME) ?? null,
      replayElement:
        this.replayCursor === null ? null : (pipeline.findChild(this.replayCursor.settings.element) ?? null),
      onBus: (message) => this.onBusMessage(pipe, message),
      polling: false,
    };
    return pipe;
  }

  /** Tears a run down: stops its pipeline and timers; its late callbacks are ignored from now on. */
  private endRun(run: Run): void {
    run.ended = true;
    if (run.silenceTimer !== null) clearTimeout(run.silenceTimer);
    if (run.noSampleTimer !== null) clearTimeout(run.noSampleTimer);
    run.silenceTimer = null;
    run.noSampleTimer = null;
    const replayed = this.running && this.replayable;
    // A pipeline that will be replayed drops its queued messages as it stops, so the replay does not receive this
    // run's late ones (pngdec's error is followed by the source's "Internal data stream error"); a waiting poll then
    // stays waiting through the backoff and carries on with the replay. One that will not be replayed keeps them:
    // they wake the poll, which finds the pipeline in NULL and ends, freeing its pool thread.
    run.pipe.pipeline["auto-flush-bus"] = replayed;
    // Synchronous: GStreamer is in NULL when this returns, so pending pulls come back with null.
    run.pipe.pipeline.stop();
    if (!replayed && this.pipe === run.pipe && this.running) this.pipe = null;
    if (this.run === run) this.run = null;
  }

  /**
   * Ends a bus poll left waiting on a stopped pipeline's flushed bus (stop() during a backoff): passing through
   * PAUSED posts state changes, which wake it in NULL.
   */
  private endIdlePoll(pipe: Pipe): void {
    pipe.pipeline["auto-flush-bus"] = false;
    pipe.pipeline.pause();
    pipe.pipeline.stop();
  }

  /**
   * Ends a failed run, reports why, and schedules a restart. `failedIndex`: the file a decoder failed on, when the
   * replay's source knows it (see {@link decodingIndex}). At most once per run. A replay resumes after the last
   * frame delivered; with `blameFile` (a stall or a decoder error) it also skips the file it was on until that file
   * changes, and names it.
   */
  private failRun(
    run: Run,
    kind: CameraWarningKind,
    message: string,
    waitState: "restarting" | "stalled",
    blameFile = false,
    failedIndex?: number,
  ): void {
    if (run.ended || run !== this.run) return;
    this.endRun(run);
    let text = message;
    const culprit =
      run.segment === null
        ? null
        : this.replayCursor!.runFailed(run.segment, run.frames, blameFile, failedIndex);
    if (culprit !== null) {
      this.badFrames++;
      text += `; the replay was at ${culprit.file}, and skips it until it changes`;
    }
    this.warn(kind, text);
    this.scheduleRestart(waitState, run);
  }

  /**
   * A replay segment ended as planned: play the next one as part of the same stream (no restart, no state change),
   * one frame interval after the last frame. A new run's first frame is due at once (its running time is 0), so
   * without the wait a synced replay would speed up by one frame per segment.
   */
  private continueReplay(run: Run): void {
    this.endRun(run);
    const waitMs = Math.max(0, this.frameGapMs - (Date.now() - (run.lastFrameAt ?? 0)));
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.running) this.launch(run);
    }, waitMs);
  }

  /** The run's stream ended and its frames are all out: the next replay segment, or a restart. */
  private endOfStream(run: Run): void {
    if (run.ended || run !== this.run) return;
    if (run.segment !== null && this.replayCursor!.segmentEnded(run.segment)) this.continueReplay(run);
    else this.failRun(run, "end_of_stream", "source ended (end of stream)", "restarting");
  }

  private scheduleRestart(waitState: "restarting" | "stalled", failedRun: Run | null): void {
    if (!this.running) return; // a warning listener stopped us
    const backoff = this.backoff;
    if (failedRun?.streamingSince != null && Date.now() - failedRun.streamingSince >= this.resetAfterMs) {
      this.nextDelayMs = backoff.initial_ms;
    }
    const delayMs = this.nextDelayMs;
    this.nextDelayMs = Math.min(delayMs * backoff.factor, backoff.max_ms);
    this.restarts++;
    this.setState(waitState);
    if (waitState === "stalled") this.setState("restarting");
    if (!this.running) return; // a state listener stopped us
    this.log.info({ delay_ms: delayMs, restarts: this.restarts }, "camera restart scheduled");
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.running) this.launch();
    }, delayMs);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // GStreamer callbacks
  // ---------------------------------------------------------------------------------------------------------------

  private onBusMessage(pipe: Pipe, message: gst.BusMessage): void {
    try {
      const run = this.run;
      if (run !== null && run.pipe === pipe && !run.ended) this.onRunMessage(run, message);
    } finally {
      // The addon polls again unless the pipeline is in NULL now, i.e. unless no run plays it.
      pipe.polling = this.run?.pipe === pipe && !this.run.ended;
    }
  }

  private onRunMessage(run: Run, message: gst.BusMessage): void {
    switch (message.type) {
      case "error": {
        const origin = message.name ?? message._src_element_name ?? "pipeline";
        // GStreamer's debug text spans lines; a log line must not.
        const debug = typeof message.debug === "string" ? message.debug.replace(/\s*\n\s*/g, " ") : "";
        const detail = debug === "" ? "" : ` (${debug})`;
        let text = `GStreamer error from ${origin}: ${message.message}${detail}`;
        if (run.replayed && run.frames === 0 && debug.includes("not-linked")) {
          this.replayable = false;
          text +=
            "; the source has elements with dynamic pads, which GStreamer links only once, so from now on each restart builds a new pipeline";
        }
        if (this.roi && run.frames === 0 && debug.includes("not-negotiated")) {
          const { x, y, width, height } = this.roi;
          text += `; check cameras[] (id "${this.id}").roi ${x},${y},${width},${height}: it must lie inside the source's frames`;
        }
        // In a replay, an error from another element, or the source's "streaming stopped, reason error" (pngdec
        // fails a corrupt PNG, libpng: "IDAT: CRC error", by returning an error without a message of its own), is
        // about the file being decoded. The source's own errors (a file it cannot read) and negotiation or linking
        // failures are not.
        const replayElement = this.replayCursor?.settings.element;
        const blame =
          replayElement !== undefined &&
          (!origin.endsWith(`:${replayElement}`) || debug.includes("reason error"));
        this.failRun(
          run,
          "pipeline_error",
          text,
          "restarting",
          blame,
          blame ? decodingIndex(run) : undefined,
        );
        break;
      }
      case "eos":
        // The bus hears of the end when the sink does, which may still hold up to two frames nobody has pulled:
        // stopping now would drop them (seen under load: a replay's second frame lost at the first segment's end).
        // So the run ends when a pull comes back empty, or after a grace period if that never happens.
        run.endOfStream = true;
        if (run.drained) this.endOfStream(run);
        else {
          if (run.noSampleTimer !== null) clearTimeout(run.noSampleTimer);
          run.noSampleTimer = setTimeout(() => {
            run.noSampleTimer = null;
            this.endOfStream(run);
          }, EOS_DRAIN_GRACE_MS);
        }
        break;
      case "warning":
        this.log.warn({ gstreamer: message.debug ?? message._src_element_name }, "GStreamer warning");
        break;
      default:
        break;
    }
  }

  private onSample(run: Run, buf: Buffer | null, caps: gst.SampleCaps): void {
    run.pulling = false;
    if (run.ended && run === this.lastRun && this.launchAfterPull !== null) {
      const launch = this.launchAfterPull;
      this.launchAfterPull = null;
      launch();
    }
    if (run.ended || run !== this.run) return;
    if (buf === null) {
      run.drained = true;
      if (run.endOfStream) {
        this.endOfStream(run);
        return;
      }
      // End of stream, or the pipeline never got going. The bus usually says which within a millisecond or two.
      run.noSampleTimer ??= setTimeout(() => {
        run.noSampleTimer = null;
        // The pipeline never left NULL (no reason came because the addon stopped polling at its first message).
        run.pipe.polling = false;
        this.failRun(
          run,
          "no_sample",
          "no more frames and no reason from GStreamer: the source probably failed to open (e.g. a missing " +
            "device); run with GST_DEBUG=2 to see GStreamer's own error",
          "restarting",
        );
      }, NO_SAMPLE_GRACE_MS);
      return;
    }
    const captureTs = Date.now();
    // Ask for the next sample before handing this one out, so a throwing listener cannot stop the camera.
    run.pulling = true;
    run.pipe.pull((nextBuf, nextCaps) => this.onSample(run, nextBuf, nextCaps));

    if (caps.format === "RGBA") {
      this.onOriginalSample(run, buf, caps, captureTs);
      return;
    }
    const rgb = this.toPackedRgb(run, buf, caps);
    if (rgb === null) return;
    this.recordFrame(run, captureTs);
    if (run.ended) return; // a state listener stopped or restarted us
    const frame: Frame = {
      cameraId: this.id,
      seq: this.nextSeq++,
      captureTs,
      width: this.width,
      height: this.height,
      rgb,
    };
    if (this.queuedFrames === 0) this.emit("frame", frame);
    else this.emitInOrder(Promise.resolve(frame));
  }

  /**
   * A sample at collection size (see requestOriginal): switches the caps back, and emits the frame resized to the
   * capture size, with the full-size image attached when it was asked for (the frame or two more that arrive
   * before the switch takes effect are only resized).
   */
  private onOriginalSample(run: Run, buf: Buffer, caps: gst.SampleCaps, captureTs: number): void {
    const wanted = this.originalWanted;
    if (wanted && run.pipe.caps) run.pipe.caps.caps = captureCaps(this.width, this.height);
    this.originalWanted = false;
    const width = caps.width ?? 0;
    const height = caps.height ?? 0;
    if (buf.byteLength !== width * height * 4 || width === 0) {
      this.rejectFrame(run, new RangeError(`RGBA frame of ${width}×${height} has ${buf.byteLength} bytes`));
      return;
    }
    this.recordFrame(run, captureTs);
    if (run.ended) return;
    const rgba = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    const seq = this.nextSeq++;
    const frame = resizeRgb(rgba, width, height, this.width, this.height, 4).then(
      (rgb): Frame => ({
        cameraId: this.id,
        seq,
        captureTs,
        width: this.width,
        height: this.height,
        rgb,
        ...(wanted ? { original: { width, height, rgba } } : {}),
      }),
      (err: unknown) => {
        this.rejectFrame(run, err);
        return null;
      },
    );
    this.emitInOrder(frame);
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

  private toPackedRgb(run: Run, buf: Buffer, caps: gst.SampleCaps): Uint8Array | null {
    try {
      if (caps.width !== undefined && (caps.width !== this.width || caps.height !== this.height)) {
        throw new RangeError(`caps say ${caps.width}×${caps.height}, expected ${this.width}×${this.height}`);
      }
      return packRgbRows(buf, this.width, this.height);
    } catch (err) {
      this.rejectFrame(run, err);
      return null;
    }
  }

  private rejectFrame(run: Run, err: unknown): void {
    this.badFrames++;
    if (!run.warnedBadFrame) {
      run.warnedBadFrame = true; // once per run: a bad frame usually means all of them are
      this.warn("bad_frame", `dropping frames of unexpected layout: ${errorMessage(err)}`);
    }
  }

  private recordFrame(run: Run, captureTs: number): void {
    this.frames++;
    run.frames++;
    if (run.lastFrameAt !== null) this.frameGapMs = captureTs - run.lastFrameAt;
    run.lastFrameAt = captureTs;
    this.lastFrameTs = captureTs;
    this.frameRate.add(1, captureTs);
    run.streamingSince ??= captureTs;
    if (run.silenceTimer !== null) run.silenceTimer.refresh();
    else this.armSilenceTimer(run);
    if (this.currentState !== "streaming") this.setState("streaming");
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Silence: stall (free run) or idle (hardware trigger)
  // ---------------------------------------------------------------------------------------------------------------

  private armSilenceTimer(run: Run): void {
    const timeoutMs = this.stallTimeoutMs;
    if (timeoutMs <= 0 || run.ended) return;
    run.silenceTimer = setTimeout(() => {
      run.silenceTimer = null;
      this.onSilence(run);
    }, timeoutMs);
  }

  private onSilence(run: Run): void {
    if (run.ended || run !== this.run) return;
    if (this.trigger === "hardware") {
      // An externally triggered camera is legitimately quiet between parts, so silence is never a reason to
      // restart it: report "idle" and go back to "streaming" on the next frame. A trigger that hangs is a line
      // problem (sensor, PLC, wiring), not something rebuilding the pipeline could fix. Real faults still surface
      // as bus errors or end of stream and are restarted as usual.
      this.setState("idle");
      return;
    }
    this.stalls++;
    this.failRun(
      run,
      "stalled",
      `no frame for ${this.stallTimeoutMs} ms while playing; restarting the source`,
      "stalled",
      true,
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------------------------------

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

  private checkThreadPool(): void {
    const needed = recommendedThreadPoolSize(startedCameras);
    const size = currentThreadPoolSize();
    if (size - THREAD_POOL_THREADS_PER_CAMERA * startedCameras < THREAD_POOL_MIN_FREE) {
      this.warn(
        "thread_pool",
        `${startedCameras} camera(s) keep up to ${THREAD_POOL_THREADS_PER_CAMERA * startedCameras} of libuv's ` +
          `${size} pool threads blocked in GStreamer; set UV_THREADPOOL_SIZE=${needed} or more before starting ` +
          "the process, or file I/O and inference may starve",
      );
    }
  }
}

/**
 * The index of the file a replay's decoder failed on: the one multifilesrc read last, as its `index` property is
 * the next one's. Source, decoder and sink share one streaming thread, so the source reads no further file once
 * the decoder fails; the frames delivered are not a safe count there, as a frame still on its way to this thread
 * when the error comes is dropped with the pipeline (seen under load: the good file before the bad one blamed).
 * Undefined when the run has no replay element or the property is not a number.
 */
function decodingIndex(run: Run): number | undefined {
  const next = run.pipe.replayElement?.index;
  return typeof next === "number" && Number.isInteger(next) ? next - 1 : undefined;
}
