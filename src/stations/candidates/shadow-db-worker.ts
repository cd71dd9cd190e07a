/**
 * A shadow run's database thread: every write to `shadow.db` happens here, not on the daemon's main thread. A
 * batch's transaction takes 0.02–0.05 ms (median), but SQLite's automatic WAL checkpoint fsyncs the database every
 * ~1000 pages, and on this shared box that stalled a commit for up to 124 ms (2000 batches of 8 pairs: p99 2.5 ms,
 * max 124 ms; test/stations/candidates/shadow-db.test.ts prints the figures): on the main thread that would hold up
 * every camera's live delivery. Here it holds up only the next shadow batch.
 */
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import { ShadowDb, type ShadowMeta, type ShadowPair } from "./shadow-db.js";

export type ShadowDbAsk =
  | { op: "batch"; pairs: ShadowPair[]; meta: ShadowMeta }
  | { op: "meta"; meta: ShadowMeta }
  | { op: "close" };
export type ShadowDbRequest = ShadowDbAsk & { id: number };
export type ShadowDbReply = { id: number; ok: true } | { id: number; ok: false; message: string };

const db = new ShadowDb((workerData as { file: string }).file);

parentPort!.on("message", (request: ShadowDbRequest) => {
  let reply: ShadowDbReply;
  try {
    if (request.op === "batch") db.addBatch(request.pairs, request.meta);
    else if (request.op === "meta") db.writeMeta(request.meta);
    else db.close();
    reply = { id: request.id, ok: true };
  } catch (err) {
    reply = { id: request.id, ok: false, message: errorMessage(err) };
  }
  parentPort!.postMessage(reply);
  if (request.op === "close") parentPort!.close();
});
