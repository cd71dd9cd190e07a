/**
 * The web console, served by the HTTP interface: a page per node (`/`) that shows every camera's live score, its
 * last frame and last defect with the anomaly heatmap, and the node's state, and lets an operator change what the
 * commands change. Its API:
 *
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
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Counter, Gauge, type Registry } from "prom-client";
import { readPasswordFile } from "../../config/files.js";
import type { ConsoleConfig } from "../../config/index.js";
import { StpmdError } from "../../core/errors.js";
import type { Frame } from "../../core/frame.js";
import type { Logger } from "../../core/log.js";
import { defectiveFlag, type InspectionResult, type Region, type Verdict } from "../../core/result.js";
import { renderSnapshot } from "../../data/snapshot.js";
import { type CommandExecutor, MAX_REQUEST_BYTES } from "../commands.js";
import type { LineControl } from "../control.js";
import { CONSOLE_ASSETS } from "./console-page.js";
import { reply } from "./http-reply.js";

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
/** The console page's own login sends this header, so that a refusal does not open the browser's login dialog. */
const PAGE_HEADER = "x-stpmd-console";

/**
 * Wrong passwords from one client address before that address is refused without a check, for
 * {@link LOGIN_LOCKOUT_MS}: enough for an operator's typos, few enough that guessing takes years.
 */
export const MAX_FAILED_LOGINS = 5;
export const LOGIN_LOCKOUT_MS = 60_000;
/** Client addresses whose failures are remembered; beyond this the longest-untouched one is forgotten. */
const MAX_TRACKED_CLIENTS = 1024;

/**
 * Failed logins per client address: the {@link MAX_FAILED_LOGINS}th failure within {@link LOGIN_LOCKOUT_MS} of
 * the first locks the address out for {@link LOGIN_LOCKOUT_MS}; a good login clears its record.
 */
export class LoginGuard {
  private readonly clients = new Map<string, { failures: number; first: number; lockedUntil: number }>();

  constructor(
    private readonly maxFailures = MAX_FAILED_LOGINS,
    private readonly lockoutMs = LOGIN_LOCKOUT_MS,
  ) {}

  /** Milliseconds `client` stays locked out, or 0. */
  lockedFor(client: string, now = Date.now()): number {
    const record = this.clients.get(client);
    if (record === undefined) return 0;
    if (record.lockedUntil > now) return record.lockedUntil - now;
    if (record.lockedUntil > 0 || now - record.first > this.lockoutMs) this.clients.delete(client);
    return 0;
  }

  /** Records a failed login; true when this one locks the address out. */
  failed(client: string, now = Date.now()): boolean {
    let record = this.clients.get(client);
    if (record === undefined || now - record.first > this.lockoutMs)
      record = { failures: 0, first: now, lockedUntil: 0 };
    record.failures += 1;
    if (record.failures >= this.maxFailures) record.lockedUntil = now + this.lockoutMs;
    this.clients.delete(client); // re-inserted last: the Map's order is the eviction order
    this.clients.set(client, record);
    if (this.clients.size > MAX_TRACKED_CLIENTS) this.clients.delete(this.clients.keys().next().value!);
    return record.lockedUntil > 0;
  }

  succeeded(client: string): void {
    this.clients.delete(client);
  }

  /** Addresses remembered (bounded by MAX_TRACKED_CLIENTS). */
  get size(): number {
    return this.clients.size;
  }
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
  capture_ts: number;
  /** Null when the score was not a finite number (verdict `error`). */
  score: number | null;
  threshold: number;
  verdict: Verdict;
  /** Null when the frame could not be judged (verdict `error`). */
  defective: boolean | null;
  regions: number;
  part_id?: string;
}

export interface WebConsoleOptions {
  config: ConsoleConfig;
  control: LineControl;
  executor: CommandExecutor;
  logger: Logger;
  /** The HTTP interface's metrics registry: the console adds its own series to it. */
  registry: Registry;
}

type ImageKind = "last" | "defect";

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

export class WebConsole {
  private readonly config: ConsoleConfig;
  private readonly control: LineControl;
  private readonly executor: CommandExecutor;
  private readonly logger: Logger;
  /** user name → sha256 of the password, read from the password files at start. */
  private passwords = new Map<string, Buffer>();
  private readonly streams = new Set<EventStream>();
  private readonly frames = new Map<string, Record<ImageKind, KeptFrame | undefined>>();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly logins = new LoginGuard();
  private readonly eventsMissed: Counter;
  private readonly loginsRefused: Counter;

  constructor(options: WebConsoleOptions) {
    this.config = options.config;
    this.control = options.control;
    this.executor = options.executor;
    this.logger = options.logger.child({ component: "console" });
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
    this.loginsRefused = new Counter({
      name: "stpmd_console_logins_refused_total",
      help: "Console commands refused: a wrong or missing user name or password, or a locked-out client address.",
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
  ];

  /** Reads the operators' password files; a missing or empty one stops the start with its file named. */
  start(): void {
    const passwords = new Map<string, Buffer>();
    for (const user of this.config.users) {
      try {
        passwords.set(user.username, sha256(readPasswordFile(user.password_file)));
      } catch (err) {
        throw new StpmdError(
          "ERR_CONFIG_INVALID",
          `http.console.users: user "${user.username}": ${(err as Error).message}`,
        );
      }
    }
    this.passwords = passwords;
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
    return path === "/" || Object.hasOwn(CONSOLE_ASSETS, path) || path.startsWith("/api/");
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
      capture_ts: frame.captureTs,
      score: Number.isFinite(result.score) ? result.score : null,
      threshold: result.threshold,
      verdict: result.verdict,
      defective: defectiveFlag(result.verdict),
      regions: result.regions.length,
      ...(frame.partId !== undefined ? { part_id: frame.partId } : {}),
    };
    this.broadcast(`event: result\ndata: ${JSON.stringify(event)}\n\n`);
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? "GET";
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
    if (path === "/" || Object.hasOwn(CONSOLE_ASSETS, path)) {
      const asset = CONSOLE_ASSETS[path === "/" ? "/index.html" : path]!;
      reply(res, 200, asset.body, {
        "Content-Type": asset.type,
        "Cache-Control": "no-cache",
        // the page loads only its own script and style and talks only to this server
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
      });
      return;
    }
    if (path === "/api/status") {
      const body = { ...this.control.snapshot(), console: { operators: this.passwords.size > 0 } };
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
    const client = req.socket.remoteAddress ?? "?";
    if (this.passwords.size === 0) {
      reply(res, 403, "the console is read-only: no http.console.users are configured\n");
      return;
    }
    const claimed = basicCredentials(req.headers.authorization)?.user;
    const lockedMs = this.logins.lockedFor(client);
    if (lockedMs > 0) {
      this.loginsRefused.inc();
      const seconds = Math.ceil(lockedMs / 1000);
      reply(res, 429, `too many failed logins from ${client}; try again in ${seconds} s\n`, {
        "Retry-After": String(seconds),
      });
      return;
    }
    const user = this.authenticate(req);
    if (user === undefined) {
      this.loginsRefused.inc();
      // a request without credentials is a client asking how to log in, not a guess
      const locked = claimed !== undefined && this.logins.failed(client);
      this.logger.warn({ user: claimed, client, command: name }, "console login refused");
      if (locked) {
        this.logger.warn(
          { client, failures: MAX_FAILED_LOGINS, lockout_s: LOGIN_LOCKOUT_MS / 1000 },
          "console logins from this client refused for a while",
        );
      }
      // the page's own form handles a refusal; anyone else gets the standard challenge
      const challenge: Record<string, string> =
        req.headers[PAGE_HEADER] === undefined
          ? { "WWW-Authenticate": 'Basic realm="stpmd", charset="UTF-8"' }
          : {};
      reply(res, 401, "wrong or missing user name or password\n", challenge);
      return;
    }
    this.logins.succeeded(client);
    const refusal = crossSiteRefusal(req);
    if (refusal !== undefined) {
      this.logger.warn(
        { user, client, command: name, origin: req.headers.origin },
        "console request refused",
      );
      reply(res, 403, `${refusal}\n`);
      return;
    }
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

  /** The user name whose password the request carries, or undefined. Compares digests in constant time. */
  private authenticate(req: IncomingMessage): string | undefined {
    const credentials = basicCredentials(req.headers.authorization);
    if (credentials === undefined) return undefined;
    const expected = this.passwords.get(credentials.user);
    const given = sha256(credentials.password);
    // an unknown user costs the same comparison as a known one
    const match = timingSafeEqual(given, expected ?? sha256(`${credentials.password}-`));
    return match && expected !== undefined ? credentials.user : undefined;
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

function basicCredentials(header: string | undefined): { user: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? "");
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Why a state-changing request may come from another site's page, or undefined. A browser sends `Origin` with
 * every cross-origin POST and lets a page set `Content-Type: application/json` only after a CORS preflight, which
 * this server never grants: so either check alone stops a forged form post carrying cached Basic credentials.
 */
function crossSiteRefusal(req: IncomingMessage): string | undefined {
  const type = (req.headers["content-type"] ?? "").split(";", 1)[0]!.trim().toLowerCase();
  if (type !== "application/json") return "a command needs Content-Type: application/json";
  const origin = req.headers.origin;
  if (origin === undefined || origin === "null")
    return origin === "null" ? "requests from an opaque origin are refused" : undefined;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return `bad Origin header ${JSON.stringify(origin)}`;
  }
  return host === req.headers.host ? undefined : `cross-site request from ${origin} refused`;
}

/** The request body, or undefined once it passes `limit` bytes (the rest is not read). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        resolve(undefined);
        req.pause();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
