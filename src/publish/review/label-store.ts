/**
 * The review labels in the part record's database (schema version 2, `label_events`): every label, undo and mask
 * acceptance is a row of its own, inserted and never changed, so the history of a record's labels is kept whole. A
 * record's label is its latest `label` or `unlabel` event; `records.label` mirrors it (same transaction) so that
 * `GET /api/records?label=…` filters on an indexed column of the row itself.
 */
import type { RecordsDatabase } from "../record-store.js";
import type { Label } from "../records-api.js";

export type LabelAction = "label" | "unlabel" | "accept_mask";

/** One row of `label_events`. */
export interface LabelEvent {
  id: number;
  record_id: number;
  camera: string;
  action: LabelAction;
  /** The label set (`label`), the label undone (`unlabel`), the label whose mask was accepted (`accept_mask`). */
  label: Label;
  defect_type: string | null;
  user: string;
  ts: number;
  /** 1 for an undo. */
  undo: 0 | 1;
  /** Files the event wrote (`label`), removed (`unlabel`), or the mask accepted (`accept_mask`): absolute paths. */
  files: string[];
}

type StoredEvent = Omit<LabelEvent, "files"> & { files: string };

function toEvent(row: StoredEvent): LabelEvent {
  return { ...row, files: JSON.parse(row.files) as string[] };
}

/** The label a record has now (its latest `label` event, unless an `unlabel` came after it); undefined when none. */
export function currentLabel(db: RecordsDatabase, recordId: number): LabelEvent | undefined {
  const row = db
    .prepare(
      `SELECT * FROM label_events WHERE record_id = ? AND action IN ('label', 'unlabel') ORDER BY id DESC LIMIT 1`,
    )
    .get(recordId) as StoredEvent | undefined;
  return row !== undefined && row.action === "label" ? toEvent(row) : undefined;
}

/** The acceptance of the current label's mask, if it was accepted since that label was set. */
export function maskAcceptance(db: RecordsDatabase, label: LabelEvent): LabelEvent | undefined {
  const row = db
    .prepare(
      `SELECT * FROM label_events WHERE record_id = ? AND action = 'accept_mask' AND id > ? ORDER BY id LIMIT 1`,
    )
    .get(label.record_id, label.id) as StoredEvent | undefined;
  return row === undefined ? undefined : toEvent(row);
}

/** Every event of a record, oldest first. */
export function labelHistory(db: RecordsDatabase, recordId: number): LabelEvent[] {
  return (
    db.prepare("SELECT * FROM label_events WHERE record_id = ? ORDER BY id").all(recordId) as StoredEvent[]
  ).map(toEvent);
}

/**
 * Inserts one event and, for a label or an undo, sets the record's `label` column to match, in one transaction.
 * Returns the event's id.
 */
export function appendLabelEvent(db: RecordsDatabase, event: Omit<LabelEvent, "id">): number {
  return db.transaction(() => {
    const { lastInsertRowid } = db
      .prepare(
        `INSERT INTO label_events (record_id, camera, action, label, defect_type, user, ts, undo, files)
         VALUES (@record_id, @camera, @action, @label, @defect_type, @user, @ts, @undo, @files)`,
      )
      .run({ ...event, files: JSON.stringify(event.files) });
    if (event.action !== "accept_mask") {
      db.prepare("UPDATE records SET label = ? WHERE id = ?").run(
        event.action === "label" ? event.label : null,
        event.record_id,
      );
    }
    return Number(lastInsertRowid);
  })();
}

/** Frames labelled now, per camera and label: records whose latest label or unlabel event is a label. */
export type LabelCounts = Record<string, Record<Label, number>>;

export function labelCounts(db: RecordsDatabase): LabelCounts {
  const rows = db
    .prepare(
      `SELECT camera, label, count(*) AS n FROM label_events AS e
       WHERE action = 'label' AND id = (SELECT max(id) FROM label_events
         WHERE record_id = e.record_id AND action IN ('label', 'unlabel'))
       GROUP BY camera, label ORDER BY camera`,
    )
    .all() as { camera: string; label: Label; n: number }[];
  const counts: LabelCounts = {};
  for (const { camera, label, n } of rows) {
    counts[camera] ??= { false_alarm: 0, confirmed_defect: 0 };
    counts[camera][label] = n;
  }
  return counts;
}
