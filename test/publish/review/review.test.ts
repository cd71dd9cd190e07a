import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../../src/core/log.js";
import { listImages } from "../../../src/data/images.js";
import { Collector } from "../../../src/publish/collection/collector.js";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../../src/publish/record-store.js";
import { RecordsThread } from "../../../src/publish/records/record-thread.js";
import { reviewOf } from "../../../src/publish/review/counts.js";
import { ReviewService } from "../../../src/publish/review/review.js";
import { collectionConfig, testConfig } from "../../helpers/config.js";
import { recordJob, recordResult, writerOptionsFor } from "../../helpers/records.js";
import { testAuditLog, writeReviewRecords } from "../../helpers/review.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { tinyEvalBundle } from "../../helpers/tiny-mvtec.js";
import { waitFor } from "../../helpers/wait.js";

const logger = createLogger("silent");

/** A review service over `work`'s records, labelled set and normal set, auditing to `work/audit.jsonl`. */
function service(work: string): ReviewService {
  const config = testConfig({
    records: { dir: path.join(work, "records"), labelled_dir: path.join(work, "labelled") },
    collection: { dir: path.join(work, "frames") },
  });
  return new ReviewService({
    records: config.records,
    collection: config.collection,
    audit: testAuditLog(path.join(work, "audit.jsonl")),
    logger,
  });
}

test("the labelled set is what `stpmd eval --data <labelled_dir>/<camera>` reads", async () => {
  const work = await tempDir("stpmd-review-eval-");
  await writeReviewRecords(path.join(work, "records"));
  const review = service(work);
  await review.start();
  try {
    const db = openRecordsDb(path.join(work, "records", RECORDS_DB), { readonly: true });
    const ids = new Map([...iterateRecords(db, { camera: "cam1" })].map((r) => [r.seq, r.id]));
    db.close();
    await review.label(ids.get(0)!, "false_alarm", undefined, "alice");
    await review.label(ids.get(4)!, "false_alarm", undefined, "alice");
    await review.label(ids.get(1)!, "confirmed_defect", "scratch", "alice");
    await review.label(ids.get(2)!, "confirmed_defect", undefined, "bob");
    await review.acceptMask(ids.get(2)!, "bob");
  } finally {
    await review.stop();
  }
  const bundle = path.join(work, "model");
  await tinyEvalBundle(work, bundle, logger);
  const data = path.join(work, "labelled", "cam1");
  const cli = spawnSync(
    process.execPath,
    ["dist/src/main.cjs", "eval", "--model", bundle, "--data", data, "--json", "-"],
    { encoding: "utf8", timeout: 120_000 },
  );
  assert.equal(cli.status, 0, cli.stderr);
  const report = JSON.parse(cli.stdout.slice(cli.stdout.indexOf("{"))) as {
    num_images: number;
    num_good: number;
    num_defective: number;
    pixel_auroc: number;
  };
  assert.deepEqual([report.num_images, report.num_good, report.num_defective], [4, 2, 2]);
  assert.ok(report.pixel_auroc >= 0 && report.pixel_auroc <= 1, `pixel AUROC ${report.pixel_auroc}`);
});

test("labels and the records thread write one database at once: no batch and no label fails", async () => {
  const work = await tempDir("stpmd-review-race-");
  const records = path.join(work, "records");
  await writeReviewRecords(records);
  const thread = new RecordsThread(writerOptionsFor(records), logger);
  thread.start();
  const review = service(work);
  await review.start();
  try {
    const db = openRecordsDb(path.join(records, RECORDS_DB), { readonly: true });
    const ids = [...iterateRecords(db, {})].filter((r) => r.image !== null).map((r) => r.id);
    db.close();
    assert.equal(ids.length, 5);
    // the thread takes 200 rows every 5 ms (one transaction per 200 ms drain) while each record is labelled, relabelled and undone
    let seq = 1000;
    let posted = 0;
    const feeding = setInterval(() => {
      if (
        thread.post(
          Array.from({ length: 200 }, () => recordJob(seq++)),
          [],
        )
      )
        posted += 200;
    }, 5);
    try {
      for (const id of ids) {
        await review.label(id, "false_alarm", undefined, "alice");
        await review.label(id, "confirmed_defect", undefined, "alice");
        await review.unlabel(id, "alice");
        await review.label(id, "false_alarm", undefined, "alice");
      }
    } finally {
      clearInterval(feeding);
    }
    assert.ok(posted >= 1000, `the labels ran while the thread wrote (${posted} rows posted meanwhile)`);
    await waitFor("the rows written", () => thread.stats?.written === posted || undefined, 60_000);
    assert.equal(thread.stats?.failed, 0);
    assert.deepEqual(review.labelCounts(), {
      cam1: { false_alarm: 4, confirmed_defect: 0 },
      cam2: { false_alarm: 1, confirmed_defect: 0 },
    });
  } finally {
    await review.stop();
    await thread.stop();
  }
});

test("a camera's review counts come from the HTTP sink's health; none without it", () => {
  const http = {
    name: "http",
    cameras: { cam1: { review_false_alarms: 3, review_confirmed_defects: 2 } },
  };
  assert.deepEqual(reviewOf([{ name: "mqtt" }, http], "cam1"), { false_alarms: 3, confirmed_defects: 2 });
  assert.deepEqual(reviewOf([http], "cam2"), { false_alarms: 0, confirmed_defects: 0 });
  assert.equal(reviewOf([{ name: "http" }], "cam1"), undefined, "labels not served");
});

test("the collector's rolling window never deletes a labelled false alarm", async () => {
  const work = await tempDir("stpmd-review-collector-");
  const dir = path.join(work, "frames");
  await writeReviewRecords(path.join(work, "records"));
  const review = service(work);
  await review.start();
  const db = openRecordsDb(path.join(work, "records", RECORDS_DB), { readonly: true });
  const [first] = [...iterateRecords(db, { camera: "cam1", verdict: "defect" })];
  db.close();
  const labelled = (await review.label(first!.id, "false_alarm", undefined, "alice")).files[0]!;
  await review.stop();
  // two frames the collector saved earlier, then a collector keeping one frame per camera
  await mkdir(path.join(dir, "cam1"), { recursive: true });
  for (const name of ["cam1_20261201T000000000Z_1.png", "cam1_20261201T000001000Z_2.png"])
    await copyFile(labelled, path.join(dir, "cam1", name));
  const collector = await Collector.open(
    collectionConfig({ enabled: true, dir, score_quantile: 1, min_interval_s: 0, max_frames_per_camera: 1 }),
    logger,
  );
  collector.consider(recordResult(7, { ts: Date.UTC(2026, 11, 7) }), [1]);
  await waitFor("a frame saved", () => collector.saved === 1 || undefined);
  await waitFor("the oldest deleted", () => collector.deleted === 2 || undefined);
  assert.deepEqual(await readdir(path.join(dir, "cam1")), [
    path.basename(labelled),
    "cam1_20261207T000000000Z_7.png",
  ]);
  // and retrain reads both
  assert.equal((await listImages(path.join(dir, "cam1"))).length, 2);
});

test("the draft mask without a map: the regions' boxes, or empty; a frame gone is a 409 naming it", async () => {
  const work = await tempDir("stpmd-review-mask-");
  const records = path.join(work, "records");
  await writeReviewRecords(records);
  const review = service(work);
  await review.start();
  try {
    const db = openRecordsDb(path.join(records, RECORDS_DB), { readonly: true });
    const bySeq = new Map([...iterateRecords(db, {})].map((r) => [r.seq, r]));
    db.close();
    const maskOf = async (files: string[]) => {
      const mask = files.find((f) => f.endsWith("_mask.png"))!;
      const data = await sharp(mask).extractChannel(0).raw().toBuffer();
      return [...data].flatMap((v, i) => (v === 0 ? [] : [[i % 16, Math.floor(i / 16)]]));
    };
    // a defect whose map was deleted by hand: its region, bbox [8, 8, 1, 1]
    await rm(path.join(records, bySeq.get(0)!.map!));
    const fromRegions = await review.label(bySeq.get(0)!.id, "confirmed_defect", undefined, "alice");
    assert.deepEqual(await maskOf(fromRegions.files), [[8, 8]]);
    // a good frame labelled a defect (a miss): no map, no regions, an empty draft to draw on
    const missed = await review.label(bySeq.get(4)!.id, "confirmed_defect", undefined, "alice");
    assert.deepEqual(await maskOf(missed.files), []);
    await rm(path.join(records, bySeq.get(1)!.image!));
    await assert.rejects(review.label(bySeq.get(1)!.id, "false_alarm", undefined, "alice"), {
      status: 409,
      message: `record ${bySeq.get(1)!.id}: its frame ${bySeq.get(1)!.image} is gone (deleted by retention or by hand)`,
    });
  } finally {
    await review.stop();
  }
});
