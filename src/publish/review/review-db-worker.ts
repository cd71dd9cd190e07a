/**
 * The review labels' database thread. Labels are written on a read-write connection of their own, not through the
 * records thread and not on the daemon's main thread:
 * - the records thread (records/record-worker.ts) owns its connection and batches rows for 200 ms; routing a label
 *   through it would couple the HTTP sink to the records sink and queue an operator's click behind image saves;
 * - SQLite (WAL) lets one writer at a time: while the records thread commits a batch or a retention chunk, a label's
 *   transaction waits on the busy timeout (5 s, `openRecordsDb`). better-sqlite3 waits synchronously, so on the main
 *   thread that wait would stall every frame's delivery; here it stalls only this thread.
 * The connection is opened at the first request and again whenever the file on disk changed (a database moved
 * aside or recreated by the records thread), like the query thread's.
 */
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import { FollowingConnection, recordById } from "../record-store.js";
import type { PartRecord } from "../records-api.js";
import {
  appendLabelEvent,
  currentLabel,
  type LabelCounts,
  type LabelEvent,
  labelCounts,
  maskAcceptance,
} from "./label-store.js";

/** What the service asks the thread. */
export type ReviewDbAsk =
  | { op: "state"; record: number }
  | { op: "append"; event: Omit<LabelEvent, "id"> }
  | { op: "counts" }
  | { op: "close" };
export type ReviewDbRequest = ReviewDbAsk & { id: number };

/** A record with its current label and that label's mask acceptance. */
export interface RecordState {
  record: PartRecord | undefined;
  current: LabelEvent | undefined;
  accepted: LabelEvent | undefined;
}

export type ReviewDbReply =
  | {
      id: number;
      ok: true;
      body: RecordState | { record: PartRecord | undefined; counts: LabelCounts } | LabelCounts;
    }
  | { id: number; ok: false; missing: boolean; message: string };

const file = (workerData as { file: string }).file;
// never created here: the records thread creates the database with its file mode
const db = new FollowingConnection(file, { fileMustExist: true });

function answer(request: ReviewDbRequest): ReviewDbReply {
  if (request.op === "close") {
    // closed before the records thread's connection, so that the records thread's close (the last) checkpoints the WAL
    db.close();
    return { id: request.id, ok: true, body: {} };
  }
  try {
    const c = db.get();
    switch (request.op) {
      case "state": {
        const current = currentLabel(c, request.record);
        return {
          id: request.id,
          ok: true,
          body: {
            record: recordById(c, request.record),
            current,
            accepted: current === undefined ? undefined : maskAcceptance(c, current),
          },
        };
      }
      case "append":
        appendLabelEvent(c, request.event);
        return {
          id: request.id,
          ok: true,
          body: { record: recordById(c, request.event.record_id), counts: labelCounts(c) },
        };
      case "counts":
        return { id: request.id, ok: true, body: labelCounts(c) };
    }
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    if (!missing) db.close();
    return {
      id: request.id,
      ok: false,
      missing,
      message: missing ? `no part record yet: ${file} does not exist` : `${file}: ${errorMessage(err)}`,
    };
  }
}

parentPort!.on("message", (request: ReviewDbRequest) => parentPort!.postMessage(answer(request)));
