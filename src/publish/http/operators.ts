/**
 * Who may change state over HTTP: the operators of `http.console.users`, one authentication for every route that
 * changes something (the console's commands, and whatever later routes label, promote or audit). Reading needs no
 * login (the same trust statement as `/metrics`: bind to loopback or a trusted network).
 *
 * Two ways in: the console logs in once (`POST /api/session`) and gets a cookie session with a CSRF token that
 * every change must echo in `X-CSRF-Token`; scripts send HTTP Basic with each request. Sessions live in memory
 * (a restart logs everyone out), expire after `http.console.session_idle_min` unused, and are bounded in number.
 *
 * A route calls {@link Operators.authorize} first; it answers the refusal itself (401, 403 or 429, one line naming
 * the problem) and returns undefined, or returns the operator's name, which the route passes on to the control and
 * the audit log.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Counter, type Registry } from "prom-client";
import { readPasswordFile } from "../../config/files.js";
import type { ConsoleConfig } from "../../config/index.js";
import { StpmdError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { jsonTime } from "../../core/time.js";
import { reply } from "./http-reply.js";

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

/** The session cookie's name. */
export const SESSION_COOKIE = "stpmd_session";
/** The header a session's state-changing request carries its CSRF token in. */
const CSRF_HEADER = "x-csrf-token";
/**
 * Sessions kept at once; a login beyond this ends the longest-unused one. A line has a handful of operators with a
 * few devices each: 256 is far above that and still a bound on what a script logging in in a loop can cost.
 */
export const MAX_SESSIONS = 256;
/** Bytes of a login request's body: a name and a password, far below this. */
const MAX_LOGIN_BYTES = 4096;

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

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** One console login. Kept under the sha256 of its id, so that the map never holds a usable cookie. */
interface Session {
  user: string;
  csrf: string;
  /** Milliseconds since the epoch of its last use: it expires `session_idle_min` after. */
  used: number;
}

/** What `POST` and `GET /api/session` answer. */
export interface SessionInfo {
  user: string;
  csrf_token: string;
  /** ISO 8601: when the session ends unless used before. */
  expires_at: string;
}

export interface OperatorsOptions {
  config: ConsoleConfig;
  logger: Logger;
  /** The HTTP interface's metrics registry: refused logins are counted there. */
  registry: Registry;
  /** The clock (tests move it to expire sessions). */
  now?: () => number;
}

export class Operators {
  private readonly config: ConsoleConfig;
  private readonly logger: Logger;
  /** user name → sha256 of the password, read from the password files at start. */
  private passwords = new Map<string, Buffer>();
  private readonly logins = new LoginGuard();
  private readonly loginsRefused: Counter;
  /** sha256(session id) in hex → session, least recently used first (the Map's order is the eviction order). */
  private readonly sessions = new Map<string, Session>();
  private readonly now: () => number;

  constructor(options: OperatorsOptions) {
    this.config = options.config;
    this.now = options.now ?? Date.now;
    this.logger = options.logger.child({ component: "operators" });
    this.loginsRefused = new Counter({
      name: "stpmd_console_logins_refused_total",
      help: "Console logins and commands refused: a wrong or missing user name or password, an unknown or expired session, or a locked-out client address.",
      registers: [options.registry],
    });
  }

  /** Whether any operator is configured (without one, nothing can be changed over HTTP). */
  get configured(): boolean {
    return this.passwords.size > 0;
  }

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
  }

  /**
   * The operator a state-changing request comes from, or undefined after answering the refusal (no operators
   * configured, locked-out client, wrong or missing credentials, an unknown or expired session, a missing or wrong
   * CSRF token, a request another site's page may have sent). `action` names what was asked, for the log line of a
   * refusal. HTTP Basic wins over a cookie: a script's credentials are checked even from a logged-in browser.
   */
  authorize(req: IncomingMessage, res: ServerResponse, action: string): string | undefined {
    const client = req.socket.remoteAddress ?? "?";
    if (this.refusedUpFront(res, client)) return undefined;
    const basic = basicCredentials(req.headers.authorization);
    const cookie = sessionCookie(req.headers.cookie);
    let user: string | undefined;
    if (basic === undefined && cookie !== undefined) {
      const session = this.session(cookie);
      if (session === undefined) {
        this.loginsRefused.inc();
        this.logger.warn({ client, action }, "console session unknown or expired");
        reply(res, 401, "your login has expired or the daemon restarted; log in again\n");
        return undefined;
      }
      if (!sameSecret(req.headers[CSRF_HEADER], session.csrf)) {
        this.logger.warn(
          { user: session.user, client, action },
          "console request without its CSRF token refused",
        );
        reply(res, 403, "missing or wrong X-CSRF-Token for this session\n");
        return undefined;
      }
      this.renew(res, cookie, session);
      user = session.user;
    } else {
      user = basic === undefined ? undefined : this.authenticate(basic.user, basic.password);
      if (user === undefined) {
        this.refuseLogin(req, res, client, basic?.user, action);
        return undefined;
      }
      this.logins.succeeded(client);
    }
    const refusal = crossSiteRefusal(req);
    if (refusal !== undefined) {
      this.logger.warn({ user, client, action, origin: req.headers.origin }, "console request refused");
      reply(res, 403, `${refusal}\n`);
      return undefined;
    }
    return user;
  }

  /**
   * `/api/session`: `POST` logs in with `{username, password}` (the lockout of a wrong password applies), `GET`
   * answers the session the cookie names (and renews it), `DELETE` logs out.
   */
  async handleSession(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const cookie = sessionCookie(req.headers.cookie);
    if (method === "GET" || method === "HEAD") {
      const session = cookie === undefined ? undefined : this.session(cookie);
      if (cookie === undefined || session === undefined) {
        reply(res, 401, "not logged in\n");
        return;
      }
      this.renew(res, cookie, session);
      this.answerSession(res, session);
      return;
    }
    if (method === "DELETE") {
      if (cookie !== undefined) {
        const user = this.sessions.get(sessionKey(cookie))?.user;
        if (this.sessions.delete(sessionKey(cookie)))
          this.logger.info({ user }, "console operator logged out");
      }
      res.writeHead(204, {
        "Set-Cookie": `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`,
      });
      res.end();
      return;
    }
    if (method !== "POST") {
      reply(res, 405, `method ${method} not allowed; use GET, POST or DELETE\n`, {
        Allow: "GET, POST, DELETE",
      });
      return;
    }
    await this.login(req, res);
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const client = req.socket.remoteAddress ?? "?";
    if (this.refusedUpFront(res, client)) return;
    // a login form posted from another site would log the victim's browser in as the attacker
    const refusal = crossSiteRefusal(req);
    if (refusal !== undefined) {
      reply(res, 403, `${refusal}\n`);
      return;
    }
    const body = await readBody(req, MAX_LOGIN_BYTES);
    if (body === undefined) {
      reply(res, 413, `login body over ${MAX_LOGIN_BYTES} bytes\n`, { Connection: "close" });
      return;
    }
    const credentials = loginBody(body);
    if (typeof credentials === "string") {
      reply(res, 400, `${credentials}\n`);
      return;
    }
    const user = this.authenticate(credentials.username, credentials.password);
    if (user === undefined) {
      this.refuseLogin(req, res, client, credentials.username, "login");
      return;
    }
    this.logins.succeeded(client);
    const id = randomBytes(32).toString("base64url");
    const session: Session = { user, csrf: randomBytes(32).toString("base64url"), used: this.now() };
    this.sessions.set(sessionKey(id), session);
    if (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    this.logger.info({ user, client, sessions: this.sessions.size }, "console operator logged in");
    this.renew(res, id, session);
    this.answerSession(res, session);
  }

  /** Sessions open now (bounded by {@link MAX_SESSIONS}). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Answers the refusals that come before any credential is checked; true when it answered. */
  private refusedUpFront(res: ServerResponse, client: string): boolean {
    if (this.passwords.size === 0) {
      reply(res, 403, "the console is read-only: no http.console.users are configured\n");
      return true;
    }
    const lockedMs = this.logins.lockedFor(client);
    if (lockedMs > 0) {
      this.loginsRefused.inc();
      const seconds = Math.ceil(lockedMs / 1000);
      reply(res, 429, `too many failed logins from ${client}; try again in ${seconds} s\n`, {
        "Retry-After": String(seconds),
      });
      return true;
    }
    return false;
  }

  /** Counts, logs and answers a wrong or missing password (a guess counts towards the client's lockout). */
  private refuseLogin(
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    claimed: string | undefined,
    action: string,
  ): void {
    this.loginsRefused.inc();
    // a request without credentials is a client asking how to log in, not a guess
    const locked = claimed !== undefined && this.logins.failed(client);
    this.logger.warn({ user: claimed, client, action }, "console login refused");
    if (locked) {
      this.logger.warn(
        { client, failures: MAX_FAILED_LOGINS, lockout_s: LOGIN_LOCKOUT_MS / 1000 },
        "console logins from this client refused for a while",
      );
    }
    // the page handles a refusal itself; anyone else gets the standard challenge
    const fromPage = req.headers[PAGE_HEADER] !== undefined || req.url?.split("?", 1)[0] === "/api/session";
    const challenge: Record<string, string> = fromPage
      ? {}
      : { "WWW-Authenticate": 'Basic realm="stpmd", charset="UTF-8"' };
    reply(res, 401, "wrong or missing user name or password\n", challenge);
  }

  /** The live session a cookie names, or undefined (an expired one is forgotten here). */
  private session(cookie: string): Session | undefined {
    const key = sessionKey(cookie);
    const session = this.sessions.get(key);
    if (session === undefined) return undefined;
    if (this.now() - session.used > this.idleMs) {
      this.sessions.delete(key);
      this.logger.info({ user: session.user }, "console session expired");
      return undefined;
    }
    return session;
  }

  /** Marks a session used now and sends its cookie again, so that the browser's copy expires with it. */
  private renew(res: ServerResponse, cookie: string, session: Session): void {
    session.used = this.now();
    const key = sessionKey(cookie);
    this.sessions.delete(key); // re-inserted last: most recently used
    this.sessions.set(key, session);
    res.setHeader(
      "Set-Cookie",
      `${SESSION_COOKIE}=${cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${this.idleMs / 1000}`,
    );
  }

  private answerSession(res: ServerResponse, session: Session): void {
    const info: SessionInfo = {
      user: session.user,
      csrf_token: session.csrf,
      expires_at: jsonTime(session.used + this.idleMs),
    };
    reply(res, 200, JSON.stringify(info), {
      "Content-Type": "application/json",
      "Cache-Control": "no-store",
    });
  }

  private get idleMs(): number {
    return this.config.session_idle_min * 60_000;
  }

  /** The user name if `password` is theirs, else undefined. Compares digests in constant time. */
  private authenticate(user: string, password: string): string | undefined {
    const expected = this.passwords.get(user);
    const given = sha256(password);
    // an unknown user costs the same comparison as a known one
    const match = timingSafeEqual(given, expected ?? sha256(`${password}-`));
    return match && expected !== undefined ? user : undefined;
  }
}

/** The session id of the `stpmd_session` cookie, or undefined. */
function sessionCookie(header: string | undefined): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) {
      const value = part.slice(eq + 1).trim();
      return /^[A-Za-z0-9_-]{20,100}$/.test(value) ? value : undefined;
    }
  }
  return undefined;
}

function sessionKey(id: string): string {
  return sha256(id).toString("hex");
}

/** Whether a header carries the secret, compared in constant time (as digests, so lengths never leak either). */
function sameSecret(header: string | string[] | undefined, secret: string): boolean {
  if (typeof header !== "string") return false;
  return timingSafeEqual(sha256(header), sha256(secret));
}

/** `{username, password}` from a login body, or the one line saying what is wrong with it. */
function loginBody(body: Buffer): { username: string; password: string } | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return 'the login body is not JSON; send {"username": …, "password": …}';
  }
  const { username, password } = (parsed ?? {}) as Record<string, unknown>;
  if (typeof username !== "string" || typeof password !== "string")
    return "the login body needs username and password as strings";
  return { username, password };
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
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
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
