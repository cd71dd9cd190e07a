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
