/**
 * The durable audit log (docs/audit.md): one JSON object per line, appended with `O_APPEND` and fsynced before
 * {@link AuditLog.appendSync} returns, so an acknowledged change is on disk; rotated at `max_bytes`, keeping `keep`
 * previous files, which the reader reads across.
 *
 * Appends are synchronous on purpose: the control acknowledges a threshold in the same tick it applies it (its
 * interface is synchronous), and no frame can be judged between the change and its entry. Operator changes are
 * rare, and an append is one open, write, fsync and close.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { jsonTime } from "../../core/time.js";
import type {
  AuditEntry,
  AuditHealth,
  AuditPage,
  AuditQuery,
  AuditStore,
  StoredAuditEntry,
} from "../audit.js";
import { auditFiles, entriesNewestFirst, matches, parseEntry, type SkippedLine } from "./audit-files.js";

export interface AuditLogOptions {
  /** The newest file; rotated ones are `<file>.1` … `<file>.<keep>`. */
  file: string;
  /** A file reaching this size is rotated before the next append. */
  maxBytes: number;
  /** Rotated files kept (0: the full file is deleted when it rotates). */
  keep: number;
  /** Permission bits of new files. */
  fileMode: number;
}

/** The bytes at the end of the newest file read to find the last sequence number (an entry is far smaller). */
const TAIL_BYTES = 65_536;

export class AuditLog implements AuditStore {
  private nextSeq: number | undefined;
  private written = 0;
  private failed = 0;
  private lastFailure: string | undefined;
  /** Skipped lines already warned about (a query reads them again and again). */
  private readonly warned = new Set<string>();

  constructor(
    private readonly options: AuditLogOptions,
    private readonly logger: Logger,
  ) {}

  get file(): string {
    return this.options.file;
  }

  append(entry: Omit<AuditEntry, "ts">): Promise<void> {
    try {
      this.appendSync(entry);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  appendSync(entry: Omit<AuditEntry, "ts">): StoredAuditEntry {
    let stored: StoredAuditEntry;
    try {
      // reading the last sequence number can fail like the write (a folder in the file's place, an I/O error)
      const seq = this.nextSeq ?? this.recoverSeq();
      stored = { seq, ts: jsonTime(Date.now()), ...dropUndefined(entry) };
      this.write(`${JSON.stringify(stored)}\n`);
    } catch (err) {
      this.failed += 1;
      this.lastFailure = `audit log ${this.file}: ${errorMessage(err)}`;
      this.logger.error(
        { file: this.file, action: entry.action, via: entry.via, user: entry.user, err },
        `${this.lastFailure} (entry ${entry.action} by ${entry.user ?? entry.via} not written)`,
      );
      throw new Error(this.lastFailure, { cause: err });
    }
    this.nextSeq = stored.seq + 1;
    this.written += 1;
    this.lastFailure = undefined;
    return stored;
  }

  health(): AuditHealth {
    return {
      ok: this.lastFailure === undefined,
      file: this.file,
      entries: this.written,
      failures: this.failed,
      ...(this.lastFailure !== undefined ? { detail: this.lastFailure } : {}),
    };
  }

  async query(query: AuditQuery): Promise<AuditPage> {
    const page: StoredAuditEntry[] = [];
    const skip = (line: SkippedLine) => this.warnSkipped(line);
    for await (const entry of entriesNewestFirst(this.file, this.options.keep, skip)) {
      if (query.cursor !== undefined && !(entry.seq < query.cursor)) continue;
      if (!matches(entry, query)) continue;
      page.push(entry);
      // one more than the page tells whether there is a next one
      if (page.length > query.limit) break;
    }
    const more = page.length > query.limit;
    if (more) page.pop();
    return { entries: page, next_cursor: more ? page[page.length - 1]!.seq : null };
  }

  /** One warning per line that is not an entry, however often it is read again. */
  private warnSkipped({ file, line }: SkippedLine): void {
    const key = `${file}:${line}`;
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.logger.warn(
      { file, line },
      `audit log ${file}: line ${line} is not an entry (torn by a power cut or corrupted); skipped`,
    );
  }

  /**
   * One line, on disk when this returns: the file is rotated first if the line would take it past `max_bytes`, a
   * torn last line left by a power cut is ended so the new entry starts a line of its own, and a write that fails
   * half-way is cut off again so it leaves no torn line behind.
   */
  private write(line: string): void {
    this.ensureFolder();
    const { fd, size } = this.openWithRoom(Buffer.byteLength(line));
    try {
      const torn = size > 0 && lastByte(fd, size) !== 0x0a;
      if (torn) {
        this.logger.warn(
          { file: this.file },
          `audit log ${this.file}: its last line was torn (a power cut while appending); it is skipped when read`,
        );
      }
      const bytes = Buffer.from(torn ? `\n${line}` : line);
      try {
        let done = 0;
        while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
        fsyncSync(fd);
      } catch (err) {
        tryTruncate(fd, size);
        throw err;
      }
      if (size === 0) {
        // open()'s mode is cut by the umask; the files name the operators, so they get the configured mode
        fchmodSync(fd, this.options.fileMode);
        fsyncDir(path.dirname(this.file));
      }
    } finally {
      closeSync(fd);
    }
  }

  /** Makes the log's folder if it is not there: new at the first entry, or deleted under a running log (warned). */
  private ensureFolder(): void {
    const dir = path.dirname(this.file);
    if (mkdirSync(dir, { recursive: true }) === undefined) return;
    if (this.written + this.failed > 0) {
      this.logger.warn({ dir }, `audit log folder ${dir} was missing; made it again`);
    }
    fsyncDir(path.dirname(dir));
  }

  /** The newest file opened for appending `bytes` more, rotated first when they would take it past `max_bytes`. */
  private openWithRoom(bytes: number): { fd: number; size: number } {
    const fd = this.open();
    try {
      const size = fstatSync(fd).size;
      if (size === 0 || size + bytes <= this.options.maxBytes) return { fd, size };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    closeSync(fd);
    this.rotate();
    return { fd: this.open(), size: 0 };
  }

  private open(): number {
    return openSync(
      this.file,
      constants.O_RDWR | constants.O_APPEND | constants.O_CREAT,
      this.options.fileMode,
    );
  }

  /** `<file>` becomes `<file>.1`, `<file>.1` becomes `<file>.2` …; the oldest beyond `keep` is deleted. */
  private rotate(): void {
    const files = auditFiles(this.file, this.options.keep);
    // files[0] is `<file>.<keep>`, the oldest kept: the next rotation drops it
    rmSync(this.options.keep > 0 ? files[0]! : this.file, { force: true });
    for (let i = 0; i < files.length - 1; i++) {
      const from = files[i + 1]!;
      try {
        renameSync(from, files[i]!);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    fsyncDir(path.dirname(this.file));
    this.logger.info({ file: this.file, keep: this.options.keep }, `audit log ${this.file} rotated`);
  }

  /** The number after the newest entry on disk (1 for a new log), so numbers only grow across restarts. */
  private recoverSeq(): number {
    for (const name of [this.file, `${this.file}.1`]) {
      const last = lastEntrySeq(name);
      if (last !== undefined) return last + 1;
    }
    return 1;
  }
}

/** The sequence number of the last whole entry in a file's tail, or undefined (no file, no entry). */
function lastEntrySeq(file: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY);
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    const lines = buffer.toString("utf8").split("\n");
    for (let i = lines.length - 1; i >= 0; i--) {
      const entry = parseEntry(lines[i]!);
      if (entry !== undefined) return entry.seq;
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function lastByte(fd: number, size: number): number {
  const one = Buffer.alloc(1);
  readSync(fd, one, 0, 1, size - 1);
  return one[0]!;
}

function tryTruncate(fd: number, size: number): void {
  try {
    ftruncateSync(fd, size);
  } catch {
    // the entry is reported as not written either way; a torn remainder is skipped by the reader
  }
}

/** Makes a new or renamed directory entry survive a power cut (ext4 does not promise it without this). */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY);
    fsyncSync(fd);
  } catch {
    // some file systems refuse fsync on a directory; the file's own fsync still holds its bytes
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** JSON drops undefined fields anyway; dropping them here keeps the stored entry equal to what was written. */
function dropUndefined<T extends object>(entry: T): T {
  return Object.fromEntries(Object.entries(entry).filter(([, v]) => v !== undefined)) as T;
}
