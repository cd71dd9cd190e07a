/**
 * Writes the part record: rows into `records.db`, images beside it, and keeps both within the retention limits.
 * It runs on the records thread (record-worker.ts), never on the daemon's main thread, so nothing here can stall
 * inspection: the synchronous SQLite calls, a checkpoint's fsync, a slow card, a full disk.
 *
 * What it survives, each counted and logged (a repeating problem once a minute):
 * - a full or failing disk: the rows of that write are counted `failed` (their images removed), the next write is
 *   tried as if nothing happened;
 * - the folder (or the database) deleted while running: noticed at the next write (the file's inode is checked),
 *   recreated with a new database;
 * - a corrupt database, at open or while running (SQLITE_CORRUPT, SQLITE_NOTADB): moved aside as
 *   `records.db.corrupt-<time>` (with its -wal and -shm) and a new one started. While running, SQLite's page cache
 *   hides a file overwritten underneath it (inserts touch only cached pages and succeed into a garbage file), so
 *   each write is preceded by a probe that reads past the cache ({@link RecordWriter.probe}).
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  statfsSync,
  statSync,
} from "node:fs";
import { unlink } from "node:fs/promises";
import path from "node:path";
import type Database from "better-sqlite3";
import { makeDirectory } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import { type FramePixels, framePng, mapPng, writePng } from "../frame-png.js";
import {
  openRecordsDb,
  RECORDS_DB,
  RecordInserter,
  type RecordRow,
  type RecordsDatabase,
} from "../record-store.js";

/** What the writer is told to keep, in the units it works in. */
export interface WriterOptions {
  dir: string;
  fileMode: number;
  dirMode: number;
  maxAgeMs: number;
  maxRows: number;
  maxBytes: number;
  /** zlib level of the frames' PNGs (records.images.png_compression; libpng's 6 when not given). */
  pngCompression?: number;
  /** Least time between two retention passes (the first runs at open). */
  retainEveryMs?: number;
}

/** One frame to record: its row, and the pixels to keep when it is a defect or a sampled normal frame. */
export interface RecordJob {
  /**
   * Its row, `image` and `map` null and `image_bytes` 0 until the writer saved them: built whole on the main thread,
   * so the writer completes the thread's own clone in place (copying every row was 4 of the writer's 15 µs a row,
   * `--cpu-prof`, drains of 100 rows).
   */
  row: RecordRow;
  image?: {
    pixels: FramePixels;
    /** The anomaly map on the model's grid, for defects. */
    map?: Float32Array;
    /** The map's size when it is not the frame's (a frame kept at the ROI's own resolution). */
    mapSize?: { width: number; height: number };
  };
}

/** The writer's counters, as the sink's health and the metrics show them. */
export interface WriterStats {
  /** Rows committed. */
  written: number;
  /** Rows whose write failed (a full disk, an I/O error): lost. */
  failed: number;
  /** Rows deleted by retention. */
  deleted: number;
  images_saved: number;
  images_failed: number;
  images_deleted: number;
  /** Rows in the database now. */
  rows: number;
  /** The database's used pages plus the images, now. */
  bytes: number;
  /** Databases found corrupt and moved aside. */
  corrupt_moved: number;
  /** Times the folder or database was found deleted and started again. */
  recreated: number;
}

/** The minimal logger the writer needs: the worker forwards these to the daemon's logger. */
export interface WriterLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
}

/** Rows deleted per retention transaction: short transactions keep the writer's next commit waiting little. */
const RETAIN_CHUNK = 5000;
const CORRUPT_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB"]);
/** statfs(2)'s f_type of a tmpfs and of a ramfs: memory, gone at the next power cut or reboot. */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x858458f6]);

export class RecordWriter {
  private db: RecordsDatabase | undefined;
  private inserter: RecordInserter | undefined;
  private probeStatement: Database.Statement | undefined;
  private inode = 0;
  private rows = 0;
  private imageBytes = 0;
  /** Image folders known to exist (see {@link inImageFolder}); forgotten when a write finds one gone. */
  private readonly imageFolders = new Set<string>();
  private lastRetain = Number.NEGATIVE_INFINITY;
  private readonly repeats = new RepeatLimiter();
  /** Why the last write failed, while writes keep failing. */
  problem: string | undefined;
  private failedInARow = 0;
  /** Deleted by retention since the last log line about it. */
  private unloggedRetention = { rows: 0, images: 0, bytes: 0, reasons: new Set<string>() };
  private lastRetentionLog = Number.NEGATIVE_INFINITY;
  readonly stats: WriterStats = {
    written: 0,
    failed: 0,
    deleted: 0,
    images_saved: 0,
    images_failed: 0,
    images_deleted: 0,
    rows: 0,
    bytes: 0,
    corrupt_moved: 0,
    recreated: 0,
  };

  constructor(
    private readonly options: WriterOptions,
    private readonly log: WriterLog,
  ) {}

  get file(): string {
    return path.join(this.options.dir, RECORDS_DB);
  }

  /** Opens the database now (the first write would); false, logged, when it cannot yet. */
  open(): boolean {
    try {
      this.ensureOpen();
      return true;
    } catch (err) {
      this.failure(err, 0);
      return false;
    }
  }

  /** Writes one drain of jobs: their images first, then every row in one transaction. */
  async write(jobs: readonly RecordJob[], now = Date.now()): Promise<void> {
    if (jobs.length === 0) return;
    try {
      this.ensureOpen();
    } catch (err) {
      this.failure(err, jobs.length);
      return;
    }
    try {
      this.probe();
    } catch (err) {
      if (!isCorrupt(err)) {
        this.failure(err, jobs.length);
        return;
      }
      // the rows of this drain go into the new database, not into the damaged one
      if (!this.replaceCorrupt("while running", err, jobs.length)) return;
    }
    const imagesFailed = this.stats.images_failed;
    // one image at a time: in parallel they took the 2-core box's cores from inference at 100 % defects (frames/s
    // with records on / off: 0.70 in parallel, 0.83 one at a time; benchmarks/records-cost.ts, 500 frames/s of
    // 128² offered, one 2-s run each). Behind, images are left out of their rows (counted): records, not frames.
    const rows: RecordRow[] = [];
    // a job without an image (99 % at 1 % defects) is not awaited: a microtask per row was measurable
    for (const job of jobs) {
      if (job.image !== undefined) await this.saveImages(job.row, job.image);
      rows.push(job.row);
    }
    try {
      this.insertOnce(rows);
    } catch (err) {
      this.failure(err, rows.length);
      // a row that is not there must not leave its images behind, untracked by retention
      await Promise.all(rows.flatMap((row) => [row.image, row.map]).map((f) => this.removeFile(f)));
      return;
    }
    this.rows += rows.length;
    for (const row of rows) this.imageBytes += row.image_bytes;
    this.stats.written += rows.length;
    this.recovered(this.stats.images_failed > imagesFailed);
    if (now - this.lastRetain >= (this.options.retainEveryMs ?? 5000)) {
      // deleting needs room in the WAL too: on a full disk retention fails like a write, and is tried again later
      await this.retain(now).catch((err: unknown) => {
        // retention reads the oldest pages, long out of the cache: where damage under a running writer shows first
        if (isCorrupt(err)) this.replaceCorrupt("while deleting the oldest records", err, 0);
        else this.problemLine("could not delete the oldest records", err);
      });
      this.updateSizes();
    }
    // the bytes cost three pragmas: counted at retention passes (every few seconds), the rows at every write
    this.stats.rows = this.rows;
  }

  /**
   * Inserts one drain's rows; a database found corrupt by the insert is moved aside and the rows tried once more in
   * the new one. Throws what the last try threw.
   */
  private insertOnce(rows: readonly RecordRow[]): void {
    try {
      this.inserter!.insertMany(rows);
    } catch (err) {
      if (!isCorrupt(err)) throw err;
      this.moveAside("while writing", err);
      this.ensureOpen();
      this.inserter!.insertMany(rows);
    }
  }

  /**
   * Checks the WAL's header (its checksum: a read of 32 bytes), then reads the database past SQLite's page cache: drops the connection's unused cached pages (`shrink_memory`), then
   * reads page 1 (the schema) and the paths to the table's newest row and the time index's oldest entry — about ten
   * pages however many rows the table holds, where `quick_check` reads them all (seconds on millions of rows). A file
   * overwritten underneath the writer fails here with SQLITE_CORRUPT or SQLITE_NOTADB, before a row is written into
   * it; damage deeper in the file shows at retention (the oldest pages) or in a reader's query, and at the next start
   * (quick_check). Its cost, measured on 400 000 rows: docs/records.md (Durability); once per drain (5 a second).
   */
  probe(): void {
    const wal = walHeaderProblem(`${this.file}-wal`);
    if (wal !== undefined) throw Object.assign(new Error(wal), { code: "SQLITE_CORRUPT" });
    this.db!.pragma("shrink_memory");
    this.probeStatement!.get();
  }

  /** Moves a database found corrupt aside and opens a new one; false (the rows counted failed) when it cannot. */
  private replaceCorrupt(when: string, err: unknown, rows: number): boolean {
    try {
      this.moveAside(when, err);
      this.ensureOpen();
      return true;
    } catch (moveErr) {
      this.failure(moveErr, rows);
      return false;
    }
  }

  /** Closes the database; the WAL is checkpointed into it by SQLite on the last connection's close. */
  close(): void {
    try {
      this.db?.close();
    } catch (err) {
      this.log.warn({ err }, `could not close ${this.file} cleanly: ${errorMessage(err)}`);
    }
    this.db = undefined;
    this.inserter = undefined;
    this.probeStatement = undefined;
  }

  /**
   * Deletes the oldest rows (and their images) beyond max_age_days, max_rows and max_bytes. Runs at open and at most
   * every `retainEveryMs` after a write.
   */
  async retain(now = Date.now()): Promise<void> {
    this.lastRetain = now;
    const db = this.db;
    if (db === undefined) return;
    const { maxAgeMs, maxRows, maxBytes } = this.options;
    const oldestBefore = db.prepare(
      "SELECT id, ts, image, map, image_bytes FROM records WHERE ts < ? ORDER BY ts, id LIMIT ?",
    );
    const oldest = db.prepare("SELECT id, ts, image, map, image_bytes FROM records ORDER BY ts, id LIMIT ?");
    for (;;) {
      let reason: string;
      let victims: Victim[];
      if (this.rows > maxRows) {
        reason = "max_rows";
        victims = oldest.all(Math.min(this.rows - maxRows, RETAIN_CHUNK)) as Victim[];
      } else if (this.usedBytes() > maxBytes && this.rows > 0) {
        reason = "max_bytes";
        const perRow = this.usedBytes() / this.rows;
        const count = Math.ceil((this.usedBytes() - maxBytes) / perRow);
        victims = oldest.all(Math.max(1, Math.min(count, RETAIN_CHUNK))) as Victim[];
      } else {
        reason = "max_age_days";
        victims = oldestBefore.all(now - maxAgeMs, RETAIN_CHUNK) as Victim[];
      }
      if (victims.length === 0) break;
      await this.deleteRows(victims, reason);
    }
    this.logRetention(now);
  }

  private async deleteRows(victims: readonly Victim[], reason: string): Promise<void> {
    const remove = this.db!.prepare("DELETE FROM records WHERE id = ?");
    this.db!.transaction(() => {
      for (const v of victims) remove.run(v.id);
    })();
    const files = victims.flatMap((v) => [v.image, v.map]).filter((f): f is string => f !== null);
    let images = 0;
    for (const file of files) if (await this.removeFile(file)) images += 1;
    const bytes = victims.reduce((sum, v) => sum + v.image_bytes, 0);
    this.rows -= victims.length;
    this.imageBytes -= bytes;
    this.stats.deleted += victims.length;
    this.stats.images_deleted += images;
    const pending = this.unloggedRetention;
    pending.rows += victims.length;
    pending.images += images;
    pending.bytes += bytes;
    pending.reasons.add(reason);
    this.updateSizes();
  }

  private logRetention(now: number): void {
    const pending = this.unloggedRetention;
    if (pending.rows === 0 || now - this.lastRetentionLog < 60_000) return;
    this.lastRetentionLog = now;
    this.log.info(
      { deleted_rows: pending.rows, deleted_images: pending.images, rows: this.rows, dir: this.options.dir },
      `records retention deleted the ${pending.rows} oldest rows and ${pending.images} images ` +
        `(${(pending.bytes / 1048576).toFixed(1)} MiB of images) to keep within ${[...pending.reasons].join(", ")}; ` +
        `${this.rows} rows kept (stpmd_records_rows_total{outcome="deleted"})`,
    );
    this.unloggedRetention = { rows: 0, images: 0, bytes: 0, reasons: new Set() };
  }

  private usedBytes(): number {
    const db = this.db!;
    const pages =
      (db.pragma("page_count", { simple: true }) as number) -
      (db.pragma("freelist_count", { simple: true }) as number);
    return pages * (db.pragma("page_size", { simple: true }) as number) + this.imageBytes;
  }

  private updateSizes(): void {
    this.stats.rows = this.rows;
    if (this.db !== undefined) this.stats.bytes = this.usedBytes();
  }

  /**
   * Opens the database unless it is open and still the file on disk: a folder deleted while running leaves SQLite
   * writing to an unlinked inode, so the inode is compared at each write (a stat, microseconds).
   */
  private ensureOpen(): void {
    if (this.db !== undefined) {
      const ino = inodeOf(this.file);
      if (ino === this.inode) return;
      this.log.warn(
        { dir: this.options.dir },
        `the records database ${this.file} was deleted while running; starting a new one ` +
          `(the ${this.rows} rows it held are gone with it)`,
      );
      this.stats.recreated += 1;
      this.close();
      this.rows = 0;
      this.imageBytes = 0;
    }
    mkdirSync(this.options.dir, { recursive: true, mode: this.options.dirMode });
    chmodSync(this.options.dir, this.options.dirMode);
    const isNew = !existsSync(this.file);
    let db: RecordsDatabase;
    try {
      db = this.openChecked();
    } catch (err) {
      if (!isCorrupt(err)) throw err;
      this.moveAside("at open", err);
      db = this.openChecked();
    }
    if (isNew) chmodSync(this.file, this.options.fileMode);
    this.db = db;
    this.inserter = new RecordInserter(db);
    this.probeStatement = db.prepare(
      `SELECT (SELECT count(*) FROM sqlite_schema), (SELECT max(id) FROM records),
         (SELECT ts FROM records INDEXED BY records_ts ORDER BY ts LIMIT 1)`,
    );
    this.inode = inodeOf(this.file);
    this.rows = (db.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n;
    this.imageBytes = (db.prepare("SELECT total(image_bytes) AS b FROM records").get() as { b: number }).b;
    this.log.info(
      { file: this.file, rows: this.rows },
      `part record ${isNew ? "started in" : "opened"} ${this.file} (${this.rows} rows)`,
    );
    if (MEMORY_FILESYSTEMS.has(statfsSync(this.options.dir).type)) {
      this.log.warn(
        { dir: this.options.dir },
        `records.dir ${this.options.dir} is on a memory filesystem (tmpfs): the part record is lost at every reboot ` +
          "or power cut; point records.dir at a real disk",
      );
    }
    this.lastRetain = Number.NEGATIVE_INFINITY;
    this.updateSizes();
  }

  /** Opens and checks the database's structure (quick_check: pages and indexes, not row contents). */
  private openChecked(): RecordsDatabase {
    const db = openRecordsDb(this.file);
    try {
      const check = db.pragma("quick_check(1)", { simple: true }) as string;
      if (check !== "ok") throw Object.assign(new Error(`quick_check: ${check}`), { code: "SQLITE_CORRUPT" });
      return db;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Moves a corrupt database (and its -wal, -shm) aside under one name, so a new one starts in its place. */
  private moveAside(when: string, err: unknown): void {
    const stamp = new Date().toISOString().replace(/[-:.]/g, "");
    const aside = `${this.file}.corrupt-${stamp}`;
    try {
      for (const suffix of ["", "-wal", "-shm"]) {
        try {
          renameSync(`${this.file}${suffix}`, `${aside}${suffix}`);
        } catch (renameErr) {
          if ((renameErr as NodeJS.ErrnoException).code !== "ENOENT") throw renameErr;
        }
      }
    } finally {
      // closed after the move, not before: closing the last connection checkpoints the WAL into the database, and a
      // damaged WAL checkpointed turned the intact pages of the database into garbage (the WAL-only case of
      // test/publish/records/record-writer.test.ts); SQLite skips that checkpoint for a file that has moved
      this.close();
    }
    this.stats.corrupt_moved += 1;
    this.rows = 0;
    this.imageBytes = 0;
    this.log.error(
      { file: this.file, aside },
      `the records database ${this.file} is corrupt (${when}: ${errorMessage(err)}); moved it aside to ${aside} and ` +
        "started a new one (its images stay in images/ until deleted by hand)",
    );
  }

  /** Saves a job's frame (and map) beside the database and names them in its row; a failure is counted, not thrown. */
  private async saveImages(row: RecordRow, image: NonNullable<RecordJob["image"]>): Promise<void> {
    const day = new Date(row.ts).toISOString().slice(0, 10);
    const stamp = new Date(row.ts).toISOString().replace(/[-:.]/g, "");
    const relDir = path.join("images", row.camera, day);
    const base = path.join(relDir, `${row.camera}_${stamp}_${row.seq}`);
    try {
      // the map is on the model's grid: the frame's, unless the frame was kept at native resolution
      const grid = image.mapSize ?? image.pixels;
      const png = await framePng(image.pixels, this.options.pngCompression);
      await this.inImageFolder(relDir, () =>
        writePng(path.join(this.options.dir, `${base}.png`), png, this.options.fileMode),
      );
      row.image = `${base}.png`;
      row.image_bytes += png.length;
      this.stats.images_saved += 1;
      if (image.map !== undefined && row.threshold !== null) {
        const mapBytes = await mapPng(image.map, grid.width, grid.height, row.threshold);
        await this.inImageFolder(relDir, () =>
          writePng(path.join(this.options.dir, `${base}_map.png`), mapBytes, this.options.fileMode),
        );
        row.map = `${base}_map.png`;
        row.image_bytes += mapBytes.length;
        this.stats.images_saved += 1;
      }
    } catch (err) {
      this.stats.images_failed += 1;
      this.problemLine(`could not save an image of camera ${row.camera}`, err);
    }
  }

  /**
   * Runs `write` into the image folder `relDir`, made (with its parents, at `dirMode`) the first time and again
   * whenever a write finds it gone (a folder deleted while running): not before every image, which cost six
   * file-system calls (mkdir and chmod of three folders) per defect.
   */
  private async inImageFolder(relDir: string, write: () => Promise<void>): Promise<void> {
    const make = async () => {
      await makeDirectory(path.join(this.options.dir, "images"), this.options.dirMode);
      await makeDirectory(path.join(this.options.dir, path.dirname(relDir)), this.options.dirMode);
      await makeDirectory(path.join(this.options.dir, relDir), this.options.dirMode);
      this.imageFolders.add(relDir);
    };
    if (!this.imageFolders.has(relDir)) await make();
    try {
      await write();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      this.imageFolders.clear();
      await make();
      await write();
    }
  }

  /** Deletes a file of the record; true when it was there to delete. */
  private async removeFile(relative: string | null): Promise<boolean> {
    if (relative === null) return false;
    const file = path.join(this.options.dir, relative);
    try {
      await unlink(file);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        this.log.warn({ file }, `could not delete the record's image ${file}: ${errorMessage(err)}`);
      return false;
    }
  }

  private failure(err: unknown, rows: number): void {
    this.stats.failed += rows;
    this.failedInARow += 1;
    this.problemLine(
      `could not write ${rows} records to ${this.file}`,
      err,
      `; inspection goes on; ${this.stats.failed} records lost in all (stpmd_records_rows_total{outcome="failed"})`,
    );
  }

  /** One line per distinct problem, then at most one a minute with the count meanwhile. */
  private problemLine(what: string, err: unknown, tail = ""): void {
    const problem = errorMessage(err).replace(/\s*\n\s*/g, "; ");
    this.problem = problem;
    const admitted = this.repeats.admit(`${what.replace(/[0-9]+/g, "#")}: ${problem}`);
    if (admitted === undefined) return;
    const meanwhile = admitted.unlogged > 0 ? ` (${admitted.unlogged} more since the last line)` : "";
    this.log.warn({ dir: this.options.dir, err }, `${what}: ${problem}${meanwhile}${tail}`);
  }

  /** A write went through: the problem is over unless an image of it failed. */
  private recovered(imagesFailed: boolean): void {
    if (!imagesFailed) this.problem = undefined;
    if (this.failedInARow === 0) return;
    this.log.info(
      { failed: this.failedInARow },
      `records are written again to ${this.file}, after ${this.failedInARow} failed writes`,
    );
    this.failedInARow = 0;
    this.repeats.clear();
  }
}

interface Victim {
  id: number;
  ts: number;
  image: string | null;
  map: string | null;
  image_bytes: number;
}

/** The WAL's magic numbers: its checksums are of little-endian words (…82) or big-endian ones (…83). */
const WAL_MAGIC = [0x377f0682, 0x377f0683];

/**
 * Why the WAL's 32-byte header is not one SQLite wrote (its magic, or its checksum over the first 24 bytes, fails),
 * or undefined when it is, or when there is no header yet. A WAL whose header is damaged is ignored whole at the next
 * open — every row committed into it since the last checkpoint gone — and while running the writer reads its frames
 * through the shared-memory index, never the header, so nothing else notices it.
 */
export function walHeaderProblem(walFile: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(walFile, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const header = Buffer.alloc(32);
  let read: number;
  try {
    read = readSync(fd, header, 0, 32, 0);
  } finally {
    closeSync(fd);
  }
  if (read < 32) return undefined;
  const magic = header.readUInt32BE(0);
  if (!WAL_MAGIC.includes(magic)) return `${walFile}: not a WAL (magic 0x${magic.toString(16)})`;
  const word = (at: number): number =>
    (magic & 1) === 1 ? header.readUInt32BE(at) : header.readUInt32LE(at);
  let s0 = 0;
  let s1 = 0;
  for (let at = 0; at < 24; at += 8) {
    s0 = (s0 + word(at) + s1) >>> 0;
    s1 = (s1 + word(at + 4) + s0) >>> 0;
  }
  if (s0 !== header.readUInt32BE(24) || s1 !== header.readUInt32BE(28))
    return `${walFile}: the WAL header's checksum fails`;
  return undefined;
}

function isCorrupt(err: unknown): boolean {
  return CORRUPT_CODES.has((err as { code?: string }).code ?? "");
}

function inodeOf(file: string): number {
  try {
    return statSync(file).ino;
  } catch {
    return -1;
  }
}
