import { Worker } from "node:worker_threads";
import type { ShadowMeta, ShadowPair } from "./shadow-db.js";
import type { ShadowDbAsk, ShadowDbReply } from "./shadow-db-worker.js";

/**
 * The main thread's side of a run's database thread (shadow-db-worker.ts): each write is a request answered once it
 * is committed, so a run that awaits its batch's write keeps one request in flight at most.
 */
export class ShadowDbThread {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private failure: Error | undefined;

  constructor(file: string) {
    this.worker = new Worker(new URL("./shadow-db-worker.js", import.meta.url), { workerData: { file } });
    this.worker.on("message", (reply: ShadowDbReply) => {
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.ok) waiter?.resolve();
      else waiter?.reject(new Error(reply.message));
    });
    const fail = (err: Error): void => {
      this.failure = err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`the shadow database thread exited (code ${code})`)));
  }

  addBatch(pairs: ShadowPair[], meta: ShadowMeta): Promise<void> {
    return this.ask({ op: "batch", pairs, meta: { ...meta } });
  }

  writeMeta(meta: ShadowMeta): Promise<void> {
    return this.ask({ op: "meta", meta: { ...meta } });
  }

  /** Closes the database (checkpointing its WAL) and ends the thread. */
  async close(): Promise<void> {
    if (this.failure) return;
    await this.ask({ op: "close" }).catch(() => undefined);
  }

  private ask(request: ShadowDbAsk): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.next++;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...request, id });
    });
  }
}
