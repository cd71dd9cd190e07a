/**
 * The web console, served by the HTTP interface: a page per node (`/`, built from `web/console/` into
 * `dist/console/` by `npm run build`; docs/console.md) with live cameras, the review queue, a part's page, history
 * and the audit log. Its API:
 *
 * - `POST`/`GET`/`DELETE /api/session`: log in, who is logged in, log out (cookie sessions: {@link Operators});
 * - `GET /api/status`: the control's snapshot (what the MQTT `status` command answers);
 * - `GET /api/events`: Server-Sent Events, one `result` event per inspected frame (bounded per stream: a client
 *   that does not keep up misses events, which are counted and announced to it in a `gap` event);
 * - `GET /api/cameras/<id>/last.jpg`, `.../defect.jpg`: the camera's last frame, or last defective frame, with the
 *   heatmap and region outlines (the MQTT snapshot's rendering), at most {@link IMAGE_MAX_SIDE} pixels long;
 * - `POST /api/command/<name>`: the MQTT commands (same names, keys and responses; one shared executor), behind
 *   HTTP Basic authentication against `http.console.users`. Every change is logged by the control with the user.
 *
 * Viewing needs no login, like `/metrics` (the same trust statement: bind to loopback or a trusted network).
 */
import { type Dirent, readdirSync, readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Counter, Gauge, type Registry } from "prom-client";
import type { ConsoleConfig } from "../../config/index.js";
import type { Frame } from "../../core/frame.js";
import { defectiveFlag, type InspectionResult, type Region, type Verdict } from "../../core/result.js";
import { jsonTime } from "../../core/time.js";
import { renderSnapshot } from "../../data/snapshot.js";
import { type CommandExecutor, MAX_REQUEST_BYTES } from "../commands.js";
import type { LineControl, NodeSnapshot } from "../control.js";
import { reply } from "./http-reply.js";
import { type Operators, readBody } from "./operators.js";

/** Longest side of a console image: a card shows it at about 400 px; 640 keeps a small defect visible. */
export const IMAGE_MAX_SIDE = 640;
const IMAGE_QUALITY = 80;
/**
 * Bytes an event stream may hold unsent before further events skip it. A result event is ~200 bytes, so this is
 * a few hundred events: seconds of a slow link, never the daemon's memory.
 */
export const MAX_STREAM_BUFFER_BYTES = 64 * 1024;
/** A comment line this often keeps proxies and browsers from closing an idle stream. */
const HEARTBEAT_MS = 15_000;

/**
 * The built page: `dist/console/` beside `dist/src/`, found from this module's own place so that an installed
 * package serves its own copy (nothing is fetched from elsewhere at run time).
 */
export const CONSOLE_DIR = fileURLToPath(new URL("../../../console/", import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
};

interface Asset {
  type: string;
  body: Buffer;
  /** Whether the name carries a hash of the content (Vite's `assets/name-<hash>.ext`): cacheable for good. */
  hashed: boolean;
}

/**
 * Every file of the built page by URL path, read once (a few tens of KB). An unbuilt checkout has none: `/` then
 * says how to build it instead of failing the daemon.
 */
export function loadConsoleAssets(dir = CONSOLE_DIR): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const walk = (sub: string): void => {
    let entries: Dirent[];
    try {
      entries = readdirSync(path.join(dir, sub), { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const rel = path.posix.join(sub, entry.name);
      if (entry.isDirectory()) walk(rel);
      else if (entry.isFile()) {
        const type = CONTENT_TYPES[path.extname(entry.name)] ?? "application/octet-stream";
        const body = readFileSync(path.join(dir, rel));
        assets.set(`/${rel}`, { type, body, hashed: rel.startsWith("assets/") });
      }
    }
  };
  walk("");
  return assets;
}

/** What the console keeps of a camera's frame to draw it on request: references, not copies. */
interface KeptFrame {
  /** The frame without its full-size original, which collection may have attached and the console never shows. */
  frame: Frame;
  map: Float32Array;
  threshold: number;
  regions: Region[];
  rendered?: Promise<Buffer>;
}

interface EventStream {
  res: ServerResponse;
  /** Events this stream missed since its last delivered one. */
  missed: number;
}

/** The `result` event: what the page draws per frame. */
export interface ConsoleResultEvent {
  camera: string;
  seq: number;
  /** Capture time, ISO 8601 UTC with milliseconds, as every time in the JSON interfaces. */
  capture_ts: string;
  /** Null when the score was not a finite number (verdict `error`). */
  score: number | null;
  threshold: number;
  verdict: Verdict;
  /** Null when the frame could not be judged (verdict `error`). */
  defective: boolean | null;
  regions: number;
  part_id?: string;
  /** The recipe the frame was judged under; absent: the camera's own settings. */
  recipe?: string;
}

/** `GET /api/status`: the control's snapshot and what the console needs to know of itself. */
export type ConsoleStatus = NodeSnapshot & { console: { operators: boolean } };

export interface WebConsoleOptions {
  config: ConsoleConfig;
  control: LineControl;
  executor: CommandExecutor;
  /** The HTTP interface's metrics registry: the console adds its own series to it. */
  registry: Registry;
  /** Who may change state: authenticates the console's commands. */
  operators: Operators;
}

type ImageKind = "last" | "defect";

export class WebConsole {
  private readonly config: ConsoleConfig;
  private readonly control: LineControl;
  private readonly executor: CommandExecutor;
  private readonly operators: Operators;
  private readonly streams = new Set<EventStream>();
  private readonly frames = new Map<string, Record<ImageKind, KeptFrame | undefined>>();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly eventsMissed: Counter;
  private assets = new Map<string, Asset>();

  constructor(options: WebConsoleOptions) {
    this.config = options.config;
    this.control = options.control;
    this.executor = options.executor;
    this.operators = options.operators;
    const registers = [options.registry];
    const streams = this.streams;
    new Gauge({
      name: "stpmd_console_streams",
      help: "Console event streams open.",
      registers,
      collect() {
        this.set(streams.size);
      },
    });
    this.eventsMissed = new Counter({
      name: "stpmd_console_events_missed_total",
      help: "Result events not sent to a console stream because it was not keeping up.",
      registers,
    });
  }

  /** The paths this console answers (for the HTTP interface's routing and its 404 message). */
  static readonly ROUTES = [
    "/",
    "/api/status",
    "/api/events",
    "/api/cameras/<id>/{last,defect}.jpg",
    "/api/command/<name>",
    "/api/session",
  ];

  start(): void {
    this.assets = loadConsoleAssets();
    this.heartbeat = setInterval(() => this.broadcast(": keep-alive\n\n", false), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  stop(): void {
    clearInterval(this.heartbeat);
    for (const stream of this.streams) stream.res.end();
    this.streams.clear();
  }

  /** Whether `path` is the console's. */
  serves(path: string): boolean {
    return path === "/" || this.assets.has(path) || path.startsWith("/api/");
  }

  onResult(result: InspectionResult): void {
    const { original: _, ...frame } = result.frame;
    const kept: KeptFrame = { frame, map: result.map, threshold: result.threshold, regions: result.regions };
    const slot = this.frames.get(frame.cameraId) ?? { last: undefined, defect: undefined };
    slot.last = kept;
    if (result.verdict === "defect") slot.defect = kept;
    this.frames.set(frame.cameraId, slot);
    if (this.streams.size === 0) return;
    const event: ConsoleResultEvent = {
      camera: frame.cameraId,
      seq: frame.seq,
      capture_ts: jsonTime(frame.captureTs),
      score: Number.isFinite(result.score) ? result.score : null,
      threshold: result.threshold,
      verdict: result.verdict,
      defective: defectiveFlag(result.verdict),
      regions: result.regions.length,
      ...(frame.partId !== undefined ? { part_id: frame.partId } : {}),
      ...(frame.recipe !== undefined ? { recipe: frame.recipe } : {}),
    };
    this.broadcast(`event: result\ndata: ${JSON.stringify(event)}\n\n`);
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? "GET";
    if (path === "/api/session") {
      await this.operators.handleSession(req, res);
      return;
    }
    if (path.startsWith("/api/command/")) {
      if (method !== "POST") {
        reply(res, 405, `method ${method} not allowed; use POST\n`, { Allow: "POST" });
        return;
      }
      const name = decoded(path.slice("/api/command/".length));
      if (name === undefined) reply(res, 400, `bad percent-encoding in ${path}\n`);
      else await this.command(req, res, name);
      return;
    }
    if (method !== "GET" && method !== "HEAD") {
      reply(res, 405, `method ${method} not allowed; use GET\n`, { Allow: "GET, HEAD" });
      return;
    }
    if (path === "/" || this.assets.has(path)) {
      this.page(res, path);
      return;
    }
    if (path === "/api/status") {
      const body: ConsoleStatus = {
        ...this.control.snapshot(),
        console: { operators: this.operators.configured },
      };
      reply(res, 200, JSON.stringify(body), { "Content-Type": "application/json" });
      return;
    }
    if (path === "/api/events") {
      this.openStream(req, res);
      return;
    }
    const image = /^\/api\/cameras\/([^/]+)\/(last|defect)\.jpg$/.exec(path);
    const camera = image ? decoded(image[1]!) : undefined;
    if (image && camera !== undefined) {
      await this.image(res, camera, image[2] as ImageKind);
      return;
    }
    reply(res, 404, `not found: ${path} (console routes: ${WebConsole.ROUTES.join(", ")})\n`);
  }

  /** A file of the built page; `/` is its index.html. */
  private page(res: ServerResponse, path: string): void {
    const asset = this.assets.get(path === "/" ? "/index.html" : path);
    if (asset === undefined) {
      reply(res, 503, `the console's page is not built (no ${CONSOLE_DIR}index.html): run npm run build\n`);
      return;
    }
    res.writeHead(200, {
      "Content-Type": asset.type,
      "Content-Length": asset.body.length,
      // a hashed file never changes under its name; the index names the current ones, so it is never kept
      "Cache-Control": asset.hashed ? "public, max-age=31536000, immutable" : "no-store",
      // the page loads only its own script and style and talks only to this server
      "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
      "X-Content-Type-Options": "nosniff",
    });
    res.end(res.req.method === "HEAD" ? undefined : asset.body);
  }

  private openStream(req: IncomingMessage, res: ServerResponse): void {
    if (this.streams.size >= this.config.max_clients) {
      reply(
        res,
        503,
        `too many console streams (${this.streams.size}); close another console or raise http.console.max_clients\n`,
      );
      return;
    }
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      "X-Accel-Buffering": "no", // nginx would otherwise hold events back
    });
    res.flushHeaders();
    const stream: EventStream = { res, missed: 0 };
    this.streams.add(stream);
    req.socket.setNoDelay(true);
    res.write("retry: 2000\n\n");
    const close = () => this.streams.delete(stream);
    res.on("close", close);
    res.on("error", close);
  }

  /**
   * Writes to every stream that keeps up; a stream holding more than the bound misses this one (an event is counted,
   * a keep-alive is not: a stream that full is not idle).
   */
  private broadcast(text: string, isEvent = true): void {
    for (const stream of this.streams) {
      if (stream.res.writableLength > MAX_STREAM_BUFFER_BYTES) {
        if (isEvent) {
          stream.missed += 1;
          this.eventsMissed.inc();
        }
        continue;
      }
      if (stream.missed > 0) {
        stream.res.write(`event: gap\ndata: ${JSON.stringify({ missed: stream.missed })}\n\n`);
        stream.missed = 0;
      }
      stream.res.write(text);
    }
  }

  private async image(res: ServerResponse, camera: string, kind: ImageKind): Promise<void> {
    const known = this.control.snapshot().cameras.map((cam) => cam.id);
    if (!known.includes(camera)) {
      reply(res, 404, `unknown camera ${JSON.stringify(camera)} (known: ${known.join(", ")})\n`);
      return;
    }
    const kept = this.frames.get(camera)?.[kind];
    if (kept === undefined) {
      const what = kind === "last" ? "no frame inspected yet" : "no defect since start";
      reply(res, 404, `camera ${JSON.stringify(camera)}: ${what}\n`);
      return;
    }
    // one rendering per kept frame, shared by every console asking for it
    kept.rendered ??= renderSnapshot(kept.frame, kept.map, kept.threshold, {
      quality: IMAGE_QUALITY,
      maxSide: IMAGE_MAX_SIDE,
      regions: kept.regions,
    });
    // a failed rendering is not kept: the next request tries again
    const jpeg = await kept.rendered.catch((err: unknown) => {
      kept.rendered = undefined;
      throw err;
    });
    res.writeHead(200, {
      "Content-Type": "image/jpeg",
      "Content-Length": jpeg.length,
      "Cache-Control": "no-store",
      "X-Stpmd-Seq": String(kept.frame.seq),
    });
    res.end(res.req.method === "HEAD" ? undefined : jpeg);
  }

  private async command(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    const user = this.operators.authorize(req, res, `command ${name}`);
    if (user === undefined) return;
    const body = await readBody(req, MAX_REQUEST_BYTES);
    if (body === undefined) {
      reply(res, 413, `request body over ${MAX_REQUEST_BYTES} bytes\n`, { Connection: "close" });
      return;
    }
    const response = await this.executor.execute(name, body, { via: "http", user });
    reply(res, response.status === "ok" ? 200 : 400, JSON.stringify(response), {
      "Content-Type": "application/json",
    });
  }
}

/** A path segment without its percent-encoding, or undefined when that is malformed. */
function decoded(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
