/**
 * The audit trail's contract: every state change — thresholds, enables, collection, reloads, review labels, later
 * promotions — is appended with who asked, through which interface, and the values before and after. The durable
 * implementation lives in `audit/`; routes and the line control depend only on this interface.
 */
import type { ChangeSource } from "./control.js";

export interface AuditEntry {
  /** ISO 8601 time the change was made (UTC). */
  ts: string;
  /** The operator (console or OPC UA user, MQTT client id); null for the config, a SIGHUP or a file watch. */
  user: string | null;
  via: ChangeSource;
  /** What changed, e.g. `set_threshold`, `enable_camera`, `collection`, `reload`, `label`, `unlabel`. */
  action: string;
  camera?: string;
  /** What the change applied to beyond the camera, e.g. a record id. */
  target?: string;
  before?: unknown;
  after?: unknown;
  /** `refused` entries record a change that was asked for and not made (with the reason in `detail`). */
  outcome: "ok" | "refused";
  detail?: string;
}

export interface AuditTrail {
  /** Appends one entry; resolves once it is on disk, rejects (with the file named) when it could not be written. */
  append(entry: Omit<AuditEntry, "ts">): Promise<void>;
}

/** An entry as the log stores and serves it: with its sequence number, which only grows (the API's cursor). */
export interface StoredAuditEntry extends AuditEntry {
  seq: number;
}

/** A query of the log (GET /api/audit, `stpmd audit export`): every filter optional, times in ms since the epoch. */
export interface AuditQuery {
  since?: number;
  until?: number;
  user?: string;
  action?: string;
  camera?: string;
  /** Most entries in one page. */
  limit: number;
  /** Only entries older than this sequence number (the previous page's `next_cursor`). */
  cursor?: number;
}

/** One page, newest first; `next_cursor` is null on the last page. */
export interface AuditPage {
  entries: StoredAuditEntry[];
  next_cursor: number | null;
}

/** The log's health, in the node's status and the metrics. */
export interface AuditHealth {
  /** Whether the last append was written (true before the first one). */
  ok: boolean;
  file: string;
  /** Entries written since start. */
  entries: number;
  /** Entries that could not be written since start (each one a refused operator change or an unaudited reload). */
  failures: number;
  /** The last failure, in one line, while `ok` is false. */
  detail?: string;
}

/** The trail as the daemon owns it: appended to by the control and the routes, read by the API. */
export interface AuditStore extends AuditTrail {
  /** Appends one entry now, on disk when it returns; throws an Error naming the file when it could not. */
  appendSync(entry: Omit<AuditEntry, "ts">): StoredAuditEntry;
  query(query: AuditQuery): Promise<AuditPage>;
  health(): AuditHealth;
}
