/**
 * The part record over HTTP (docs/records.md, docs/records-openapi.json):
 *
 * - `GET /api/records`: records filtered by camera, time, verdict, score, part id, model version and label, newest
 *   first, a page at a time (`limit`, `cursor`);
 * - `GET /api/records/hourly`: parts per verdict per hour per camera, for shift reports;
 * - `GET /api/records/<id>/image.png`, `.../map.png`: a record's frame and its anomaly map.
 *
 * Parameters are validated against the TypeBox definitions in `records-api.ts` (the same ones the OpenAPI file is
 * written from); a bad one is a 400 naming it. Queries run on a thread of their own (records-query-worker.ts).
 * Reading needs no login, like the metrics and the console's views.
 */
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { Worker } from "node:worker_threads";
import type { TSchema } from "@sinclair/typebox";
import { Ajv, type ValidateFunction } from "ajv";
import type { RecordsConfig } from "../../config/index.js";
import type { Logger } from "../../core/log.js";
import { RECORDS_DB } from "../record-store.js";
import { HourlyQuerySchema, RecordsQuerySchema } from "../records-api.js";
import { reply } from "./http-reply.js";
import type { QueryReply, QueryRequest } from "./records-query-worker.js";

const FILE_ROUTE = /^\/api\/records\/([0-9]{1,15})\/(image|map)\.png$/;

/** A query not answered in this long is given up with a 503 (the thread goes on with it). */
const QUERY_TIMEOUT_MS = 30_000;

export class RecordsApi {
  static readonly ROUTES = ["/api/records", "/api/records/hourly", "/api/records/<id>/{image,map}.png"];
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, (reply: QueryReply) => void>();
  private readonly validators: Record<"records" | "hourly", ValidateFunction>;

  constructor(
    private readonly config: RecordsConfig,
    private readonly logger: Logger,
  ) {
    // query strings are text: numbers are coerced, defaults filled in, unknown parameters refused
    const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: false, strict: false });
    const compile = (schema: TSchema) => ajv.compile(schema);
    this.validators = { records: compile(RecordsQuerySchema), hourly: compile(HourlyQuerySchema) };
  }

  serves(urlPath: string): boolean {
    return urlPath === "/api/records" || urlPath === "/api/records/hourly" || FILE_ROUTE.test(urlPath);
  }

  stop(): void {
    void this.worker?.terminate();
    this.worker = undefined;
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
    const kind = urlPath === "/api/records" ? "records" : "hourly";
    const params: Record<string, string> = {};
    const search = new URL(req.url ?? "/", "http://localhost").searchParams;
    for (const key of new Set(search.keys())) {
      const values = search.getAll(key);
      if (values.length > 1) {
        reply(res, 400, `parameter ${key}: given ${values.length} times; give it once\n`);
        return;
      }
      params[key] = values[0]!;
    }
    const validate = this.validators[kind];
    if (!validate(params)) {
      const error = validate.errors?.[0];
      const name =
        error?.keyword === "additionalProperties"
          ? String((error.params as { additionalProperty: string }).additionalProperty)
          : (error?.instancePath.slice(1) ?? "");
      const problem =
        error?.keyword === "additionalProperties" ? "is not a parameter of this route" : error?.message;
      reply(res, 400, `parameter ${name}: ${problem}\n`);
      return;
    }
    const answer = await this.query({ id: this.nextId++, kind, query: params } as QueryRequest);
    if (answer.ok) reply(res, 200, JSON.stringify(answer.body), { "Content-Type": "application/json" });
    else reply(res, answer.status, `${answer.message}\n`);
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
    let png: Buffer;
    try {
      png = await readFile(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      reply(
        res,
        code === "ENOENT" ? 404 : 503,
        `record ${record}: ${which} ${String(answer.body)}: ${code ?? "unreadable"}\n`,
      );
      return;
    }
    res.writeHead(200, {
      "Content-Type": "image/png",
      "Content-Length": png.length,
      // a record's image never changes once written
      "Cache-Control": "private, max-age=86400, immutable",
      "X-Content-Type-Options": "nosniff",
    });
    res.end(res.req.method === "HEAD" ? undefined : png);
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
