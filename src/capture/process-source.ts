import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  ACK_LINE,
  type CaptureArgs,
  type ChildEvent,
  decodeFrame,
  MESSAGE_EVENT,
  MESSAGE_FRAME,
  MessageReader,
  type ParentCommand,
} from "./capture-protocol.js";
import type {
  FrameSource,
  FrameSourceEvents,
  NativeFrame,
  SourceCounters,
  SourceSpec,
} from "./frame-source.js";
import type { ResumePoint } from "./gst-source.js";

/** The capture process's entry, compiled beside this file. */
const CAPTURE_ENTRY = fileURLToPath(new URL("./capture-process.js", import.meta.url));
/** How long a capture process told to exit may take before it is killed. */
const EXIT_GRACE_MS = 2000;
/** How long a native frame asked for may take to arrive before the answer is "gone". */
const NATIVE_TIMEOUT_MS = 2000;
/**
 * The capture process numbers its native frames from 1; each process's numbers are shifted by this much times the
 * processes started before it, so a number names one frame of this camera for as long as the daemon runs.
 */
const REFS_PER_PROCESS = 2 ** 32;

/** One capture process and what this side knows of it. */
interface Child {
  process: ChildProcess;
  channel: Socket;
  /** Its counters as it last reported them. */
  counters: SourceCounters;
  /** Its last line on stderr, to say why it died. */
  lastLine: string;
  /** Its pipeline cannot be replayed (dynamic pads): the next run needs a new process. */
  spent: boolean;
  gone: boolean;
  /** Added to the process's native frame numbers ({@link REFS_PER_PROCESS}). */
  refBase: number;
  /** Native frames asked for and not yet answered, by the process's number. */
  nativeWaits: Map<number, ((frame: NativeFrame | null) => void)[]>;
}

/**
 * A camera whose GStreamer pipeline plays in a process of its own ({@link FrameSource}): the daemon never loads the
 * GStreamer binding for it, and the binding's leaks and crashes end with that process. The process plays run after
 * run of its one pipeline (replays leak under 1 kB each); when the pipeline cannot be replayed (dynamic pads, which
 * would leak a whole pipeline per run) or the process died, the next start() starts a new process, resuming a
 * replay where the last one stood. The process's stderr and GStreamer's warnings come out as `notice` events.
 */
export class ProcessSource extends EventEmitter<FrameSourceEvents> implements FrameSource {
  private child: Child | null = null;
  /** Number of the current run; messages of earlier runs are dropped. */
  private run = 0;
  private playing = false;
  private streamingSince: number | null = null;
  /** Counters of the processes that are gone. */
  private readonly past: SourceCounters = { badFrames: 0, pipelines: 0 };
  private resume: ResumePoint | null = null;
  private processes = 0;

  constructor(private readonly spec: SourceSpec) {
    super();
  }

  start(): void {
    if (this.playing) return;
    if (this.child?.spent) this.retire();
    this.child ??= this.spawn();
    this.run++;
    this.playing = true;
    this.streamingSince = null;
    this.send({ t: "start", run: this.run });
  }

  stop(): void {
    this.playing = false;
    this.retire();
  }

  requestOriginal(): boolean {
    if (!this.playing || this.spec.originalMaxLongSide === null || this.child === null) return false;
    this.send({ t: "original" });
    return true;
  }

  /** Asks the capture process for a native frame it keeps; null when it is gone, or the process is. */
  nativeFrame(ref: number): Promise<NativeFrame | null> {
    const child = this.child;
    const local = child === null ? 0 : ref - child.refBase;
    if (child === null || child.gone || local < 1 || local >= REFS_PER_PROCESS) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => answer(null), NATIVE_TIMEOUT_MS);
      const answer = (frame: NativeFrame | null) => {
        clearTimeout(timer);
        resolve(frame);
      };
      const waits = child.nativeWaits.get(local);
      if (waits !== undefined) {
        waits.push(answer);
        return;
      }
      child.nativeWaits.set(local, [answer]);
      this.sendTo(child, { t: "native", ref: local });
    });
  }

  counters(): SourceCounters {
    const now = this.child?.counters ?? { badFrames: 0, pipelines: 0 };
    return { badFrames: this.past.badFrames + now.badFrames, pipelines: this.past.pipelines + now.pipelines };
  }

  /** Pid of the current capture process (none between a crash and the next run). */
  get pid(): number | undefined {
    return this.child?.process.pid;
  }

  private spawn(): Child {
    const args: CaptureArgs = { spec: this.spec, resume: this.resume };
    const proc = spawn(process.execPath, [CAPTURE_ENTRY, JSON.stringify(args)], {
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      // GStreamer colours its debug output even into a pipe; the lines go to a JSON log
      env: { ...process.env, GST_DEBUG_NO_COLOR: "1" },
    });
    const channel = proc.stdio[3] as Socket;
    const child: Child = {
      process: proc,
      channel,
      counters: { badFrames: 0, pipelines: 0 },
      lastLine: "",
      spent: false,
      gone: false,
      refBase: this.processes++ * REFS_PER_PROCESS,
      nativeWaits: new Map(),
    };
    const reader = new MessageReader((type, body) => {
      if (child === this.child) this.onMessage(child, type, body);
    });
    channel.on("data", (chunk: Buffer) => reader.feed(chunk));
    // the process's exit is reported by "close"; a socket error (EPIPE after a crash) adds nothing
    channel.on("error", () => {});
    for (const stream of [proc.stdout, proc.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
        if (line.trim() === "") return;
        child.lastLine = line;
        if (child === this.child) this.emit("notice", line);
      });
    }
    // "close" comes after the process exited and its streams ended, so every frame it sent is in
    proc.on("close", (code, signal) => this.onExit(child, signal ?? `code ${code}`));
    proc.on("error", (err) => this.onExit(child, err.message));
    return child;
  }

  private onMessage(child: Child, type: number, body: Buffer): void {
    if (type === MESSAGE_FRAME) {
      const decoded = decodeFrame(body);
      if ("native" in decoded) {
        this.answerNative(child, decoded.ref, decoded.native);
        return;
      }
      if (!child.channel.destroyed && child.channel.writable) child.channel.write(ACK_LINE);
      const { run, frame } = decoded;
      if (run !== this.run || !this.playing) return;
      this.streamingSince ??= frame.captureTs;
      if ("rgb" in frame && frame.native !== undefined) {
        this.emit("frame", { ...frame, native: { ...frame.native, ref: child.refBase + frame.native.ref } });
      } else this.emit("frame", frame);
      return;
    }
    if (type !== MESSAGE_EVENT) return;
    const event = JSON.parse(body.toString("utf8")) as ChildEvent;
    switch (event.t) {
      case "counters":
        child.counters = event.counters;
        break;
      case "notice":
        this.emit("notice", event.text);
        break;
      case "native_missing":
        this.answerNative(child, event.ref, null);
        break;
      case "warning":
        if (event.run === this.run && this.playing) this.emit("warning", event.kind, event.message);
        break;
      case "idle":
        if (event.run === this.run && this.playing) this.emit("idle");
        break;
      case "ended":
        child.counters = event.counters;
        child.spent = !event.reusable;
        this.resume = event.resume;
        if (event.run !== this.run || !this.playing) return;
        this.playing = false;
        this.emit("ended", event.end);
        break;
    }
  }

  private answerNative(child: Child, ref: number, frame: NativeFrame | null): void {
    const waits = child.nativeWaits.get(ref);
    child.nativeWaits.delete(ref);
    for (const answer of waits ?? []) answer(frame);
  }

  private onExit(child: Child, how: string): void {
    if (child.gone) return;
    child.gone = true;
    if (child !== this.child) return;
    this.forget(child);
    const why = child.lastLine === "" ? "" : `: ${child.lastLine}`;
    const message = `capture process ${child.process.pid ?? "(not started)"} ended (${how})${why}`;
    if (!this.playing) {
      this.emit("notice", `${message}; the next run starts a new one`);
      return;
    }
    this.playing = false;
    this.emit("ended", { kind: "process_exited", message, streamingSince: this.streamingSince });
  }

  /** Tells the current process to exit (killed if it does not), and forgets it. */
  private retire(): void {
    const child = this.child;
    if (child === null) return;
    this.forget(child);
    if (child.gone) return;
    this.sendTo(child, { t: "exit" });
    child.channel.end();
    const kill = setTimeout(() => child.process.kill("SIGKILL"), EXIT_GRACE_MS);
    kill.unref();
    child.process.once("exit", () => clearTimeout(kill));
  }

  private forget(child: Child): void {
    for (const ref of [...child.nativeWaits.keys()]) this.answerNative(child, ref, null);
    this.past.badFrames += child.counters.badFrames;
    this.past.pipelines += child.counters.pipelines;
    child.counters = { badFrames: 0, pipelines: 0 };
    this.child = null;
  }

  private send(command: ParentCommand): void {
    if (this.child !== null) this.sendTo(this.child, command);
  }

  private sendTo(child: Child, command: ParentCommand): void {
    if (!child.channel.destroyed && child.channel.writable)
      child.channel.write(`${JSON.stringify(command)}\n`);
  }
}
