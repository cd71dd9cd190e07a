/**
 * A camera's capture process: plays the camera's GStreamer pipeline ({@link GstSource}) and streams its frames and
 * events to the daemon over fd 3 (capture-protocol.ts). Started by {@link ProcessSource}, one per camera; a native
 * leak or crash of the GStreamer binding ends here, not in the daemon. It exits when the daemon says so, when the
 * daemon's end of the socket closes, or when its parent process is gone (no orphans).
 */
import net from "node:net";
import {
  type CaptureArgs,
  type ChildEvent,
  eventMessage,
  frameHeader,
  nativeHeader,
  type ParentCommand,
} from "./capture-protocol.js";
import type { SourceCounters } from "./frame-source.js";
import { GstSource } from "./gst-source.js";

/**
 * Frames sent and not yet acknowledged beyond which new ones are dropped, as the appsink (max-buffers=2 drop=true)
 * drops them when the daemon falls behind: without it the socket's buffers (about 200 kB in the kernel, and
 * unbounded in Node) would hold the frames, a backlog of dozens for a small model's frames, and a request for a
 * full-size frame would wait behind them.
 */
const MAX_FRAMES_IN_FLIGHT = 2;
/** How often the parent's pid is checked: a parent killed with SIGKILL may leave the socket open in a grandchild. */
const PARENT_CHECK_MS = 1000;

const args = JSON.parse(process.argv[2] ?? "") as CaptureArgs;
const parentPid = process.ppid;
const channel = new net.Socket({ fd: 3, readable: true, writable: true });
const source = new GstSource(args.spec, args.resume ?? undefined);
let run = 0;
let exiting = false;
let sent: SourceCounters = { badFrames: 0, pipelines: 0 };
let framesInFlight = 0;

function send(event: ChildEvent): void {
  if (!exiting) channel.write(eventMessage(event));
}

/** Sends the counters when they changed (each bad frame or pipeline built; both are rare). */
function sendCounters(): void {
  const now = source.counters();
  if (now.badFrames === sent.badFrames && now.pipelines === sent.pipelines) return;
  sent = now;
  send({ t: "counters", counters: now });
}

function exit(): void {
  if (exiting) return;
  source.stop();
  exiting = true;
  // what is still buffered goes out first; the daemon no longer reads it after an exit command, so do not wait long
  channel.end(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}

source.on("frame", (frame) => {
  if (framesInFlight >= MAX_FRAMES_IN_FLIGHT) {
    if ("rgb" in frame && frame.native !== undefined) source.dropNative(frame.native.ref);
    return;
  }
  framesInFlight++;
  // the counters first: the pipeline that made this frame is counted by the time the daemon sees the frame
  sendCounters();
  writeFrame(frameHeader(run, frame));
});

function writeFrame({ head, pixels }: { head: Buffer; pixels: Uint8Array }): void {
  if (exiting) return;
  channel.cork();
  channel.write(head);
  channel.write(pixels);
  channel.uncork();
}

/** Sends the native frame the daemon asked for, or says it is gone (outside the frames-in-flight count). */
async function sendNative(ref: number): Promise<void> {
  const native = await source.nativeFrame(ref);
  if (native === null) send({ t: "native_missing", ref });
  else writeFrame(nativeHeader(ref, native));
}
source.on("warning", (kind, message) => {
  sendCounters();
  send({ t: "warning", run, kind, message });
});
source.on("idle", () => send({ t: "idle", run }));
source.on("notice", (text) => send({ t: "notice", text }));
source.on("ended", (end) => {
  sent = source.counters();
  send({ t: "ended", run, end, reusable: source.reusable, resume: source.resumePoint(), counters: sent });
});

function onCommand(command: ParentCommand): void {
  switch (command.t) {
    case "start":
      run = command.run;
      source.start();
      break;
    case "stop":
      source.stop();
      break;
    case "original":
      source.requestOriginal();
      break;
    case "native":
      void sendNative(command.ref);
      break;
    case "exit":
      exit();
      break;
    case "ack":
      framesInFlight = Math.max(0, framesInFlight - 1);
      break;
  }
}

let pending = "";
channel.setEncoding("utf8");
channel.on("data", (text: string) => {
  pending += text;
  for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    onCommand(JSON.parse(line) as ParentCommand);
  }
});
channel.on("end", exit);
channel.on("close", exit);
// EPIPE and the like: the daemon is gone
channel.on("error", exit);
setInterval(() => {
  if (process.ppid !== parentPid) exit();
  sendCounters();
}, PARENT_CHECK_MS).unref();
