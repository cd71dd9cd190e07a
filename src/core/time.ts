/**
 * The one timestamp format of the daemon's JSON interfaces (MQTT payloads, the node's snapshot in `status` and
 * `GET /api/status`, the console's event stream, the audit log): ISO 8601 in UTC with milliseconds and `Z`,
 * `2026-12-02T01:34:23.570Z`. Chosen over epoch milliseconds because most of those interfaces already wrote it
 * (MQTT results, defects, status, the audit log), a person reading a payload or a log can read it, it sorts as
 * text, and every JSON consumer parses it (`Date.parse`, `datetime.fromisoformat`, SQL). Sparkplug B keeps epoch
 * milliseconds: its specification defines its timestamps so (UInt64 ms since the epoch, UTC).
 */
export function jsonTime(epochMs: number): string {
  return new Date(epochMs).toISOString();
}
