import { readlinkSync } from "node:fs";
import os from "node:os";
import { parentPort } from "node:worker_threads";
import { loadBundle, scoringOptions } from "../bundle/bundle.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { ort } from "../onnx/ort.js";
import { Scorer } from "../stpm/scorer.js";

/**
 * Worker-thread side of {@link ScorerThread}: owns one bundle's scoring session. onnxruntime-node runs a session
 * synchronously on the calling thread, so inference in the daemon's main thread would stall GStreamer callbacks,
 * MQTT and the outbox for the length of every batch; here it stalls nothing but this thread.
 */
export type WorkerRequest =
  | {
      type: "load";
      dir: string;
      providers: ort.InferenceSession.ExecutionProviderConfig[];
      intraOpThreads: number;
      /** Niceness of this thread (Linux), for a model that must yield the CPU to the live ones (a shadow). */
      nice?: number;
    }
  | { type: "score"; id: number; frames: Uint8Array; count: number };

export type WorkerReply =
  | { type: "loaded"; manifest: unknown }
  | { type: "failed"; message: string; code?: string }
  | { type: "scored"; id: number; maps: Float32Array; scores: Float32Array }
  | { type: "score_failed"; id: number; message: string }
  | { type: "fallback"; provider: string; reason: string };

let scorer: Scorer | undefined;
const port = parentPort!;

async function handle(msg: WorkerRequest): Promise<void> {
  if (msg.type === "load") {
    if (msg.nice !== undefined) lowerPriority(msg.nice);
    try {
      const bundle = await loadBundle(msg.dir);
      const loaded = await Scorer.create(bundle.teacher, bundle.student, scoringOptions(bundle.manifest), {
        providers: msg.providers,
        intraOpThreads: msg.intraOpThreads,
        onFallback: (provider, reason) =>
          port.postMessage({ type: "fallback", provider, reason } satisfies WorkerReply),
      });
      // every loader of a serving model comes through here (start, check-config, the watch, SIGHUP), so a model that
      // cannot judge a frame is refused before any of them accepts it
      const problem = await loaded.probe();
      if (problem !== undefined) {
        await loaded.release();
        throw new StpmdError("ERR_BUNDLE_INVALID", `${msg.dir}: ${problem}; bundle refused`);
      }
      scorer = loaded;
      port.postMessage({ type: "loaded", manifest: bundle.manifest } satisfies WorkerReply);
    } catch (err) {
      const code = (err as { code?: string }).code;
      port.postMessage({
        type: "failed",
        message: errorMessage(err),
        ...(code ? { code } : {}),
      } satisfies WorkerReply);
    }
    return;
  }
  try {
    if (!scorer) throw new Error("no model loaded in the inference thread");
    // the Scorer's output arrays are its own, not ORT's: hand them over without a copy
    const { maps, scores } = await scorer.score(msg.frames, msg.count);
    port.postMessage({ type: "scored", id: msg.id, maps, scores } satisfies WorkerReply, [
      maps.buffer as ArrayBuffer,
      scores.buffer as ArrayBuffer,
    ]);
  } catch (err) {
    port.postMessage({ type: "score_failed", id: msg.id, message: errorMessage(err) } satisfies WorkerReply);
  }
}

/**
 * Lowers this thread's scheduling priority: on Linux, setpriority() given a thread id applies to that thread alone,
 * and with one intra-op thread ONNX Runtime runs a session on its caller, so the model's inference runs at this
 * niceness. Raising niceness needs no privilege. Elsewhere (no /proc/thread-self) the thread keeps its priority.
 */
function lowerPriority(nice: number): void {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").at(-1));
    if (Number.isInteger(tid)) os.setPriority(tid, nice);
  } catch {
    // not Linux: no per-thread priority to set
  }
}

port.on("message", (msg: WorkerRequest) => {
  handle(msg).catch(() => undefined);
});
