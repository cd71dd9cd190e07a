import { Worker } from "node:worker_threads";
import type { Manifest } from "../bundle/bundle.js";
import { StpmdError } from "../core/errors.js";
import type { ort } from "../onnx/ort.js";
import type { ScoredBatch } from "../stpm/scorer.js";
import type { WorkerReply, WorkerRequest } from "./scorer-worker.js";

export interface ScorerThreadOptions {
  providers: ort.InferenceSession.ExecutionProviderConfig[];
  intraOpThreads: number;
  /** Niceness of the inference thread (Linux): a shadow's candidate yields the CPU to the live models. */
  nice?: number;
  onFallback?: (provider: string, reason: string) => void;
}

/**
 * A bundle's scoring session in its own worker thread, so the daemon's event loop keeps serving cameras, MQTT
 * and the outbox while a batch runs. One instance per loaded model; `score` calls run one after another.
 */
export class ScorerThread {
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { resolve: (r: ScoredBatch) => void; reject: (e: Error) => void }
  >();
  private exited = false;

  private constructor(
    private readonly worker: Worker,
    readonly manifest: Manifest,
  ) {
    worker.on("message", (msg: WorkerReply) => this.onReply(msg));
    worker.on("exit", () => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error("the inference thread exited"));
      this.pending.clear();
    });
  }

  /** Starts a thread and loads the bundle in it; rejects (and stops the thread) if the bundle fails to load. */
  static async load(dir: string, opts: ScorerThreadOptions): Promise<ScorerThread> {
    const worker = new Worker(new URL("./scorer-worker.js", import.meta.url));
    const manifest = await new Promise<Manifest>((resolve, reject) => {
      const onMessage = (msg: WorkerReply): void => {
        if (msg.type === "fallback") {
          opts.onFallback?.(msg.provider, msg.reason);
        } else if (msg.type === "loaded") {
          worker.off("message", onMessage);
          resolve(msg.manifest as Manifest);
        } else if (msg.type === "failed") {
          worker.off("message", onMessage);
          reject(msg.code ? new StpmdError(msg.code as never, msg.message) : new Error(msg.message));
        }
      };
      worker.on("message", onMessage);
      worker.once("error", reject);
      worker.postMessage({
        type: "load",
        dir,
        providers: opts.providers,
        intraOpThreads: opts.intraOpThreads,
        ...(opts.nice !== undefined ? { nice: opts.nice } : {}),
      } satisfies WorkerRequest);
    }).catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });
    return new ScorerThread(worker, manifest);
  }

  /**
   * Scores `count` frames packed back to back (count × H × W × 3 bytes). The buffer is transferred to the thread,
   * not copied: `frames` must own its whole ArrayBuffer, and is detached (empty) here once this returns.
   */
  score(frames: Uint8Array, count: number): Promise<ScoredBatch> {
    if (this.exited) return Promise.reject(new Error("the inference thread has stopped"));
    if (frames.byteOffset !== 0 || frames.byteLength !== frames.buffer.byteLength) {
      return Promise.reject(new Error("ScorerThread.score needs a buffer of its own (it is transferred)"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ type: "score", id, frames, count } satisfies WorkerRequest, [
        frames.buffer as ArrayBuffer,
      ]);
    });
  }

  private onReply(msg: WorkerReply): void {
    if (msg.type !== "scored" && msg.type !== "score_failed") return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === "scored") p.resolve({ maps: msg.maps, scores: msg.scores });
    else p.reject(new Error(msg.message));
  }

  /** Stops the thread once the batches already submitted are done. */
  async release(): Promise<void> {
    while (this.pending.size > 0 && !this.exited) await new Promise((r) => setTimeout(r, 10));
    await this.worker.terminate();
  }
}
