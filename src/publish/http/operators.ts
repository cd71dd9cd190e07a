/**
 * Who may change state over HTTP: the operators of `http.console.users`, one authentication for every route that
 * changes something (the console's commands, and whatever later routes label, promote or audit). Reading needs no
 * login (the same trust statement as `/metrics`: bind to loopback or a trusted network).
 *
 * A route calls {@link Operators.authorize} first; it answers the refusal itself (401, 403 or 429, one line naming
 * the problem) and returns undefined, or returns the operator's name, which the route passes on to the control and
 * the audit log.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Counter, type Registry } from "prom-client";
import { readPasswordFile } from "../../config/files.js";
import type { ConsoleConfig } from "../../config/index.js";
import { StpmdError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
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

export interface OperatorsOptions {
  config: ConsoleConfig;
  logger: Logger;
  /** The HTTP interface's metrics registry: refused logins are counted there. */
  registry: Registry;
}

export class Operators {
  private readonly config: ConsoleConfig;
  private readonly logger: Logger;
  /** user name → sha256 of the password, read from the password files at start. */
  private passwords = new Map<string, Buffer>();
  private readonly logins = new LoginGuard();
  private readonly loginsRefused: Counter;

  constructor(options: OperatorsOptions) {
    this.config = options.config;
    this.logger = options.logger.child({ component: "operators" });
    this.loginsRefused = new Counter({
      name: "stpmd_console_logins_refused_total",
      help: "Console commands refused: a wrong or missing user name or password, or a locked-out client address.",
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
   * configured, locked-out client, wrong or missing credentials, a request another site's page may have sent).
   * `action` names what was asked, for the log line of a refusal.
   */
  authorize(req: IncomingMessage, res: ServerResponse, action: string): string | undefined {
    const client = req.socket.remoteAddress ?? "?";
    if (this.passwords.size === 0) {
      reply(res, 403, "the console is read-only: no http.console.users are configured\n");
      return undefined;
    }
    const claimed = basicCredentials(req.headers.authorization)?.user;
    const lockedMs = this.logins.lockedFor(client);
    if (lockedMs > 0) {
      this.loginsRefused.inc();
      const seconds = Math.ceil(lockedMs / 1000);
      reply(res, 429, `too many failed logins from ${client}; try again in ${seconds} s\n`, {
        "Retry-After": String(seconds),
      });
      return undefined;
    }
    const user = this.authenticate(req);
    if (user === undefined) {
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
      // the page's own form handles a refusal; anyone else gets the standard challenge
      const challenge: Record<string, string> =
        req.headers[PAGE_HEADER] === undefined
          ? { "WWW-Authenticate": 'Basic realm="stpmd", charset="UTF-8"' }
          : {};
      reply(res, 401, "wrong or missing user name or password\n", challenge);
      return undefined;
    }
    this.logins.succeeded(client);
    const refusal = crossSiteRefusal(req);
    if (refusal !== undefined) {
      this.logger.warn({ user, client, action, origin: req.headers.origin }, "console request refused");
      reply(res, 403, `${refusal}\n`);
      return undefined;
    }
    return user;
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
