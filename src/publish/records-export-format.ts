/**
 * The part record as CSV or JSON lines, defined once for `stpmd records export` (over SSH) and
 * `GET /api/records/export.{csv,jsonl}` (records-export-worker.ts): read straight from the database on a read-only
 * connection (WAL: it reads a consistent snapshot while the daemon keeps writing), oldest first, streamed so a day
 * of a busy line never sits in memory and a slow reader holds the query, not the other way round.
 */
import { once } from "node:events";
import type { Writable } from "node:stream";
import { StpmdError } from "../core/errors.js";
import { iterateRecords, type RecordsDatabase } from "./record-store.js";
import { type PartRecord, parseTime } from "./records-api.js";

export type ExportFormat = "csv" | "jsonl";

/** The CSV's columns, in order: every field of a record; regions as their JSON. */
export const CSV_COLUMNS: readonly (keyof PartRecord)[] = [
  "id",
  "time",
  "camera",
  "seq",
  "part_id",
  "recipe",
  "bundle",
  "model_version",
  "threshold",
  "threshold_rule",
  "score",
  "verdict",
  "error",
  "regions",
  "latency_ms",
  "image",
  "map",
  "label",
];

const UNITS_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A point in time from `--since`/`--until`: ISO 8601 (`2026-12-06T06:00:00Z`), or a duration back from `now`
 * (`90s`, `30m`, `8h`, `7d`). Throws ERR_OPTION_INVALID naming the option.
 */
export function pointInTime(option: string, text: string, now = Date.now()): number {
  const duration = /^([0-9]+(?:\.[0-9]+)?)([smhd])$/.exec(text.trim());
  if (duration) return now - Number(duration[1]) * UNITS_MS[duration[2]!]!;
  const ms = /^[0-9]+$/.test(text) ? undefined : parseTime(text);
  if (ms === undefined) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `${option} "${text}": give an ISO 8601 time (2026-12-06T06:00:00Z) or a duration back from now (90s, 30m, 8h, 7d)`,
    );
  }
  return ms;
}

/** One CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180); null is empty. */
function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function csvLine(record: PartRecord): string {
  return `${CSV_COLUMNS.map((column) => csvField(record[column])).join(",")}\r\n`;
}

/** Writes the records of the filter to `out` in `format`; resolves with how many were written. */
export async function exportRecords(
  db: RecordsDatabase,
  filter: { from: number; to?: number; camera?: string },
  format: ExportFormat,
  out: Writable,
): Promise<number> {
  let count = 0;
  let chunk = format === "csv" ? `${CSV_COLUMNS.join(",")}\r\n` : "";
  const flush = async (): Promise<void> => {
    if (chunk === "") return;
    const ok = out.write(chunk);
    chunk = "";
    if (!ok) await once(out, "drain");
  };
  for (const record of iterateRecords(db, {
    from: String(filter.from),
    ...(filter.to !== undefined ? { to: String(filter.to) } : {}),
    ...(filter.camera !== undefined ? { camera: filter.camera } : {}),
  })) {
    chunk += format === "csv" ? csvLine(record) : `${JSON.stringify(record)}\n`;
    count += 1;
    // about 64 KiB per write: few syscalls, and the pipe's backpressure is honoured
    if (chunk.length >= 65_536) await flush();
  }
  await flush();
  return count;
}
