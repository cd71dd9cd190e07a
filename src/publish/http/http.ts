/**
 * Metrics, health and the web console over HTTP with node:http (a handful of fixed routes need no framework):
 *
 * - `GET /metrics`: Prometheus text exposition of {@link LineMetrics};
 * - `GET /healthz`: 200 whenever the process serves HTTP at all (liveness);
 * - `GET /readyz`: 200 when `snapshot().ready` (model loaded, frames flowing: the watchdog's rule), with what a
 *   ready node lacks (the broker) in the body; else 503 with the reason in the body (readiness);
 * - with `http.console.enabled`, `/` and `/api/...`: the {@link WebConsole}.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { CollectionConfig, HttpConfig, RecordsConfig } from "../../config/index.js";
import { errorMessage, StpmdError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import type { InspectionResult } from "../../core/result.js";
import type { AuditStore } from "../audit.js";
import { CommandExecutor } from "../commands.js";
import type { LineControl, NodeSnapshot } from "../control.js";
import { reviewHealth } from "../review/counts.js";
import { ReviewService } from "../review/review.js";
import type { ResultBatch, ResultSink, SinkHealth } from "../sink.js";
import { AuditApi } from "./audit-routes.js";
import { CandidatesApi } from "./candidates-routes.js";
import { WebConsole } from "./console.js";
import { reply } from "./http-reply.js";
import { LineMetrics } from "./metrics.js";
import { Operators } from "./operators.js";
import { RecordsApi } from "./records-routes.js";
import { ReviewRoutes } from "./review-routes.js";

const ROUTES = ["/metrics", "/healthz", "/readyz"] as const;

/**
 * Why the daemon is not ready, from what the snapshot shows, for the 503 body and a human reading it. Readiness
 * means parts passing the station are inspected; the reasons are checked from the most basic up.
 */
export function notReadyReason(snapshot: NodeSnapshot): string {
  const states = snapshot.cameras.map((cam) => `${cam.id}: ${cam.state}`).join(", ");
  const enabled = snapshot.cameras.filter((cam) => cam.enabled);
  // Checked before the models: a disabled camera loads no model, so with every camera disabled none is loaded.
  if (enabled.length === 0) {
    const ids = snapshot.cameras.map((cam) => cam.id).join(", ");
    return `every camera is disabled (${ids}): nothing is inspected until one is enabled`;
  }
  const withoutModel = enabled.filter((cam) => cam.model_version === null);
  if (snapshot.models.length === 0 || withoutModel.length === enabled.length) {
    const which = withoutModel.map((cam) => `${cam.id}: ${cam.bundle}`).join(", ");
    return which === "" ? "no model loaded" : `no model loaded (${which}); the log says why it does not load`;
  }
  if (!enabled.some((cam) => cam.state === "streaming")) return `no camera is streaming (${states})`;
  if (snapshot.inspected === 0) return `no frame inspected yet (${states})`;
  return `frames are not flowing through inference (${states})`;
}

/**
 * What a ready node lacks that does not stop it inspecting, for the 200 body: a broker outage (defect events wait
 * in the outbox on disk and go out when it is back) or a Sparkplug session that is down. The gauges carry the same.
 */
export function readyNotes(snapshot: NodeSnapshot): string[] {
  const { broker, sparkplug } = snapshot.connections;
  const notes: string[] = [];
  if (broker === false) {
    notes.push(
      `the MQTT broker is not connected (${snapshot.outbox.queued} defect events wait in the outbox)`,
    );
  }
  if (sparkplug !== null && !sparkplug.connected) notes.push("the Sparkplug session is down");
  return notes;
}

function listenProblem(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "EADDRINUSE":
      return "the port is in use by another process; set http.port to a free one";
    case "EADDRNOTAVAIL":
      return "this host has no such address; set http.bind to one of its addresses or 0.0.0.0";
    case "EACCES":
      return "permission denied (ports below 1024 need privileges); use a port above 1023";
    default:
      return errorMessage(err);
  }
}

export interface HttpInterfaceOptions {
  config: HttpConfig;
  control: LineControl;
  logger: Logger;
  /** Also export prom-client's process metrics (default true). */
  processMetrics?: boolean;
  /** The command executor shared with MQTT commands (default: one of its own). */
  executor?: CommandExecutor;
  /** The part record to serve under `/api/records` (none: those routes are not served). */
  records?: RecordsConfig;
  /**
   * Where false alarms join the camera's normal set (`collection.dir`); with `records` (enabled) and the console,
   * the review labels are served (`/api/records/<id>/label`, `/api/review/counts`).
   */
  collection?: CollectionConfig;
  /**
   * The audit log: served under `/api/audit`, and every label is appended to it (without one, labels are refused:
   * no unaudited change).
   */
  audit?: AuditStore;
}

/** The HTTP sink: metrics, health and the console, a live view (nothing is held for a scraper that is away). */
export class HttpInterface implements ResultSink {
  readonly name = "http";
  readonly durable = false;
  readonly metrics: LineMetrics;
  private readonly config: HttpConfig;
  private readonly control: LineControl;
  private readonly logger: Logger;
  private readonly server: Server;
  private readonly console: WebConsole | undefined;
  /** Who may change state over HTTP (with the console). */
  private readonly operators: Operators | undefined;
  private readonly records: RecordsApi | undefined;
  private readonly review: ReviewService | undefined;
  private readonly reviewRoutes: ReviewRoutes | undefined;
  private readonly audit: AuditApi | undefined;
  private readonly candidates: CandidatesApi;

  constructor(options: HttpInterfaceOptions) {
    this.config = options.config;
    this.control = options.control;
    this.logger = options.logger.child({ component: "http" });
    this.metrics = new LineMetrics(options.control, {
      ...(options.processMetrics !== undefined ? { processMetrics: options.processMetrics } : {}),
    });
    if (this.config.console.enabled) {
      this.operators = new Operators({
        config: this.config.console,
        logger: options.logger,
        registry: this.metrics.registry,
      });
      this.console = new WebConsole({
        operators: this.operators,
        config: this.config.console,
        control: this.control,
        executor: options.executor ?? new CommandExecutor(this.control, options.logger),
        registry: this.metrics.registry,
      });
    }
    if (options.records !== undefined) this.records = new RecordsApi(options.records, this.logger);
    if (options.records?.enabled && options.collection !== undefined && this.operators !== undefined) {
      this.review = new ReviewService({
        records: options.records,
        collection: options.collection,
        audit: options.audit,
        logger: options.logger,
        registry: this.metrics.registry,
      });
      this.reviewRoutes = new ReviewRoutes(this.review, this.operators);
    }
    if (options.audit !== undefined) this.audit = new AuditApi(options.audit, this.logger);
    this.candidates = new CandidatesApi(this.control, this.logger);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, req.url, err));
    });
  }

  /** Where the server listens (after start). */
  get address(): AddressInfo {
    const address = this.server.address();
    if (address === null || typeof address === "string") throw new Error("HttpInterface is not listening");
    return address;
  }

  /** The routes served, for the log and the 404 message. */
  private get routes(): readonly string[] {
    return [
      ...ROUTES,
      ...(this.records ? RecordsApi.ROUTES : []),
      ...(this.reviewRoutes ? ReviewRoutes.ROUTES : []),
      ...(this.audit ? AuditApi.ROUTES : []),
      ...CandidatesApi.ROUTES,
      ...(this.console ? WebConsole.ROUTES : []),
    ];
  }

  async start(): Promise<void> {
    const { bind, port } = this.config;
    this.operators?.start();
    this.console?.start();
    await this.review?.start();
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.console?.stop();
        reject(
          new StpmdError(
            "ERR_CONFIG_INVALID",
            `http: cannot listen on ${bind}:${port}: ${listenProblem(err)}`,
            {
              cause: err,
            },
          ),
        );
      };
      this.server.once("error", onError);
      this.server.listen(port, bind, () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.logger.error({ err }, "HTTP server error"));
        this.logger.info(
          { bind, port: this.address.port, routes: this.routes },
          this.console ? "serving metrics, health and the console" : "serving metrics and health",
        );
        resolve();
      });
    });
  }

  /** Closes the listener and every open connection (a scraper's keep-alive one would hold close() for seconds). */
  async stop(): Promise<void> {
    this.console?.stop();
    this.records?.stop();
    await this.review?.stop();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  deliver(batch: ResultBatch): void {
    this.onBatch(batch.results.length, batch.inferenceMs);
    for (const result of batch.results) this.onResult(result);
  }

  health(): SinkHealth {
    const health: SinkHealth = this.server.listening ? { ok: true } : { ok: false, detail: "not listening" };
    return this.review ? { ...health, cameras: reviewHealth(this.review.labelCounts()) } : health;
  }

  onResult(result: InspectionResult): void {
    this.metrics.onResult(result);
    this.console?.onResult(result);
  }

  onBatch(size: number, inferenceMs: number): void {
    this.metrics.onBatch(size, inferenceMs);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?", 1)[0]!;
    if (this.reviewRoutes?.serves(path)) {
      await this.reviewRoutes.handle(req, res, path);
      return;
    }
    if (this.records?.serves(path)) {
      await this.records.handle(req, res, path);
      return;
    }
    if (this.audit?.serves(path)) {
      await this.audit.handle(req, res);
      return;
    }
    if (this.candidates.serves(path)) {
      await this.candidates.handle(req, res, path);
      return;
    }
    if (this.console?.serves(path)) {
      await this.console.handle(req, res, path);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      reply(res, 405, `method ${req.method} not allowed; use GET\n`, { Allow: "GET, HEAD" });
      return;
    }
    switch (path) {
      case "/metrics": {
        const body = await this.metrics.render();
        reply(res, 200, body, { "Content-Type": this.metrics.contentType });
        return;
      }
      case "/healthz":
        reply(res, 200, "ok\n");
        return;
      case "/readyz": {
        const snapshot = this.control.snapshot();
        if (snapshot.ready) {
          const notes = readyNotes(snapshot);
          reply(res, 200, notes.length === 0 ? "ready\n" : `ready; ${notes.join("; ")}\n`);
        } else reply(res, 503, `not ready: ${notReadyReason(snapshot)}\n`);
        return;
      }
      default:
        reply(res, 404, `not found: ${path} (routes: ${this.routes.join(", ")})\n`);
    }
  }

  private fail(res: ServerResponse, url: string | undefined, err: unknown): void {
    this.logger.error({ url, err }, "HTTP request failed");
    if (res.headersSent) res.destroy();
    else reply(res, 500, `internal error: ${errorMessage(err)}\n`);
  }
}
