/**
 * The part record's database: one SQLite file (`records.db`, better-sqlite3) per records directory, written by the
 * records sink's thread and read by the HTTP API and `stpmd records export` (read-only connections of their own:
 * WAL lets them read while the daemon writes). The schema is versioned with `PRAGMA user_version`; each migration
 * brings it one version up, so a later release adds its tables (review labels' history, the audit log) without
 * touching rows already kept.
 */
import { statSync } from "node:fs";
import Database from "better-sqlite3";
import type { Region } from "../core/result.js";
import { jsonTime } from "../core/time.js";
import {
  type HourlyQuery,
  type HourlyRow,
  type PartRecord,
  parseTime,
  type RecordsPage,
  type RecordsQuery,
} from "./records-api.js";

export type RecordsDatabase = Database.Database;

/** The database's file name inside the records directory. */
export const RECORDS_DB = "records.db";

/**
 * Schema version n is MIGRATIONS[0..n-1] applied in order. Version 1 already holds `label` (the review console's
 * current label for a frame, null until reviewed); version 2 adds the labels' history (`label_events`); version 3
 * the recipe each frame was judged under (`recipe`, null for rows before it and frames judged without a recipe).
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE records (
     id INTEGER PRIMARY KEY,
     camera TEXT NOT NULL,
     ts INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     part_id TEXT,
     bundle TEXT,
     model_version TEXT NOT NULL,
     threshold REAL,
     threshold_rule TEXT,
     score REAL,
     verdict TEXT NOT NULL,
     error TEXT,
     regions TEXT NOT NULL,
     latency_ms REAL NOT NULL,
     image TEXT,
     map TEXT,
     image_bytes INTEGER NOT NULL DEFAULT 0,
     label TEXT
   );
   CREATE INDEX records_ts ON records (ts);
   CREATE INDEX records_camera_ts ON records (camera, ts);
   CREATE INDEX records_verdict_ts ON records (verdict, ts) WHERE verdict <> 'ok';
   CREATE INDEX records_part ON records (part_id) WHERE part_id IS NOT NULL;
   CREATE TABLE hourly (
     camera TEXT NOT NULL,
     hour INTEGER NOT NULL,
     ok INTEGER NOT NULL DEFAULT 0,
     defect INTEGER NOT NULL DEFAULT 0,
     error INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (hour, camera)
   ) WITHOUT ROWID;`,
  // version 2: the review console's label history. One row per label, undo and mask acceptance, never updated or
  // deleted (retention keeps it when the record's row goes: the labelled files outlive the record). A record's
  // label is its latest label/unlabel event; `records.label` mirrors it for the records query's filter.
  `CREATE TABLE label_events (
     id INTEGER PRIMARY KEY,
     record_id INTEGER NOT NULL,
     camera TEXT NOT NULL,
     action TEXT NOT NULL CHECK (action IN ('label', 'unlabel', 'accept_mask')),
     label TEXT,
     defect_type TEXT,
     user TEXT NOT NULL,
     ts INTEGER NOT NULL,
     undo INTEGER NOT NULL DEFAULT 0,
     files TEXT NOT NULL DEFAULT '[]'
   );
   CREATE INDEX label_events_record ON label_events (record_id, id);`,
  // version 3: the recipe a frame was judged under (docs/recipes.md). A column added, no row rewritten: rows
  // written before it read null, as frames judged without a recipe do.
  "ALTER TABLE records ADD COLUMN recipe TEXT;",
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** One row as the writer inserts it. */
export interface RecordRow {
  camera: string;
  ts: number;
  seq: number;
  part_id: string | null;
  /** The recipe the frame was judged under; null: the camera's own settings. */
  recipe: string | null;
  bundle: string | null;
  model_version: string;
  threshold: number | null;
  threshold_rule: string | null;
  /** Null when the score was not finite (SQLite has no NaN). */
  score: number | null;
  verdict: "ok" | "defect" | "error";
  error: string | null;
  regions: string;
  latency_ms: number;
  image: string | null;
  map: string | null;
  image_bytes: number;
}

const HOUR_MS = 3_600_000;

/**
 * A connection of a thread that does not own the database (queries, labels): it follows the file, opening it again
 * whenever the file on disk is another one (moved aside as corrupt, or the folder deleted and recreated by the
 * records thread), and is dropped after an error so the next use starts afresh.
 */
export class FollowingConnection {
  private db: RecordsDatabase | undefined;
  private inode = -1;

  constructor(
    readonly file: string,
    private readonly options: { readonly?: boolean; fileMustExist?: boolean },
  ) {}

  get(): RecordsDatabase {
    const ino = statSync(this.file).ino;
    if (this.db !== undefined && ino === this.inode) return this.db;
    this.db?.close();
    this.db = openRecordsDb(this.file, this.options);
    this.inode = ino;
    return this.db;
  }

  close(): void {
    this.db?.close();
    this.db = undefined;
  }
}

/**
 * Opens (and with `readonly` false, creates and migrates) the database. WAL: readers never block the writer, and a
 * power cut loses at most the transactions since the last checkpoint's sync, never the file's integrity. With
 * `synchronous = NORMAL` a commit is not fsynced (the WAL is at checkpoints), which is what lets a slow SD card take
 * hundreds of commits a second; see docs/records.md, Durability.
 */
export function openRecordsDb(
  file: string,
  options: { readonly?: boolean; fileMustExist?: boolean } = {},
): RecordsDatabase {
  const readonly = options.readonly ?? false;
  const db = new Database(file, {
    readonly,
    fileMustExist: readonly || (options.fileMustExist ?? false),
    timeout: 5000,
  });
  try {
    if (!readonly) {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      migrate(db, file);
    } else {
      const version = db.pragma("user_version", { simple: true }) as number;
      if (version > SCHEMA_VERSION)
        throw new Error(`${file} has schema version ${version}; this stpmd knows up to ${SCHEMA_VERSION}`);
    }
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Brings the schema up to date. Two connections may open the file read-write at once (the records thread and the
 * review labels' thread): each step reads the version inside an IMMEDIATE transaction, which holds the write lock
 * from its start, so only one of them applies a migration and the other then finds it applied.
 */
function migrate(db: RecordsDatabase, file: string): void {
  const version = (): number => db.pragma("user_version", { simple: true }) as number;
  const step = db.transaction((): boolean => {
    const v = version();
    if (v > SCHEMA_VERSION) {
      throw new Error(
        `${file} has schema version ${v}, written by a newer stpmd (this one knows up to ${SCHEMA_VERSION})`,
      );
    }
    if (v === SCHEMA_VERSION) return false;
    db.exec(MIGRATIONS[v]!);
    db.pragma(`user_version = ${v + 1}`);
    return true;
  });
  if (version() === SCHEMA_VERSION) return;
  while (step.immediate()) {}
}

/** Prepared statements for the writer: inserting a batch and keeping the hourly counts. */
export class RecordInserter {
  private readonly insert: Database.Statement;
  private readonly countHour: Database.Statement;
  readonly insertMany: (rows: readonly RecordRow[]) => void;

  constructor(private readonly db: RecordsDatabase) {
    this.insert = db.prepare(
      `INSERT INTO records (camera, ts, seq, part_id, recipe, bundle, model_version, threshold, threshold_rule,
         score, verdict, error, regions, latency_ms, image, map, image_bytes)
       VALUES (@camera, @ts, @seq, @part_id, @recipe, @bundle, @model_version, @threshold, @threshold_rule,
         @score, @verdict, @error, @regions, @latency_ms, @image, @map, @image_bytes)`,
    );
    this.countHour = db.prepare(
      `INSERT INTO hourly (camera, hour, ok, defect, error) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (hour, camera) DO UPDATE SET ok = ok + excluded.ok, defect = defect + excluded.defect,
         error = error + excluded.error`,
    );
    // one transaction per call: the rows and their hourly counts are committed together or not at all
    this.insertMany = this.db.transaction((rows: readonly RecordRow[]) => {
      const hours = new Map<
        string,
        { camera: string; hour: number; ok: number; defect: number; error: number }
      >();
      for (const row of rows) {
        this.insert.run(row);
        const hour = Math.floor(row.ts / HOUR_MS) * HOUR_MS;
        const key = `${hour}/${row.camera}`;
        let counts = hours.get(key);
        if (counts === undefined) {
          counts = { camera: row.camera, hour, ok: 0, defect: 0, error: 0 };
          hours.set(key, counts);
        }
        counts[row.verdict] += 1;
      }
      for (const c of hours.values()) this.countHour.run(c.camera, c.hour, c.ok, c.defect, c.error);
    });
  }
}

/** A row as the database returns it. */
interface StoredRow extends RecordRow {
  id: number;
  label: string | null;
}

function toRecord(row: StoredRow): PartRecord {
  return {
    id: row.id,
    camera: row.camera,
    time: jsonTime(row.ts),
    ts: row.ts,
    seq: row.seq,
    part_id: row.part_id,
    recipe: row.recipe ?? null,
    bundle: row.bundle,
    model_version: row.model_version,
    threshold: row.threshold,
    threshold_rule: row.threshold_rule,
    score: row.score,
    verdict: row.verdict,
    error: row.error,
    regions: JSON.parse(row.regions) as Region[],
    latency_ms: row.latency_ms,
    image: row.image,
    map: row.map,
    label: row.label,
  };
}

/** A filter's time that is not a time: the query's caller answers 400 with this message. */
export class QueryError extends Error {}

function timeOf(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseTime(text);
  if (ms === undefined) throw new QueryError(`${name}: "${text}" is not an ISO 8601 time or milliseconds`);
  return ms;
}

/** The WHERE clause and its parameters for a records filter (not the page's cursor). */
function whereOf(filter: Omit<RecordsQuery, "limit" | "cursor">): { sql: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const add = (clause: string, ...values: unknown[]): void => {
    clauses.push(clause);
    params.push(...values);
  };
  if (filter.id !== undefined) add("id = ?", filter.id);
  if (filter.camera !== undefined) add("camera = ?", filter.camera);
  const from = timeOf("from", filter.from);
  const to = timeOf("to", filter.to);
  if (from !== undefined) add("ts >= ?", from);
  if (to !== undefined) add("ts < ?", to);
  if (filter.verdict !== undefined) {
    // the partial index on non-OK verdicts serves defect and error queries (a small share of the rows)
    add(filter.verdict === "ok" ? "verdict = ?" : "verdict = ? AND verdict <> 'ok'", filter.verdict);
  }
  if (filter.score_min !== undefined) add("score >= ?", filter.score_min);
  if (filter.score_max !== undefined) add("score <= ?", filter.score_max);
  if (filter.part_id !== undefined) add("part_id = ?", filter.part_id);
  if (filter.model_version !== undefined) add("model_version = ?", filter.model_version);
  if (filter.label !== undefined) {
    if (filter.label === "none") clauses.push("label IS NULL");
    else add("label = ?", filter.label);
  }
  return { sql: clauses.length > 0 ? `WHERE ${clauses.join(" AND ")}` : "", params };
}

/**
 * One page of records, newest first (by capture time, then id). The cursor is the last record's `ts.id`, so a page
 * costs the same however deep it is (no OFFSET) and rows written meanwhile never shift a page.
 */
export function queryRecords(db: RecordsDatabase, query: RecordsQuery): RecordsPage {
  const { sql, params } = whereOf(query);
  let where = sql;
  if (query.cursor !== undefined) {
    const [ts, id] = query.cursor.split(".").map(Number) as [number, number];
    // `ts <= ?` alone bounds the index range; the OR only sorts out the rows of that one millisecond
    where = `${where === "" ? "WHERE" : `${where} AND`} ts <= ? AND (ts < ? OR id < ?)`;
    params.push(ts, ts, id);
  }
  const limit = query.limit;
  const rows = db
    .prepare(`SELECT * FROM records ${where} ORDER BY ts DESC, id DESC LIMIT ?`)
    .all(...params, limit + 1) as StoredRow[];
  const page = rows.slice(0, limit).map(toRecord);
  const last = page.at(-1);
  return { records: page, next_cursor: rows.length > limit && last ? `${last.ts}.${last.id}` : null };
}

/** Parts per verdict per hour per camera, oldest hour first, from the hourly counts kept beside the rows. */
export function hourlyCounts(db: RecordsDatabase, query: HourlyQuery, now = Date.now()): HourlyRow[] {
  const from = timeOf("from", query.from);
  const to = timeOf("to", query.to) ?? now;
  const clauses = ["hour < ?"];
  const params: unknown[] = [to];
  if (from !== undefined) {
    clauses.push("hour >= ?");
    params.push(Math.floor(from / HOUR_MS) * HOUR_MS);
  }
  if (query.camera !== undefined) {
    clauses.push("camera = ?");
    params.push(query.camera);
  }
  const rows = db
    .prepare(
      `SELECT camera, hour, ok, defect, error FROM hourly WHERE ${clauses.join(" AND ")} ORDER BY hour, camera`,
    )
    .all(...params) as { camera: string; hour: number; ok: number; defect: number; error: number }[];
  return rows.map((r) => ({
    camera: r.camera,
    hour: jsonTime(r.hour),
    ok: r.ok,
    defect: r.defect,
    error: r.error,
    parts: r.ok + r.defect + r.error,
  }));
}

/** Every record of a filter, oldest first, one at a time (an export of a day never holds the day in memory). */
export function* iterateRecords(
  db: RecordsDatabase,
  filter: Omit<RecordsQuery, "limit" | "cursor">,
): Generator<PartRecord> {
  const { sql, params } = whereOf(filter);
  const statement = db.prepare(`SELECT * FROM records ${sql} ORDER BY ts, id`);
  for (const row of statement.iterate(...params)) yield toRecord(row as StoredRow);
}

/** One record by id; undefined when there is none. */
export function recordById(db: RecordsDatabase, id: number): PartRecord | undefined {
  const row = db.prepare("SELECT * FROM records WHERE id = ?").get(id) as StoredRow | undefined;
  return row === undefined ? undefined : toRecord(row);
}

/** The path of a record's frame or map, relative to the records directory; undefined when it has none. */
export function recordFile(db: RecordsDatabase, id: number, which: "image" | "map"): string | undefined {
  const column = which === "image" ? "image" : "map";
  const row = db.prepare(`SELECT ${column} AS file FROM records WHERE id = ?`).get(id) as
    | { file: string | null }
    | undefined;
  return row?.file ?? undefined;
}
