import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import type gst from "gstreamer-superficial";
import { errorMessage } from "../core/errors.js";
import type { NativeFrame } from "../core/frame.js";
import type {
  CameraWarningKind,
  FrameSource,
  FrameSourceEvents,
  SourceCounters,
  SourceSpec,
} from "./frame-source.js";
import { NativeRing } from "./native-ring.js";
import {
  CAPS_NAME,
  captureCaps,
  findReplay,
  NATIVE_SINK_NAME,
  originalCaps,
  packRgbRows,
  SINK_NAME,
} from "./pipeline-description.js";
import { type BadReplayFile, ReplayCursor, type ReplayPosition, type ReplaySegment } from "./replay.js";

/**
 * The addon, loaded on first use: only a process that plays pipelines (a camera's capture process, or a camera run
 * in-process) pays for GStreamer. CommonJS require: the addon's package.json "main" has no file extension, which
 * Node's ESM loader refuses.
 */
let addon: typeof gst | undefined;
function gstreamer(): typeof gst {
  addon ??= createRequire(import.meta.url)("gstreamer-superficial") as typeof gst;
  return addon;
}

/**
 * After the appsink reports "no more samples" we wait this long for the bus to say why (EOS or an error text)
 * before ending the run with a generic reason. When a pipeline fails to reach PLAYING at all, the addon stops
 * polling the bus after its first message, so the reason may never come.
 */
const NO_SAMPLE_GRACE_MS = 250;
/** After the bus reports end of stream, how long the appsink may take to hand out the frames it still holds. */
const EOS_DRAIN_GRACE_MS = 500;

/** Where a replay stands and which files were already named, so a new capture process carries on from there. */
export interface ResumePoint {
  replay: ReplayPosition | null;
  /** Bad replay files already reported (file and problem), so that a looping replay names each one once. */
  reported: string[];
  /** False once the pipeline proved it cannot be replayed (dynamic pads): a new process need not find out again. */
  replayable: boolean;
}

/** A built pipeline. Restarts replay it (NULL → PLAYING) rather than build another: see the class comment. */
interface Pipe {
  pipeline: gst.Pipeline;
  /** One sample of the model's appsink, with the same frame from the native appsink in native mode. */
  pull: (callback: SampleCallback) => void;
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

/** A sample, and in native mode the same frame at the ROI's own resolution; `buf` null: no more samples. */
type SampleCallback = (buf: Buffer | null, caps: gst.SampleCaps, native?: NativeSample) => void;

interface NativeSample {
  buf: Buffer;
  caps: gst.SampleCaps;
}

/**
 * A pull of both appsinks of a native-mode pipeline, answered once both came back: the two samples are one frame,
 * as neither appsink drops and both get every frame the tee passes (pipeline-description.ts, nativeBranches). When
 * either has no more samples (end of stream, the pipeline stopped), neither has: the answer is null.
 */
function pairedPull(
  pullModel: (callback: gst.PullCallback) => void,
  pullNative: (callback: gst.PullCallback) => void,
): (callback: SampleCallback) => void {
  return (callback) => {
    let model: [Buffer | null, gst.SampleCaps] | undefined;
    let native: [Buffer | null, gst.SampleCaps] | undefined;
    const both = () => {
      if (model === undefined || native === undefined) return;
      const [buf, caps] = model;
      const [nativeBuf, nativeCaps] = native;
      if (buf === null || nativeBuf === null) callback(null, caps);
      else callback(buf, caps, { buf: nativeBuf, caps: nativeCaps });
    };
    pullModel((buf, caps) => {
      model = [buf, caps];
      both();
    });
    pullNative((buf, caps) => {
      native = [buf, caps];
      both();
    });
  };
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
 * A camera's GStreamer pipeline ({@link FrameSource}): plays runs of it and emits packed RGB frames; a run ends on
 * a pipeline error, end of stream, an unparsable description or a (free-run) stall, and the supervisor decides
 * when to start the next. Runs in a camera's capture process (capture-process.ts), or in the daemon's own process
 * for comparison (STPMD_CAPTURE=in-process).
 *
 * A new run replays the pipeline (NULL, then PLAYING again) instead of building a new one: the addon never frees a
 * pipeline (its destructor is empty, and pollBus holds a reference to the JS object forever), so each new pipeline
 * stays in memory for good, with the JS objects its bus callback holds. Measured with benchmarks/camera-restarts.ts
 * (200 restarts after 50 of warm-up, median kB per restart): a pipeline built per restart kept 91 kB for a 64×48
 * test source and 625 kB for 640×480 scaled to 256×256 (the field report: 480 kB); replaying one keeps under 1 kB.
 * gst_parse_launch links dynamic pads (rtspsrc, decodebin, demuxers) only once, so a replayed pipeline with such an
 * element fails with "not-linked" before its first frame. That failure marks the source as not replayable
 * ({@link reusable} false): in-process every later run then builds (and leaks) a fresh pipeline; the capture
 * process instead ends, and its supervisor starts a new process for the next run, so the leak ends with it.
 *
 * Each blocking GStreamer call (the bus poll, each appsink pull) holds a thread of libuv's pool: 2 per camera, 3
 * with native frames (two appsinks). The capture process plays one pipeline, so libuv's default pool of 4 suffices
 * there.
 */
export class GstSource extends EventEmitter<FrameSourceEvents> implements FrameSource {
  readonly id: string;
  readonly width: number;
  readonly height: number;
  private readonly description: string;
  private readonly stallTimeoutMs: number;
  private readonly trigger: SourceSpec["trigger"];
  private readonly roi: SourceSpec["roi"];
  private readonly originalMaxLongSide: number | null;

  /** A run is wanted: from start() until it ends or stop(). */
  private running = false;
  /** A run ended and no stop() came since: a replayable pipeline's bus poll may still wait (see stop()). */
  private betweenRuns = false;
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
  /** The wait before a replay's next segment (see continueReplay). */
  private continueTimer: NodeJS.Timeout | null = null;

  private badFrames = 0;
  private pipelines = 0;
  /** Time between the last two frames of a run: the pace a replay keeps from one segment to the next. */
  private frameGapMs = 0;
  /** The collector asked for a frame at collection size and the capsfilter is switched to originalCaps. */
  private originalWanted = false;
  /** Native mode (spec.native): the newest frames at the ROI's own resolution, by number. */
  private readonly nativeRing: NativeRing | null;
  private nextRef = 1;

  /** @param resume where an earlier capture process of this camera left its replay. */
  constructor(spec: SourceSpec, resume?: ResumePoint) {
    super();
    const replay = findReplay(spec.description);
    this.description = replay?.source ?? spec.description;
    this.replayCursor =
      replay === null ? null : new ReplayCursor(replay.replay, resume?.replay ?? undefined, spec.roi);
    for (const key of resume?.reported ?? []) this.reportedFiles.add(key);
    this.replayable = resume?.replayable ?? true;
    this.id = spec.id;
    this.width = spec.width;
    this.height = spec.height;
    this.stallTimeoutMs = spec.stallTimeoutMs;
    this.trigger = spec.trigger;
    this.roi = spec.roi;
    this.originalMaxLongSide = spec.originalMaxLongSide;
    this.nativeRing =
      spec.native === null ? null : new NativeRing(spec.native.maxBytes, spec.native.maxFrames);
  }

  /** False once the pipeline cannot be replayed (dynamic pads): each further run would build, and leak, another. */
  get reusable(): boolean {
    return this.replayable;
  }

  /** Where the replay stands now, for a capture process that takes over. */
  resumePoint(): ResumePoint {
    return {
      replay: this.replayCursor?.position() ?? null,
      reported: [...this.reportedFiles],
      replayable: this.replayable,
    };
  }

  /** Plays a run (building the pipeline if needed). Never throws for pipeline problems: the run ends instead. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.betweenRuns = false;
    this.launch();
  }

  /**
   * Stops the pipeline and all timers. Idempotent. Nothing is emitted after stop() returns (late callbacks from
   * GStreamer are recognised by their run and dropped).
   */
  stop(): void {
    if (!this.running) {
      // between runs (the supervisor's backoff): the poll left waiting on the flushed bus must end too
      if (this.betweenRuns && this.pipe?.polling) this.endIdlePoll(this.pipe);
      this.betweenRuns = false;
      return;
    }
    this.running = false;
    if (this.continueTimer !== null) {
      clearTimeout(this.continueTimer);
      this.continueTimer = null;
    }
    this.launchAfterPull = null;
    if (this.run !== null) this.endRun(this.run, true);
    else if (this.pipe?.polling) this.endIdlePoll(this.pipe);
  }

  /**
   * Asks for the next frame at collection size: the cropped frame at its own resolution, its long side capped at
   * `originalMaxLongSide`, delivered as RGBA for the supervisor to resize (with training's resize, not
   * videoscale's), so the model judges the very image that is kept. One frame per request: the capsfilter switches
   * back as soon as it arrives, so the path costs nothing otherwise. In native mode every frame comes at that size
   * too: the next one is delivered whole, with no switch.
   */
  requestOriginal(): boolean {
    if (this.nativeRing !== null) {
      if (!this.running || this.run === null) return false;
      this.originalWanted = true;
      return true;
    }
    const caps = this.run?.pipe.caps;
    if (this.originalMaxLongSide === null || !this.running || !caps) return false;
    if (!this.originalWanted) {
      caps.caps = originalCaps(this.originalMaxLongSide);
      this.originalWanted = true;
    }
    return true;
  }

  nativeFrame(ref: number): Promise<NativeFrame | null> {
    return Promise.resolve(this.nativeRing?.get(ref) ?? null);
  }

  /**
   * Lets native frame `ref` go: its frame was dropped before the daemon saw it (the capture process's frames in
   * flight), so no verdict will ask for it, and it would take a place in the ring that a frame awaiting its
   * verdict needs.
   */
  dropNative(ref: number): void {
    this.nativeRing?.delete(ref);
  }

  counters(): SourceCounters {
    return { badFrames: this.badFrames, pipelines: this.pipelines };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Pipeline lifecycle
  // ---------------------------------------------------------------------------------------------------------------

  /** Plays the pipeline (built if needed). `continued`: the replay run this one continues, seamlessly. */
  private launch(continued?: Run): void {
    if (!this.running) return;
    if (this.lastRun?.pulling && this.lastRun.pipe === this.pipe) {
      this.launchAfterPull = () => this.launch(continued);
      return;
    }
    const replayed = this.pipe !== null;
    const pipe = this.pipe ?? this.buildPipe();
    if (pipe === null) return; // the run ended, reported
    this.pipe = pipe;
    const segment = this.planReplay(pipe);
    if (segment === false) return; // the run ended, reported
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
    pipe.pull((buf, caps, native) => this.onSample(run, buf, caps, native));
    this.armSilenceTimer(run);
  }

  /**
   * Points a replay's multifilesrc at the next good files: the files are checked before each run, because pngdec
   * skips empty and non-image files without a word and stalls for good on a truncated one. Null: not a replay (or
   * its files are missing, which GStreamer reports). False: nothing left to play; the run ended, reported.
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
        this.end("end_of_stream", `replay ${location} ended (its last files are unusable)`, null);
      else this.end("bad_file", `replay ${location}: every file is unusable`, null);
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

  /** A new pipeline, or null (the run ended, reported) when GStreamer cannot build it. */
  private buildPipe(): Pipe | null {
    let pipeline: gst.Pipeline;
    try {
      pipeline = new (gstreamer().Pipeline)(this.description);
    } catch (err) {
      // A description GStreamer cannot build (typo, missing plugin) stays broken until someone fixes the config or
      // installs the plugin, but the daemon must keep serving the other cameras, so retry with backoff like any
      // other failure (the backoff keeps this cheap).
      this.end(
        "pipeline_invalid",
        `GStreamer could not build the pipeline "${this.description}": ${errorMessage(err)}`,
        null,
      );
      return null;
    }
    this.pipelines++;
    this.originalWanted = false; // a new pipeline starts with the capture caps
    const sink = pipeline.findChild(SINK_NAME);
    if (typeof sink?.pull !== "function") {
      // Cannot happen with our own description (validation rejects a second sink name), but never pull from nothing.
      this.end("pipeline_invalid", `pipeline has no appsink named "${SINK_NAME}"`, null);
      return null;
    }
    // Bound: the addon finds its appsink through `this`; an unbound call would crash natively.
    const pullModel = sink.pull.bind(sink);
    const nativeSink = this.nativeRing === null ? undefined : pipeline.findChild(NATIVE_SINK_NAME);
    const pipe: Pipe = {
      pipeline,
      pull:
        typeof nativeSink?.pull === "function"
          ? pairedPull(pullModel, nativeSink.pull.bind(nativeSink))
          : pullModel,
      caps: pipeline.findChild(CAPS_NAME) ?? null,
      replayElement:
        this.replayCursor === null ? null : (pipeline.findChild(this.replayCursor.settings.element) ?? null),
      onBus: (message) => this.onBusMessage(pipe, message),
      polling: false,
    };
    return pipe;
  }

  /**
   * Tears a run down: stops its pipeline and timers; its late callbacks are ignored from now on. `stopping`: by
   * stop(), so no run follows soon.
   */
  private endRun(run: Run, stopping = false): void {
    run.ended = true;
    if (run.silenceTimer !== null) clearTimeout(run.silenceTimer);
    if (run.noSampleTimer !== null) clearTimeout(run.noSampleTimer);
    run.silenceTimer = null;
    run.noSampleTimer = null;
    const replayed = !stopping && this.replayable;
    // A pipeline that will be replayed drops its queued messages as it stops, so the replay does not receive this
    // run's late ones (pngdec's error is followed by the source's "Internal data stream error"); a waiting poll then
    // stays waiting through the backoff and carries on with the replay. One that will not be replayed keeps them:
    // they wake the poll, which finds the pipeline in NULL and ends, freeing its pool thread.
    run.pipe.pipeline["auto-flush-bus"] = replayed;
    // Synchronous: GStreamer is in NULL when this returns, so pending pulls come back with null.
    run.pipe.pipeline.stop();
    if (!replayed && this.pipe === run.pipe && !stopping) this.pipe = null;
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
   * Ends a failed run and reports why. `failedIndex`: the file a decoder failed on, when the
   * replay's source knows it (see {@link decodingIndex}). At most once per run. A replay resumes after the last
   * frame delivered; with `blameFile` (a stall or a decoder error) it also skips the file it was on until that file
   * changes, and names it.
   */
  private failRun(
    run: Run,
    kind: CameraWarningKind,
    message: string,
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
    this.end(kind, text, run.streamingSince);
  }

  /**
   * A replay segment ended as planned: play the next one as part of the same stream (no restart, no state change),
   * one frame interval after the last frame. A new run's first frame is due at once (its running time is 0), so
   * without the wait a synced replay would speed up by one frame per segment.
   */
  private continueReplay(run: Run): void {
    this.endRun(run);
    const waitMs = Math.max(0, this.frameGapMs - (Date.now() - (run.lastFrameAt ?? 0)));
    this.continueTimer = setTimeout(() => {
      this.continueTimer = null;
      if (this.running) this.launch(run);
    }, waitMs);
  }

  /** The run's stream ended and its frames are all out: the next replay segment, or a restart. */
  private endOfStream(run: Run): void {
    if (run.ended || run !== this.run) return;
    if (run.segment !== null && this.replayCursor!.segmentEnded(run.segment)) this.continueReplay(run);
    else this.failRun(run, "end_of_stream", "source ended (end of stream)");
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
        const debug = typeof message.debug === "string" ? oneLine(message.debug) : "";
        const detail = debug === "" ? "" : ` (${debug})`;
        let text = `GStreamer error from ${origin}: ${message.message}${detail}`;
        if (run.replayed && run.frames === 0 && debug.includes("not-linked")) {
          this.replayable = false;
          text +=
            "; the source has elements with dynamic pads, which GStreamer links only once, so from now on each restart builds a new pipeline";
        }
        const roiMissed = this.roi !== null && debug.includes("not-negotiated");
        if (roiMissed) {
          const { x, y, width, height } = this.roi!;
          text += `; check cameras[] (id "${this.id}").roi ${x},${y},${width},${height}: it must lie inside the source's frames`;
        }
        // In a replay, an error from another element, or the source's "streaming stopped, reason error" (pngdec
        // fails a corrupt PNG, libpng: "IDAT: CRC error", by returning an error without a message of its own), is
        // about the file being decoded; so is "reason not-negotiated" with an ROI: videocrop cannot crop a frame
        // smaller than the ROI (a PNG's size is checked before the run, other formats' only here). Replayed on the
        // same file, the run would fail the same way for ever. The source's own errors (a file it cannot read) and
        // linking failures are not.
        const replayElement = this.replayCursor?.settings.element;
        const blame =
          replayElement !== undefined &&
          (!origin.endsWith(`:${replayElement}`) || debug.includes("reason error") || roiMissed);
        this.failRun(run, "pipeline_error", text, blame, blame ? decodingIndex(run) : undefined);
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
        this.emit(
          "notice",
          `GStreamer warning: ${oneLine(message.debug ?? message._src_element_name ?? "")}`,
        );
        break;
      default:
        break;
    }
  }

  private onSample(run: Run, buf: Buffer | null, caps: gst.SampleCaps, native?: NativeSample): void {
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
        );
      }, NO_SAMPLE_GRACE_MS);
      return;
    }
    const captureTs = Date.now();
    // Ask for the next sample before handing this one out, so a throwing listener cannot stop the camera.
    run.pulling = true;
    run.pipe.pull((nextBuf, nextCaps, nextNative) => this.onSample(run, nextBuf, nextCaps, nextNative));

    if (native !== undefined && this.nativeRing !== null) {
      this.onNativeSample(run, buf, caps, native, captureTs, this.nativeRing);
      return;
    }
    if (caps.format === "RGBA") {
      this.onOriginalSample(run, buf, caps, captureTs);
      return;
    }
    const rgb = this.toPackedRgb(run, buf, caps);
    if (rgb === null) return;
    this.recordFrame(run, captureTs);
    this.emit("frame", { captureTs, rgb });
  }

  /**
   * A sample at collection size (see requestOriginal): switches the caps back, and emits it, marked as asked for
   * or not (the frame or two more that arrive before the switch takes effect are only resized).
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
    const rgba = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    this.emit("frame", { captureTs, original: { width, height, rgba }, wanted });
  }

  /**
   * Native mode: a frame as the model gets it and the same frame at the ROI's own resolution. The native one is
   * kept in the ring under a new number, which the frame carries; the one the collector asked for is emitted whole
   * instead, and a frame already at the capture size (a tiled bundle at
   * scale 1) is its own native frame.
   */
  private onNativeSample(
    run: Run,
    buf: Buffer,
    caps: gst.SampleCaps,
    native: NativeSample,
    captureTs: number,
    ring: NativeRing,
  ): void {
    const width = native.caps.width ?? 0;
    const height = native.caps.height ?? 0;
    let nativeRgb: Uint8Array;
    try {
      if (width === 0 || height === 0)
        throw new RangeError(`native caps without a size: ${JSON.stringify(native.caps)}`);
      nativeRgb = packRgbRows(native.buf, width, height);
    } catch (err) {
      this.rejectFrame(run, err);
      return;
    }
    if (this.originalWanted) {
      this.originalWanted = false;
      this.recordFrame(run, captureTs);
      this.emit("frame", { captureTs, original: { width, height, rgb: nativeRgb }, wanted: true });
      return;
    }
    const rgb = this.toPackedRgb(run, buf, caps);
    if (rgb === null) return;
    this.recordFrame(run, captureTs);
    if (width === this.width && height === this.height) {
      this.emit("frame", { captureTs, rgb });
      return;
    }
    const ref = this.nextRef++;
    ring.add(ref, { width, height, rgb: nativeRgb });
    this.emit("frame", { captureTs, rgb, native: { ref, width, height } });
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
    run.frames++;
    if (run.lastFrameAt !== null) this.frameGapMs = captureTs - run.lastFrameAt;
    run.lastFrameAt = captureTs;
    run.streamingSince ??= captureTs;
    if (run.silenceTimer !== null) run.silenceTimer.refresh();
    else this.armSilenceTimer(run);
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
      this.emit("idle");
      return;
    }
    this.failRun(
      run,
      "stalled",
      `no frame for ${this.stallTimeoutMs} ms while playing; restarting the source`,
      true,
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------------------------------------------

  /** The run is over: the supervisor decides what comes next. */
  private end(kind: CameraWarningKind, message: string, streamingSince: number | null): void {
    if (!this.running) return;
    this.running = false;
    this.betweenRuns = true;
    this.emit("ended", { kind, message, streamingSince });
  }

  private warn(kind: CameraWarningKind, message: string): void {
    if (this.running) this.emit("warning", kind, message);
  }
}

/** GStreamer's debug text spans lines; a log line must not. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ");
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
