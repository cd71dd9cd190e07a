/**
 * The records API's query thread: runs each query on a read-only connection of its own, so a query over a day of
 * a busy line (seconds, in the worst filter) never holds the daemon's event loop. The connection is opened at the
 * first query and again whenever the file on disk changed (a database moved aside or recreated by the writer).
 */
import { parentPort, workerData } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import { FollowingConnection, hourlyCounts, QueryError, queryRecords, recordFile } from "../record-store.js";
import type { HourlyQuery, RecordsQuery } from "../records-api.js";

export type QueryRequest =
  | { id: number; kind: "records"; query: RecordsQuery }
  | { id: number; kind: "hourly"; query: HourlyQuery }
  | { id: number; kind: "file"; record: number; which: "image" | "map" };

export type QueryReply =
  | { id: number; ok: true; body: unknown }
  | { id: number; ok: false; status: number; message: string };

const file = (workerData as { file: string }).file;
const db = new FollowingConnection(file, { readonly: true });

function answer(request: QueryRequest): QueryReply {
  try {
    if (request.kind === "file") {
      const file = recordFile(db.get(), request.record, request.which);
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
        ? queryRecords(db.get(), request.query)
        : { hours: hourlyCounts(db.get(), request.query) };
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
    db.close();
    return {
      id: request.id,
      ok: false,
      status: 503,
      message: `the part record cannot be read: ${errorMessage(err)}`,
    };
  }
}

parentPort!.on("message", (request: QueryRequest) => parentPort!.postMessage(answer(request)));
