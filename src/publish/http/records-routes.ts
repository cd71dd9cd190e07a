/**
 * The part record over HTTP (docs/records.md, docs/records-openapi.json):
 *
 * - `GET /api/records`: records filtered by camera, time, verdict, score, part id, model version and label, newest
 *   first, a page at a time (`limit`, `cursor`);
 * - `GET /api/records/hourly`: parts per verdict per hour per camera, for shift reports;
 * - `GET /api/records/<id>/image.png`, `.../map.png`: a record's frame and its anomaly map;
 * - `GET /api/records/export.csv`, `.../export.jsonl`: a time range as a download, byte for byte what
 *   `stpmd records export` writes, each export on a thread of its own (records-export-worker.ts).
 *
 * Parameters are validated against the TypeBox definitions in `records-api.ts` (the same ones the OpenAPI file is
 * written from); a bad one is a 400 naming it. Queries run on a thread of their own (records-query-worker.ts).
 * Reading needs no login, like the metrics and the console's views.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { Worker } from "node:worker_threads";
import type { ValidateFunction } from "ajv";
import type { RecordsConfig } from "../../config/index.js";
import type { Logger } from "../../core/log.js";
import { RECORDS_DB } from "../record-store.js";
import { ExportQuerySchema, HourlyQuerySchema, RecordsQuerySchema } from "../records-api.js";
import { type ExportFormat, pointInTime } from "../records-export-format.js";
import { reply, replyPngFile } from "./http-reply.js";
import { queryParams, queryValidator } from "./query-params.js";
import type { ExportJob, ExportMessage } from "./records-export-worker.js";
import type { QueryReply, QueryRequest } from "./records-query-worker.js";

const FILE_ROUTE = /^\/api\/records\/([0-9]{1,15})\/(image|map)\.png$/;
const EXPORT_ROUTE = /^\/api\/records\/export\.(csv|jsonl)$/;

/**
 * Exports running at once, each a thread and a read snapshot: two lets a shift report and a second user go on
 * together while a third, on a box of 2 to 4 cores that also inspects, waits its turn.
 */
export const MAX_EXPORTS = 2;
/** The export thread's heap limit, MB: the 200,000-row test export also runs under a limit of 8. */
const EXPORT_HEAP_MB = 64;
/** A client that takes no bytes for this long is let go, so it cannot hold an export's place for ever. */
const EXPORT_STALL_MS = 120_000;

/** What the exports did since the server started: their threads, chunks and the largest chunk (docs/records.md). */
export interface ExportStats {
  running: number;
  started: number;
  finished: number;
  aborted: number;
  refused: number;
  chunks: number;
  largestChunk: number;
  /** The most bytes that waited in the daemon for a client's socket: a chunk or two, whatever the client. */
  mostQueued: number;
}

const MEDIA_TYPES: Record<ExportFormat, string> = {
  csv: "text/csv; charset=utf-8",
  jsonl: "application/x-ndjson; charset=utf-8",
};

/** `2026-12-06T14:02:00.000Z` → `20261206T140200Z`: a file name without colons. */
function fileTime(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.[0-9]+Z$/, "Z");
}

/** A query not answered in this long is given up with a 503 (the thread goes on with it). */
const QUERY_TIMEOUT_MS = 30_000;

export class RecordsApi {
  static readonly ROUTES = [
    "/api/records",
    "/api/records/hourly",
    "/api/records/<id>/{image,map}.png",
    "/api/records/export.{csv,jsonl}",
  ];
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, (reply: QueryReply) => void>();
  private readonly validators: Record<
    "records" | "hourly" | "export",
    ValidateFunction<Record<string, string>>
  >;
  private readonly exports = new Set<Worker>();
  private readonly stats: Omit<ExportStats, "running"> = {
    started: 0,
    finished: 0,
    aborted: 0,
    refused: 0,
    chunks: 0,
    largestChunk: 0,
    mostQueued: 0,
  };

  constructor(
    private readonly config: RecordsConfig,
    private readonly logger: Logger,
  ) {
    this.validators = {
      records: queryValidator(RecordsQuerySchema),
      hourly: queryValidator(HourlyQuerySchema),
      export: queryValidator(ExportQuerySchema),
    };
  }

  serves(urlPath: string): boolean {
    return (
      urlPath === "/api/records" ||
      urlPath === "/api/records/hourly" ||
      FILE_ROUTE.test(urlPath) ||
      EXPORT_ROUTE.test(urlPath)
    );
  }

  /** The exports so far; `running` counts their threads still alive. */
  exportStats(): ExportStats {
    return { running: this.exports.size, ...this.stats };
  }

  stop(): void {
    void this.worker?.terminate();
    this.worker = undefined;
    for (const worker of this.exports) void worker.terminate();
  }

  async handle(req: IncomingMessage, res: ServerResponse, urlPath: string): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      reply(res, 405, `method ${req.method} not allowed; use GET\n`, { Allow: "GET, HEAD" });
      return;
    }
    if (!this.config.enabled) {
      reply(res, 404, "the part record is off (records.enabled: false)\n");
      return;
    }
    const file = FILE_ROUTE.exec(urlPath);
    if (file) {
      await this.file(res, Number(file[1]), file[2] as "image" | "map");
      return;
    }
    const exported = EXPORT_ROUTE.exec(urlPath);
    if (exported) {
      const params = queryParams(req, res, this.validators.export);
      if (params !== undefined) this.export(res, params, exported[1] as ExportFormat);
      return;
    }
    const kind = urlPath === "/api/records" ? "records" : "hourly";
    const params = queryParams(req, res, this.validators[kind]);
    if (params === undefined) return;
    const answer = await this.query({ id: this.nextId++, kind, query: params } as QueryRequest);
    if (answer.ok) reply(res, 200, JSON.stringify(answer.body), { "Content-Type": "application/json" });
    else reply(res, answer.status, `${answer.message}\n`);
  }

  /**
   * Streams an export: a thread of its own runs `exportRecords` and sends a chunk at a time; the next is asked for
   * only once the socket took this one (`write` true, or `drain`), so at most one chunk waits here whatever the
   * client's speed. A client that hangs up, or stops reading for EXPORT_STALL_MS, ends the thread.
   */
  private export(res: ServerResponse, params: Record<string, string>, format: ExportFormat): void {
    const now = Date.now();
    let from: number;
    let to: number | undefined;
    try {
      from = pointInTime("parameter since", params.since!, now);
      to = params.until !== undefined ? pointInTime("parameter until", params.until, now) : undefined;
    } catch (err) {
      reply(res, 400, `${(err as Error).message}\n`);
      return;
    }
    if (this.exports.size >= MAX_EXPORTS) {
      this.stats.refused += 1;
      reply(
        res,
        503,
        `${this.exports.size} exports are running already (at most ${MAX_EXPORTS} at once); try again shortly\n`,
        { "Retry-After": "10" },
      );
      return;
    }
    const filename = `stpmd-records-${fileTime(from)}-${fileTime(to ?? now)}.${format}`;
    const headers = {
      "Content-Type": MEDIA_TYPES[format],
      "Content-Disposition": `attachment; filename="${filename}"`,
      "Cache-Control": "no-store",
      "X-Content-Type-Options": "nosniff",
    };
    if (res.req.method === "HEAD") {
      res.writeHead(200, headers);
      res.end();
      return;
    }
    const job: ExportJob = {
      file: path.join(this.config.dir, RECORDS_DB),
      filter: {
        from,
        ...(to !== undefined ? { to } : {}),
        ...(params.camera !== undefined ? { camera: params.camera } : {}),
      },
      format,
    };
    const worker = new Worker(new URL("./records-export-worker.js", import.meta.url), {
      workerData: job,
      // the thread holds one row and one chunk at a time: a heap this size is ample, and it bounds what a bug or
      // an odd row could take from the daemon (an export that passes it fails alone, with a 503 or a cut stream)
      resourceLimits: { maxOldGenerationSizeMb: EXPORT_HEAP_MB },
    });
    this.exports.add(worker);
    this.stats.started += 1;
    let done = false;
    let stall: NodeJS.Timeout | undefined;
    const more = (): void => {
      clearTimeout(stall);
      worker.postMessage("more");
    };
    const abort = (why: string): void => {
      if (done) return;
      done = true;
      clearTimeout(stall);
      this.stats.aborted += 1;
      this.logger.info({ filename }, `records export ${filename}: ${why}; its thread stopped`);
      void worker.terminate();
      res.destroy();
    };
    res.on("close", () => {
      if (!res.writableFinished) abort("the client hung up");
    });
    res.on("drain", more);
    worker.on("message", (message: ExportMessage) => {
      if (done) return;
      if (message.type === "chunk") {
        if (!res.headersSent) res.writeHead(200, headers);
        this.stats.chunks += 1;
        this.stats.largestChunk = Math.max(this.stats.largestChunk, message.text.length);
        const taken = res.write(message.text);
        this.stats.mostQueued = Math.max(this.stats.mostQueued, res.writableLength);
        if (taken) more();
        else
          stall = setTimeout(
            () => abort(`the client took nothing for ${EXPORT_STALL_MS / 1000} s`),
            EXPORT_STALL_MS,
          );
      } else if (message.type === "end") {
        done = true;
        this.stats.finished += 1;
        if (!res.headersSent) res.writeHead(200, headers);
        res.end();
        this.logger.info(
          { filename, records: message.count },
          `records export ${filename}: ${message.count} records`,
        );
      } else if (!res.headersSent) {
        done = true;
        reply(res, message.status, `${message.message}\n`);
      } else abort(message.message);
    });
    worker.on("error", (err) => {
      this.logger.error({ err }, `records export ${filename}: its thread failed`);
      if (!done && !res.headersSent) {
        done = true;
        reply(res, 503, `the export failed: ${err.message}\n`);
      } else abort("its thread failed");
    });
    worker.on("exit", () => {
      this.exports.delete(worker);
      clearTimeout(stall);
      if (!done) abort("its thread exited");
    });
  }

  /** A record's PNG: its path from the database, the file read here (asynchronously: the event loop goes on). */
  private async file(res: ServerResponse, record: number, which: "image" | "map"): Promise<void> {
    const answer = await this.query({ id: this.nextId++, kind: "file", record, which });
    if (!answer.ok) {
      reply(res, answer.status, `${answer.message}\n`);
      return;
    }
    const dir = path.resolve(this.config.dir);
    const file = path.resolve(dir, String(answer.body));
    // the path comes from the database: still, nothing outside the records directory is served
    if (!file.startsWith(`${dir}${path.sep}`)) {
      reply(res, 404, `record ${record}: its ${which} lies outside the records directory\n`);
      return;
    }
    // a record's image never changes once written
    const what = `record ${record}: ${which} ${String(answer.body)}`;
    await replyPngFile(res, file, what, "private, max-age=86400, immutable");
  }

  private query(request: QueryRequest): Promise<QueryReply> {
    const worker = this.thread();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(request.id);
        resolve({
          id: request.id,
          ok: false,
          status: 503,
          message: `the query took over ${QUERY_TIMEOUT_MS / 1000} s`,
        });
      }, QUERY_TIMEOUT_MS);
      this.pending.set(request.id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      worker.postMessage(request);
    });
  }

  private thread(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(new URL("./records-query-worker.js", import.meta.url), {
      workerData: { file: path.join(this.config.dir, RECORDS_DB) },
    });
    worker.unref();
    worker.on("message", (answer: QueryReply) => {
      const resolve = this.pending.get(answer.id);
      this.pending.delete(answer.id);
      resolve?.(answer);
    });
    worker.on("error", (err) => this.logger.error({ err }, "the records query thread failed"));
    worker.on("exit", () => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, resolve] of this.pending) {
        resolve({ id, ok: false, status: 503, message: "the records query thread exited" });
      }
      this.pending.clear();
    });
    this.worker = worker;
    return worker;
  }
}
