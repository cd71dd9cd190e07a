import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import sharp from "sharp";
import { listImages } from "../../../src/data/images.js";
import { listMvtecTest } from "../../../src/data/mvtec.js";
import type { AuditEntry } from "../../../src/publish/audit.js";
import { openRecordsDb } from "../../../src/publish/record-store.js";
import {
  type LabelReply,
  LabelReplySchema,
  type MaskReply,
  MaskReplySchema,
  type PartRecord,
  type RecordsPage,
  ReviewCountsSchema,
  type UnlabelReply,
  UnlabelReplySchema,
} from "../../../src/publish/records-api.js";
import { labelHistory } from "../../../src/publish/review/label-store.js";
import {
  basicAuth,
  type ReviewServer,
  reviewServer,
  testAuditLog,
  writeReviewRecords,
} from "../../helpers/review.js";
import { tempDir } from "../../helpers/tiny-data.js";

/** What the server answers is what the OpenAPI file promises: the same definitions validate it. */
const ajv = new Ajv({ strict: false });
const valid = {
  label: ajv.compile(LabelReplySchema),
  unlabel: ajv.compile(UnlabelReplySchema),
  mask: ajv.compile(MaskReplySchema),
  counts: ajv.compile(ReviewCountsSchema),
};

describe("review labels over the HTTP server: real SQLite, real files, a real audit log", () => {
  let work: string;
  let server: ReviewServer;
  let audit: ReturnType<typeof testAuditLog>;
  /** The records by seq (cam1 0–4, cam2 5), as GET /api/records gives them. */
  const bySeq = new Map<number, PartRecord>();

  before(async () => {
    work = await tempDir("stpmd-review-http-");
    await writeReviewRecords(path.join(work, "records"));
    audit = testAuditLog(path.join(work, "audit.jsonl"));
    server = await reviewServer(work, audit);
    const page = (await (await fetch(`${server.base}/api/records`)).json()) as RecordsPage;
    for (const r of page.records) bySeq.set(r.seq, r);
    assert.equal(bySeq.size, 6);
  });

  after(async () => {
    await server.http.stop();
  });

  const send = async (
    method: "POST" | "DELETE",
    route: string,
    body?: unknown,
    headers: Record<string, string> = { Authorization: basicAuth() },
  ): Promise<{ status: number; text: string }> => {
    const response = await fetch(`${server.base}${route}`, {
      method,
      headers: { "Content-Type": "application/json", ...headers },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.status, text: await response.text() };
  };
  const label = async (seq: number, body: unknown): Promise<LabelReply> => {
    const { status, text } = await send("POST", `/api/records/${bySeq.get(seq)!.id}/label`, body);
    assert.equal(status, 200, text);
    const reply = JSON.parse(text) as LabelReply;
    assert.ok(valid.label(reply), ajv.errorsText(valid.label.errors));
    return reply;
  };
  const unlabel = async (seq: number): Promise<UnlabelReply> => {
    const { status, text } = await send("DELETE", `/api/records/${bySeq.get(seq)!.id}/label`);
    assert.equal(status, 200, text);
    const reply = JSON.parse(text) as UnlabelReply;
    assert.ok(valid.unlabel(reply), ajv.errorsText(valid.unlabel.errors));
    return reply;
  };
  const auditEntries = async (): Promise<AuditEntry[]> =>
    (await readFile(audit.file, "utf8"))
      .trim()
      .split("\n")
      .map((line) => {
        // the log's own sequence number is the log's business, not the label's
        const { seq: _, ...entry } = JSON.parse(line) as AuditEntry & { seq: number };
        return entry;
      });
  const counts = async (): Promise<unknown> => {
    const reply = (await (await fetch(`${server.base}/api/review/counts`)).json()) as unknown;
    assert.ok(valid.counts(reply), ajv.errorsText(valid.counts.errors));
    return reply;
  };
  const name = (seq: number) => path.basename(bySeq.get(seq)!.image!, ".png");

  test("a false alarm: the frame joins the camera's normal set (retrain's lister finds it) and test/good", async () => {
    const record = bySeq.get(0)!;
    const reply = await label(0, { label: "false_alarm" });
    const { collection, labelled, records } = server.dirs;
    const normal = path.join(collection, "cam1", `${name(0)}_false-alarm.png`);
    const good = path.join(labelled, "cam1", "test", "good", `${name(0)}.png`);
    assert.match(name(0), /^cam1_20261206T140000000Z_0$/);
    assert.deepEqual(reply.files, [normal, good]);
    assert.equal(reply.record.label, "false_alarm");
    assert.equal(reply.record.id, record.id);
    const stored = await readFile(path.join(records, record.image!));
    for (const file of reply.files) {
      assert.deepEqual(await readFile(file), stored, `${file}: the stored frame, byte for byte`);
      assert.equal((await stat(file)).mode & 0o777, 0o640);
    }
    assert.equal((await stat(path.join(collection, "cam1"))).mode & 0o777, 0o750);
    // what `stpmd retrain --frames <collection.dir>/cam1` reads
    assert.deepEqual(await listImages(path.join(collection, "cam1")), [normal]);
    const meta = await sharp(normal).metadata();
    assert.deepEqual([meta.width, meta.height], [16, 16], "the inspected resolution");
    // the records query sees the label
    const page = (await (await fetch(`${server.base}/api/records?label=false_alarm`)).json()) as RecordsPage;
    assert.deepEqual(
      page.records.map((r) => r.id),
      [record.id],
    );
    const [entry] = await auditEntries();
    assert.deepEqual(
      { ...entry, ts: undefined },
      {
        ts: undefined,
        user: "alice",
        via: "http",
        action: "label",
        camera: "cam1",
        target: String(record.id),
        before: null,
        after: { label: "false_alarm", defect_type: null },
        outcome: "ok",
      },
    );
    // the same label again changes nothing and writes no second audit entry
    assert.deepEqual((await label(0, { label: "false_alarm" })).files, reply.files);
    assert.equal((await auditEntries()).length, 1);
  });

  test("a confirmed defect: MVTec layout with the draft mask from the map; eval's lister reads the set", async () => {
    const reply = await label(1, { label: "confirmed_defect", defect_type: "scratch" });
    const root = path.join(server.dirs.labelled, "cam1");
    const image = path.join(root, "test", "scratch", `${name(1)}.png`);
    const mask = path.join(root, "ground_truth", "scratch", `${name(1)}_mask.png`);
    assert.deepEqual(reply.files, [image, mask]);
    // the map is 0.9 at (8, 8) and 0.1 elsewhere, the threshold 0.5: one pixel of the mask is set
    const meta = await sharp(mask).metadata();
    assert.deepEqual([meta.width, meta.height, meta.channels], [16, 16, 1], "a grey PNG at the frame's size");
    const data = await sharp(mask).extractChannel(0).raw().toBuffer();
    const set = [...data].flatMap((v, i) => (v === 0 ? [] : [[i % 16, Math.floor(i / 16), v]]));
    assert.deepEqual(set, [[8, 8, 255]]);
    const samples = await listMvtecTest(root);
    assert.deepEqual(
      samples.map((s) => [path.basename(s.file), s.kind, s.label, s.maskFile]),
      [
        [`${name(0)}.png`, "good", 0, undefined],
        [`${name(1)}.png`, "scratch", 1, mask],
      ],
    );
  });

  test("a draft mask is accepted once, in the database; only a confirmed defect has one", async () => {
    const id = bySeq.get(1)!.id;
    const first = await send("POST", `/api/records/${id}/mask`, { accept: true });
    assert.equal(first.status, 200, first.text);
    const reply = JSON.parse(first.text) as MaskReply;
    assert.ok(valid.mask(reply), ajv.errorsText(valid.mask.errors));
    assert.equal(reply.accepted_by, "alice");
    assert.match(reply.mask, /ground_truth\/scratch\/cam1_.*_1_mask\.png$/);
    const again = JSON.parse(
      (await send("POST", `/api/records/${id}/mask`, { accept: true })).text,
    ) as MaskReply;
    assert.equal(again.accepted_at, reply.accepted_at, "accepted once");
    const onFalseAlarm = await send("POST", `/api/records/${bySeq.get(0)!.id}/mask`, { accept: true });
    assert.equal(onFalseAlarm.status, 409);
    assert.match(onFalseAlarm.text, /labelled false_alarm: only a confirmed defect has a mask/);
    const notAccepting = await send("POST", `/api/records/${id}/mask`, { accept: false });
    assert.equal(notAccepting.status, 400, notAccepting.text);
    const actions = (await auditEntries()).map((e) => e.action);
    assert.deepEqual(actions, ["label", "label", "accept_mask"]);
  });

  test("undo removes exactly the files that label wrote; the label is gone, its history kept", async () => {
    const id = bySeq.get(1)!.id;
    const labelled = (await label(2, { label: "confirmed_defect", defect_type: "scratch" })).files;
    const reply = await unlabel(1);
    const root = path.join(server.dirs.labelled, "cam1");
    assert.deepEqual(reply.files_removed, [
      path.join(root, "test", "scratch", `${name(1)}.png`),
      path.join(root, "ground_truth", "scratch", `${name(1)}_mask.png`),
    ]);
    assert.equal(reply.record.label, null);
    for (const file of reply.files_removed) assert.ok(!existsSync(file), `${file} removed`);
    for (const file of labelled) assert.ok(existsSync(file), `${file}: another label's file, kept`);
    const again = await send("DELETE", `/api/records/${id}/label`);
    assert.equal(again.status, 409);
    assert.equal(again.text, `record ${id} is not labelled: nothing to undo\n`);
    // the last label of a defect type leaves no empty folder behind (eval would stop at it)
    await unlabel(2);
    assert.deepEqual(await readdir(path.join(root, "test")), ["good"]);
    assert.deepEqual(await readdir(path.join(root, "ground_truth")), []);
    const db = openRecordsDb(path.join(server.dirs.records, "records.db"), { readonly: true });
    try {
      const history = labelHistory(db, id).map((e) => [e.action, e.label, e.defect_type, e.user, e.undo]);
      assert.deepEqual(history, [
        ["label", "confirmed_defect", "scratch", "alice", 0],
        ["accept_mask", "confirmed_defect", "scratch", "alice", 0],
        ["unlabel", "confirmed_defect", "scratch", "alice", 1],
      ]);
    } finally {
      db.close();
    }
    const last = (await auditEntries()).at(-1)!;
    assert.equal(last.action, "unlabel");
    assert.deepEqual(last.before, { label: "confirmed_defect", defect_type: "scratch" });
  });

  test("a relabel replaces the old label's files with the new one's", async () => {
    const before = (await label(0, { label: "false_alarm" })).files;
    const reply = await label(0, { label: "confirmed_defect" });
    const root = path.join(server.dirs.labelled, "cam1");
    assert.deepEqual(reply.files, [
      path.join(root, "test", "defect", `${name(0)}.png`),
      path.join(root, "ground_truth", "defect", `${name(0)}_mask.png`),
    ]);
    assert.equal(reply.record.label, "confirmed_defect");
    for (const file of before) assert.ok(!existsSync(file), `${file}: the false alarm's file, removed`);
    for (const file of reply.files) assert.ok(existsSync(file));
    const entry = (await auditEntries()).at(-1)!;
    assert.deepEqual(
      [entry.before, entry.after],
      [
        { label: "false_alarm", defect_type: null },
        { label: "confirmed_defect", defect_type: "defect" },
      ],
    );
  });

  test("refusals: unknown id 404, a record without a frame 409, no login 401, a bad body 400", async () => {
    const unknown = await send("POST", "/api/records/987654/label", { label: "false_alarm" });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text, "no record 987654 (unknown, or deleted by retention)\n");
    const noImage = bySeq.get(3)!;
    const refused = await send("POST", `/api/records/${noImage.id}/label`, { label: "false_alarm" });
    assert.equal(refused.status, 409);
    assert.match(refused.text, new RegExp(`^record ${noImage.id} has no stored frame to label`));
    for (const headers of [{}, { Authorization: basicAuth("alice", "wrong") }] as Record<string, string>[]) {
      const denied = await send(
        "POST",
        `/api/records/${bySeq.get(4)!.id}/label`,
        { label: "false_alarm" },
        headers,
      );
      assert.equal(denied.status, 401, denied.text);
      const undo = await send("DELETE", `/api/records/${bySeq.get(0)!.id}/label`, undefined, headers);
      assert.equal(undo.status, 401, undo.text);
    }
    const id = bySeq.get(4)!.id;
    for (const [body, message] of [
      [{ label: "maybe" }, /^body\.label: /],
      [{ label: "confirmed_defect", defect_type: "good" }, /^body\.defect_type: must match pattern/],
      [{ label: "confirmed_defect", defect_type: "../up" }, /^body\.defect_type: must match pattern/],
      [{ label: "false_alarm", colour: "red" }, /^body: colour is not a field of this request/],
    ] as const) {
      const bad = await send("POST", `/api/records/${id}/label`, body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.match(bad.text, message);
    }
    const notJson = await fetch(`${server.base}/api/records/${id}/label`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: basicAuth() },
      body: "{",
    });
    assert.equal(notJson.status, 400);
    assert.match(await notJson.text(), /^the body is not JSON/);
    assert.equal((await fetch(`${server.base}/api/records/${id}/label`)).status, 405);
    // nothing refused reached the files or the record
    assert.ok(!existsSync(path.join(server.dirs.labelled, "cam1", "test", "good", `${name(4)}.png`)));
    const page = (await (await fetch(`${server.base}/api/records?label=none`)).json()) as RecordsPage;
    assert.ok(page.records.some((r) => r.id === id));
  });

  test("counts per camera in /api/review/counts, the metrics and the sink's health", async () => {
    await label(4, { label: "false_alarm" });
    await label(5, { label: "confirmed_defect" });
    assert.deepEqual(await counts(), {
      cameras: {
        cam1: { false_alarm: 1, confirmed_defect: 1 },
        cam2: { false_alarm: 0, confirmed_defect: 1 },
      },
    });
    const metrics = await (await fetch(`${server.base}/metrics`)).text();
    for (const line of [
      'stpmd_review_labels{camera="cam1",label="false_alarm"} 1',
      'stpmd_review_labels{camera="cam1",label="confirmed_defect"} 1',
      'stpmd_review_labels{camera="cam2",label="false_alarm"} 0',
      'stpmd_review_labels{camera="cam2",label="confirmed_defect"} 1',
    ])
      assert.ok(metrics.includes(line), line);
    assert.deepEqual(server.http.health().cameras, {
      cam1: { review_false_alarms: 1, review_confirmed_defects: 1 },
      cam2: { review_false_alarms: 0, review_confirmed_defects: 1 },
    });
    await unlabel(5);
    assert.deepEqual((await counts()) as object, {
      cameras: { cam1: { false_alarm: 1, confirmed_defect: 1 } },
    });
  });
});

test("a label whose audit entry cannot be written is refused with a 503 naming the audit file; nothing changes", async () => {
  const work = await tempDir("stpmd-review-audit-");
  await writeReviewRecords(path.join(work, "records"));
  // the audit file's path is taken by a folder: every append fails (EISDIR), as on a broken disk
  const missing = path.join(work, "audit.jsonl");
  await mkdir(missing);
  const server = await reviewServer(work, testAuditLog(missing));
  try {
    const page = (await (
      await fetch(`${server.base}/api/records?camera=cam1&verdict=defect&limit=1`)
    ).json()) as RecordsPage;
    const id = page.records[0]!.id;
    const response = await fetch(`${server.base}/api/records/${id}/label`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: basicAuth() },
      body: JSON.stringify({ label: "false_alarm" }),
    });
    assert.equal(response.status, 503);
    const text = await response.text();
    assert.match(text, new RegExp(`^record ${id}: label refused: the audit log could not be written`));
    assert.ok(text.includes(missing), text);
    assert.deepEqual(await readdir(path.join(server.dirs.collection, "cam1")), [], "its files were removed");
    assert.deepEqual(
      await readdir(path.join(server.dirs.labelled, "cam1", "test")),
      [],
      "nor an empty test/good",
    );
    const after = (await (await fetch(`${server.base}/api/records?label=none`)).json()) as RecordsPage;
    assert.equal(after.records.length, 6, "no record labelled");
    assert.deepEqual((await (await fetch(`${server.base}/api/review/counts`)).json()) as object, {
      cameras: {},
    });
  } finally {
    await server.http.stop();
  }
});
