import Database from "better-sqlite3";
import type { ShadowState } from "../../publish/candidates.js";

/** The database file of a shadow run, inside its `shadow/` folder. */
export const SHADOW_DB_FILE = "shadow.db";

/** One shadowed frame: both models' judgement of the same live frame. */
export interface ShadowPair {
  seq: number;
  /** Capture time, epoch ms. */
  capture_ts: number;
  live_score: number;
  live_verdict: string;
  live_threshold: number;
  live_model: string;
  candidate_score: number;
  candidate_verdict: string;
  candidate_threshold: number;
  candidate_model: string;
  /** The kept disagreement's file prefix under `images/` (`<prefix>-frame.png`, `-live.png`, `-candidate.png`). */
  image: string | null;
}

/** A shadow run's own state, in the `meta` table: what a restarted daemon resumes from. */
export interface ShadowMeta {
  state: ShadowState;
  candidate_model_version: string;
  started_at: string;
  ends_at: string;
  ended_at?: string;
  stopped_reason?: string;
  share: number;
  max_frames: number;
  /** Frames offered to the candidate and dropped, over the whole run (restarts included). */
  dropped: number;
}

/** Counts over every pair of the run. */
export interface ShadowCounts {
  frames: number;
  live_alarms: number;
  candidate_alarms: number;
  disagreements: number;
  /** Disagreements whose images were kept. */
  kept: number;
}

/** The verdict that raises an alarm: the one definition the counts, the images and the evidence share. */
export const ALARM_VERDICT = "defect";

export function isAlarm(verdict: string): boolean {
  return verdict === ALARM_VERDICT;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL, capture_ts INTEGER NOT NULL,
    live_score REAL, live_verdict TEXT NOT NULL, live_threshold REAL NOT NULL, live_model TEXT NOT NULL,
    candidate_score REAL, candidate_verdict TEXT NOT NULL, candidate_threshold REAL NOT NULL,
    candidate_model TEXT NOT NULL,
    image TEXT
  );
`;

/** A row as SQLite gives it back: a score that was not finite is stored as NULL. */
type PairRow = Omit<ShadowPair, "live_score" | "candidate_score"> & {
  live_score: number | null;
  candidate_score: number | null;
};

/**
 * A shadow run's record (better-sqlite3, WAL, synchronous=NORMAL: a commit does not fsync, a checkpoint does; a
 * crash may lose the last batches since the last checkpoint, never tear a row). A running run writes through its
 * database thread (shadow-db-worker.ts says why); reads (a start, a stopped run's view, the evidence) are rare
 * and run where they are asked.
 */
export class ShadowDb {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  private readonly setMeta: Database.Statement;

  constructor(file: string, options: { readonly?: boolean } = {}) {
    this.db = new Database(file, options.readonly ? { readonly: true, fileMustExist: true } : {});
    if (!options.readonly) {
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      this.db.exec(SCHEMA);
    }
    this.insert = options.readonly
      ? this.db.prepare("SELECT 1")
      : this.db.prepare(
          `INSERT INTO pairs (seq, capture_ts, live_score, live_verdict, live_threshold, live_model,
             candidate_score, candidate_verdict, candidate_threshold, candidate_model, image)
           VALUES (@seq, @capture_ts, @live_score, @live_verdict, @live_threshold, @live_model,
             @candidate_score, @candidate_verdict, @candidate_threshold, @candidate_model, @image)`,
        );
    this.setMeta = options.readonly
      ? this.db.prepare("SELECT 1")
      : this.db.prepare(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        );
  }

  /** The run's meta; undefined for a new database. */
  meta(): ShadowMeta | undefined {
    const rows = this.db.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[];
    if (rows.length === 0) return undefined;
    const m: Record<string, unknown> = {};
    for (const r of rows) m[r.key] = JSON.parse(r.value);
    return m as unknown as ShadowMeta;
  }

  writeMeta(meta: ShadowMeta): void {
    this.db.transaction(() => this.writeMetaRows(meta))();
  }

  private writeMetaRows(meta: ShadowMeta): void {
    this.db.prepare("DELETE FROM meta").run();
    for (const [key, value] of Object.entries(meta)) {
      if (value !== undefined) this.setMeta.run(key, JSON.stringify(value));
    }
  }

  /** One shadow batch: its pairs and the run's meta (the dropped count), in one transaction. */
  addBatch(pairs: readonly ShadowPair[], meta: ShadowMeta): void {
    this.db.transaction(() => {
      for (const p of pairs) {
        this.insert.run({
          ...p,
          live_score: Number.isFinite(p.live_score) ? p.live_score : null,
          candidate_score: Number.isFinite(p.candidate_score) ? p.candidate_score : null,
        });
      }
      this.writeMetaRows(meta);
    })();
  }

  counts(): ShadowCounts {
    const row = this.db
      .prepare(
        `SELECT COUNT(*) AS frames,
           COALESCE(SUM(live_verdict = @alarm), 0) AS live_alarms,
           COALESCE(SUM(candidate_verdict = @alarm), 0) AS candidate_alarms,
           COALESCE(SUM((live_verdict = @alarm) != (candidate_verdict = @alarm)), 0) AS disagreements,
           COUNT(image) AS kept
         FROM pairs`,
      )
      .get({ alarm: ALARM_VERDICT }) as ShadowCounts;
    return row;
  }

  /** Every pair, in the order judged. */
  pairs(): ShadowPair[] {
    const rows = this.db.prepare("SELECT * FROM pairs ORDER BY id").all() as (PairRow & { id: number })[];
    return rows.map(({ id: _id, ...r }) => ({
      ...r,
      live_score: r.live_score ?? Number.NaN,
      candidate_score: r.candidate_score ?? Number.NaN,
    }));
  }

  /** Forgets every pair and the meta (a new candidate starts its shadow from nothing). */
  reset(): void {
    this.db.exec("DELETE FROM pairs; DELETE FROM meta;");
  }

  close(): void {
    this.db.close();
  }
}
