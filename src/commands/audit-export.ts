/**
 * `stpmd audit export`: the audit log of a time range as CSV or JSON lines, oldest first, read across the rotated
 * files. It only reads, so it is safe while the daemon appends; a line torn by a power cut is skipped with one
 * warning naming the file and line, and the export goes on.
 */
import { once } from "node:events";
import type { Writable } from "node:stream";
import { matches, readAuditEntries, type SkippedLine } from "../publish/audit/audit-files.js";
import type { AuditQuery, StoredAuditEntry } from "../publish/audit.js";
import type { ExportFormat } from "../publish/records-export-format.js";

/** The CSV's columns, in order: every field of an entry; `before` and `after` as their JSON. */
export const AUDIT_CSV_COLUMNS: readonly (keyof StoredAuditEntry)[] = [
  "seq",
  "ts",
  "user",
  "via",
  "action",
  "camera",
  "target",
  "before",
  "after",
  "outcome",
  "detail",
];

/** One CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180); absent and null are empty. */
function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  const text =
    typeof value === "object" || typeof value === "boolean" ? JSON.stringify(value) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function auditCsvLine(entry: StoredAuditEntry): string {
  return `${AUDIT_CSV_COLUMNS.map((column) => csvField(entry[column])).join(",")}\r\n`;
}

/**
 * Writes the entries of `file` and its `keep` rotated files that pass `filter` to `out`, oldest first; resolves
 * with how many were written and the lines skipped.
 */
export async function exportAudit(
  log: { file: string; keep: number },
  filter: Omit<AuditQuery, "limit" | "cursor">,
  format: ExportFormat,
  out: Writable,
): Promise<{ count: number; skipped: SkippedLine[] }> {
  const { entries, skipped } = await readAuditEntries(log.file, log.keep);
  let chunk = format === "csv" ? `${AUDIT_CSV_COLUMNS.join(",")}\r\n` : "";
  let count = 0;
  for (const entry of entries) {
    if (!matches(entry, filter)) continue;
    chunk += format === "csv" ? auditCsvLine(entry) : `${JSON.stringify(entry)}\n`;
    count += 1;
    if (chunk.length >= 65_536) {
      if (!out.write(chunk)) await once(out, "drain");
      chunk = "";
    }
  }
  if (chunk !== "" && !out.write(chunk)) await once(out, "drain");
  return { count, skipped };
}
