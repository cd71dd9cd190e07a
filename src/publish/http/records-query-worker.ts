/**
 * The records API's query thread: runs each query on a read-only connection of its own, so a query over a day of
 * a busy line (seconds, in the worst filter) never holds the daemon's event loop. The connection is opened at the
 * first query and again whenever the file on disk changed (a database moved aside or recreated by the writer).
 */
import { statSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import {
  hourlyCounts,
  openRecordsDb,
  QueryError,
  queryRecords,
  type RecordsDatabase,
  recordFile,
} from "../record-store.js";
import type { HourlyQuery, RecordsQuery } from "../records-api.js";

export type QueryRequest =
  | { id: number; kind: "records"; query: RecordsQuery }
  | { id: number; kind: "hourly"; query: HourlyQuery }
  | { id: number; kind: "file"; record: number; which: "image" | "map" };

export type QueryReply =
  | { id: number; ok: true; body: unknown }
  | { id: number; ok: false; status: number; message: string };

const file = (workerData as { file: string }).file;
let db: RecordsDatabase | undefined;
let inode = -1;

function connection(): RecordsDatabase {
  const ino = statSync(file).ino;
  if (db !== undefined && ino === inode) return db;
  db?.close();
  db = openRecordsDb(file, { readonly: true });
  inode = ino;
  return db;
}

function answer(request: QueryRequest): QueryReply {
  try {
    if (request.kind === "file") {
      const file = recordFile(connection(), request.record, request.which);
      if (file === undefined) {
        return {
          id: request.id,
          ok: false,
          status: 404,
          message: `record ${request.record} has no ${request.which}`,
        };
      }
      return { id: request.id, ok: true, body: file };
    }
    const body =
      request.kind === "records"
        ? queryRecords(connection(), request.query)
        : { hours: hourlyCounts(connection(), request.query) };
    return { id: request.id, ok: true, body };
  } catch (err) {
    if (err instanceof QueryError) return { id: request.id, ok: false, status: 400, message: err.message };
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      return {
        id: request.id,
        ok: false,
        status: 503,
        message: `no part record yet: ${file} does not exist`,
      };
    db?.close();
    db = undefined;
    return {
      id: request.id,
      ok: false,
      status: 503,
      message: `the part record cannot be read: ${errorMessage(err)}`,
    };
  }
}

parentPort!.on("message", (request: QueryRequest) => parentPort!.postMessage(answer(request)));
