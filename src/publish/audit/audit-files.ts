/**
 * The audit log's files and how they are read (docs/audit.md): `<file>` is the newest, `<file>.1` the one rotated
 * before it, up to `<file>.<keep>`; each holds one JSON object per line. Reading never stops at a bad line: a line
 * torn by a power cut (or corrupted) is skipped and counted, so the daemon's appends and the export go on.
 */
import { readFile } from "node:fs/promises";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { AuditQuery, StoredAuditEntry } from "../audit.js";

/** The log's files, oldest first: `<file>.<keep>` … `<file>.1`, `<file>`. */
export function auditFiles(file: string, keep: number): string[] {
  const files: string[] = [];
  for (let i = keep; i >= 1; i--) files.push(`${file}.${i}`);
  files.push(file);
  return files;
}

/** A line that is not an entry: where it is, for the one warning that reports it. */
export interface SkippedLine {
  file: string;
  /** 1-based line number. */
  line: number;
}

/**
 * Lines parsed between yields to the event loop while the daemon reads its log: parsing a full 10 MiB file took
 * 151 ms on the 2-core dev box (47 000 entries), far too long to hold the frames' event loop; 2000 lines is ~6 ms.
 */
const LINES_PER_SLICE = 2000;

/** A file's text, or undefined when it is not there (rotation keeps fewer files at first). */
async function readIfThere(name: string): Promise<string | undefined> {
  try {
    return await readFile(name, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`audit log ${name}: cannot read: ${(err as Error).message}`);
  }
}

/**
 * The entries of the log's files newest first, for the daemon's API: a page of the newest entries reads only the
 * newest file, and parsing yields to the event loop every {@link LINES_PER_SLICE} lines. A line that is not an entry
 * is reported to `skip` and passed over.
 */
export async function* entriesNewestFirst(
  file: string,
  keep: number,
  skip: (line: SkippedLine) => void,
): AsyncGenerator<StoredAuditEntry> {
  for (const name of auditFiles(file, keep).reverse()) {
    const text = await readIfThere(name);
    if (text === undefined) continue;
    const lines = text.split("\n");
    for (let i = lines.length - 1; i >= 0; i--) {
      if ((lines.length - i) % LINES_PER_SLICE === 0) await yieldToEventLoop();
      const line = lines[i]!;
      if (line === "") continue;
      const entry = parseEntry(line);
      if (entry === undefined) skip({ file: name, line: i + 1 });
      else yield entry;
    }
  }
}

/** The entries of the log's files, oldest first, and the lines skipped; a file that is not there is no entry. */
export async function readAuditEntries(
  file: string,
  keep: number,
): Promise<{ entries: StoredAuditEntry[]; skipped: SkippedLine[] }> {
  const entries: StoredAuditEntry[] = [];
  const skipped: SkippedLine[] = [];
  for (const name of auditFiles(file, keep)) {
    const text = await readIfThere(name);
    if (text === undefined) continue;
    const lines = text.split("\n");
    lines.forEach((line, i) => {
      if (line === "") return;
      const entry = parseEntry(line);
      if (entry === undefined) skipped.push({ file: name, line: i + 1 });
      else entries.push(entry);
    });
  }
  return { entries, skipped };
}

/** One line as an entry, or undefined when it is not one (torn, corrupted, or not an audit entry). */
export function parseEntry(line: string): StoredAuditEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const e = value as Partial<StoredAuditEntry>;
  const valid =
    typeof e.seq === "number" &&
    typeof e.ts === "string" &&
    typeof e.action === "string" &&
    typeof e.via === "string" &&
    (e.outcome === "ok" || e.outcome === "refused");
  return valid ? (value as StoredAuditEntry) : undefined;
}

/** Whether an entry passes the query's filters (not its page: cursor and limit). */
export function matches(entry: StoredAuditEntry, query: Omit<AuditQuery, "limit" | "cursor">): boolean {
  const ms = Date.parse(entry.ts);
  if (query.since !== undefined && !(ms >= query.since)) return false;
  if (query.until !== undefined && !(ms < query.until)) return false;
  if (query.user !== undefined && entry.user !== query.user) return false;
  if (query.action !== undefined && entry.action !== query.action) return false;
  if (query.camera !== undefined && entry.camera !== query.camera) return false;
  return true;
}
