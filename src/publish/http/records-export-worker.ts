/**
 * One export's thread (`GET /api/records/export.{csv,jsonl}`): runs `exportRecords` — the same code as
 * `stpmd records export` — on a read-only connection of its own (WAL: a consistent snapshot while the daemon
 * writes) and hands the route one chunk (~64 KiB, `exportRecords`' write size) at a time, writing the next only
 * when the route asks for more. So a slow client holds this thread and its snapshot, never the daemon's memory,
 * and the route stops a client that hangs up by terminating the thread.
 */
import { Writable } from "node:stream";
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import { openRecordsDb, type RecordsDatabase } from "../record-store.js";
import { type ExportFormat, exportRecords } from "../records-export-format.js";

export interface ExportJob {
  /** The database file. */
  file: string;
  filter: { from: number; to?: number; camera?: string };
  format: ExportFormat;
}

/** Worker → route. The route answers every `chunk` with `"more"` once the client has taken it. */
export type ExportMessage =
  | { type: "chunk"; text: string }
  | { type: "end"; count: number }
  | { type: "error"; status: number; message: string };

const job = workerData as ExportJob;
const port = parentPort!;
let more: (() => void) | undefined;
port.on("message", (message: "more") => {
  if (message !== "more") return;
  const next = more;
  more = undefined;
  next?.();
});

/**
 * The route as a stream: a write completes only when the route asks for more. With a high-water mark of one byte
 * every write reports "full", so `exportRecords` awaits `drain` after each chunk: one chunk in flight, no more.
 */
const toRoute = new Writable({
  highWaterMark: 1,
  decodeStrings: false,
  write(chunk: string, _encoding, done) {
    more = () => done();
    port.postMessage({ type: "chunk", text: chunk } satisfies ExportMessage);
  },
});

function send(message: ExportMessage): void {
  port.postMessage(message);
}

let db: RecordsDatabase | undefined;
try {
  db = openRecordsDb(job.file, { readonly: true });
} catch (err) {
  const missing = (err as NodeJS.ErrnoException).code === "SQLITE_CANTOPEN";
  send({
    type: "error",
    status: 503,
    message: missing
      ? `no part record yet: ${job.file} cannot be opened`
      : `the part record cannot be read: ${errorMessage(err)}`,
  });
}
if (db !== undefined) {
  try {
    const count = await exportRecords(db, job.filter, job.format, toRoute);
    send({ type: "end", count });
  } catch (err) {
    send({ type: "error", status: 503, message: `the export failed: ${errorMessage(err)}` });
  } finally {
    db.close();
  }
}
// the listener for "more" is all that keeps the thread alive now: let it end (messages already posted arrive)
port.unref();
