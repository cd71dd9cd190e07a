import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import {
  iterateRecords,
  openRecordsDb,
  RECORDS_DB,
  SCHEMA_VERSION,
} from "../../../src/publish/record-store.js";
import {
  appendLabelEvent,
  currentLabel,
  type LabelEvent,
  labelCounts,
  labelHistory,
  maskAcceptance,
} from "../../../src/publish/review/label-store.js";
import { writeReviewRecords } from "../../helpers/review.js";
import { tempDir } from "../../helpers/tiny-data.js";

test("a version-1 database gains the label history at open, its rows untouched", async () => {
  const dir = await tempDir("stpmd-label-store-");
  await writeReviewRecords(dir);
  const file = path.join(dir, RECORDS_DB);
  // as an earlier release left it: no label_events, user_version 1
  const old = openRecordsDb(file);
  old.exec("DROP TABLE label_events");
  old.exec("ALTER TABLE records DROP COLUMN recipe");
  old.pragma("user_version = 1");
  const before = [...iterateRecords(old, {})];
  old.close();
  const db = openRecordsDb(file);
  try {
    assert.equal(SCHEMA_VERSION, 3);
    assert.equal(db.pragma("user_version", { simple: true }), 3);
    assert.deepEqual([...iterateRecords(db, {})], before);
    assert.deepEqual(labelCounts(db), {});
  } finally {
    db.close();
  }
});

test("a record's label is its latest label or undo; the history keeps every event; counts follow", async () => {
  const dir = await tempDir("stpmd-label-store-");
  await writeReviewRecords(dir);
  const db = openRecordsDb(path.join(dir, RECORDS_DB));
  try {
    const [a, b] = [...iterateRecords(db, { camera: "cam1" })].map((r) => r.id);
    const event = (
      recordId: number,
      action: LabelEvent["action"],
      label: LabelEvent["label"],
      ts: number,
    ): Omit<LabelEvent, "id"> => ({
      record_id: recordId,
      camera: "cam1",
      action,
      label,
      defect_type: label === "confirmed_defect" ? "defect" : null,
      user: "alice",
      ts,
      undo: action === "unlabel" ? 1 : 0,
      files: [`/x/${recordId}-${ts}.png`],
    });
    appendLabelEvent(db, event(a!, "label", "false_alarm", 1));
    appendLabelEvent(db, event(b!, "label", "confirmed_defect", 2));
    assert.deepEqual(labelCounts(db), { cam1: { false_alarm: 1, confirmed_defect: 1 } });
    const label = db.prepare("SELECT label FROM records WHERE id = ?").pluck();
    assert.equal(label.get(a), "false_alarm", "records.label mirrors it");
    appendLabelEvent(db, event(a!, "unlabel", "false_alarm", 3));
    assert.equal(currentLabel(db, a!), undefined);
    assert.equal(label.get(a), null);
    appendLabelEvent(db, event(a!, "label", "confirmed_defect", 4));
    assert.deepEqual(labelCounts(db), { cam1: { false_alarm: 0, confirmed_defect: 2 } });
    const current = currentLabel(db, b!)!;
    assert.equal(maskAcceptance(db, current), undefined);
    appendLabelEvent(db, event(b!, "accept_mask", "confirmed_defect", 5));
    assert.equal(maskAcceptance(db, current)?.ts, 5);
    assert.equal(label.get(b), "confirmed_defect", "an acceptance leaves the label");
    // a relabel after the acceptance starts a new draft
    appendLabelEvent(db, event(b!, "label", "confirmed_defect", 6));
    assert.equal(maskAcceptance(db, currentLabel(db, b!)!), undefined);
    assert.deepEqual(
      labelHistory(db, a!).map((e) => [e.action, e.label, e.undo, e.files]),
      [
        ["label", "false_alarm", 0, [`/x/${a}-1.png`]],
        ["unlabel", "false_alarm", 1, [`/x/${a}-3.png`]],
        ["label", "confirmed_defect", 0, [`/x/${a}-4.png`]],
      ],
    );
    // the history outlives the record's row (retention)
    db.prepare("DELETE FROM records WHERE id = ?").run(a);
    assert.equal(labelHistory(db, a!).length, 3);
    assert.deepEqual(labelCounts(db), { cam1: { false_alarm: 0, confirmed_defect: 2 } });
  } finally {
    db.close();
  }
});
