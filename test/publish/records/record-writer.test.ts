import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import {
  iterateRecords,
  openRecordsDb,
  queryRecords,
  RECORDS_DB,
} from "../../../src/publish/record-store.js";
import { RecordWriter, walHeaderProblem } from "../../../src/publish/records/record-writer.js";
import { writerOptions } from "../../../src/publish/records/sink.js";
import { testConfig } from "../../helpers/config.js";
import { capturingLogger } from "../../helpers/logs.js";
import { recordJob, writerOptionsFor } from "../../helpers/records.js";
import { tempDir } from "../../helpers/tiny-data.js";

function read(dir: string) {
  const db = openRecordsDb(path.join(dir, RECORDS_DB), { readonly: true });
  try {
    return [...iterateRecords(db, {})];
  } finally {
    db.close();
  }
}

test("every job becomes a row with its fields; defects get their frame and map, sampled normals their frame", async () => {
  const dir = await tempDir("stpmd-records-");
  const { logger, lines } = capturingLogger();
  const writer = new RecordWriter(writerOptionsFor(dir), logger);
  await writer.write([
    recordJob(0, { image: true }),
    recordJob(1),
    recordJob(2, { verdict: "defect", image: true, partId: "B1764-10" }),
    recordJob(3, { verdict: "error", image: true }),
  ]);
  writer.close();
  const rows = read(dir);
  assert.equal(rows.length, 4);
  const [normal, plain, defect, error] = rows;
  assert.deepEqual(
    { ...defect, id: 0, image: null, map: null },
    {
      id: 0,
      camera: "cam1",
      time: "2026-12-06T14:02:00.200Z",
      ts: Date.UTC(2026, 11, 6, 14, 2, 0, 200),
      seq: 2,
      part_id: "B1764-10",
      recipe: null,
      bundle: "/models/test",
      model_version: "20261201T000000Z",
      threshold: 0.5,
      threshold_rule: "sigma 3",
      score: 0.9,
      verdict: "defect",
      error: null,
      regions: [{ bbox: [8, 8, 1, 1], area: 1, peak: 0.9, centroid: [8, 8] }],
      latency_ms: 25,
      image: null,
      map: null,
      label: null,
    },
  );
  assert.equal(defect!.image, "images/cam1/2026-12-06/cam1_20261206T140200200Z_2.png");
  assert.equal(defect!.map, "images/cam1/2026-12-06/cam1_20261206T140200200Z_2_map.png");
  assert.ok(normal!.image !== null && normal!.map === null, "a sampled normal frame has its frame, no map");
  assert.equal(plain!.image, null);
  assert.equal(error!.score, null, "a NaN score is stored as null");
  assert.equal(error!.error, "the model's score is NaN");
  // the frame as inspected, pixel for pixel; the map grey with 128 at the threshold (0.9 / 0.5 · 128 = 230)
  const frame = await sharp(path.join(dir, defect!.image!)).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([frame.info.width, frame.info.height, frame.info.channels], [16, 16, 3]);
  const pixels = recordJob(2, { image: true }).image!.pixels;
  assert.ok("rgb" in pixels);
  assert.deepEqual(new Uint8Array(frame.data), pixels.rgb);
  assert.equal((await sharp(path.join(dir, defect!.map!)).metadata()).channels, 1, "a grey PNG");
  const map = await sharp(path.join(dir, defect!.map!))
    .extractChannel(0)
    .raw()
    .toBuffer({ resolveWithObject: true });
  assert.equal(map.data[16 * 8 + 8], 230);
  assert.equal(map.data[0], 26, "0.1 / 0.5 · 128");
  assert.equal((await stat(path.join(dir, RECORDS_DB))).mode & 0o777, 0o640);
  assert.equal((await stat(path.join(dir, defect!.image!))).mode & 0o777, 0o640);
  assert.equal(writer.stats.written, 4);
  assert.equal(writer.stats.images_saved, 4, "2 defect files, 1 normal, 1 error frame");
  assert.ok(lines.some((l) => /part record started in/.test(l.msg)));
});

test("retention by rows deletes the oldest rows and their images first, counts them and logs once", async () => {
  const dir = await tempDir("stpmd-records-");
  const { logger, lines } = capturingLogger();
  const writer = new RecordWriter(writerOptionsFor(dir, { maxRows: 10 }), logger);
  for (let batch = 0; batch < 5; batch++) {
    await writer.write(
      Array.from({ length: 5 }, (_, i) => recordJob(batch * 5 + i, { verdict: "defect", image: true })),
    );
  }
  writer.close();
  const rows = read(dir);
  assert.deepEqual(
    rows.map((r) => r.seq),
    [15, 16, 17, 18, 19, 20, 21, 22, 23, 24],
  );
  assert.equal(writer.stats.deleted, 15);
  assert.equal(writer.stats.images_deleted, 30);
  const files = await readdir(path.join(dir, "images/cam1/2026-12-06"));
  assert.equal(files.length, 20, "the kept rows' frames and maps, nothing else");
  assert.ok(files.every((f) => Number(/_(\d+)(_map)?\.png$/.exec(f)![1]) >= 15));
  const retention = lines.filter((l) => /records retention deleted/.test(l.msg));
  assert.equal(retention.length, 1, "logged once a minute, not per pass");
  assert.match(retention[0]!.msg, /max_rows/);
});

test("retention by age and by bytes deletes oldest first", async () => {
  const dir = await tempDir("stpmd-records-");
  const { logger } = capturingLogger();
  const now = Date.UTC(2026, 11, 6, 14, 0, 0);
  const day = 86_400_000;
  const aged = new RecordWriter(writerOptionsFor(dir, { maxAgeMs: 2 * day }), logger);
  await aged.write(
    [5, 4, 3, 1, 0].map((daysAgo, i) => recordJob(i, { ts: now - daysAgo * day - 1000, image: true })),
    now,
  );
  assert.deepEqual(
    read(dir).map((r) => r.seq),
    [3, 4],
    "older than 2 days: gone",
  );
  assert.equal(aged.stats.deleted, 3);
  assert.equal(aged.stats.images_deleted, 3);
  aged.close();

  const dir2 = await tempDir("stpmd-records-");
  const sized = new RecordWriter(writerOptionsFor(dir2), logger);
  await sized.write([recordJob(0)]);
  const empty = sized.stats.bytes;
  sized.close();
  // room for the database and about 5 images of 16² noise (~800 bytes each)
  const bounded = new RecordWriter(writerOptionsFor(dir2, { maxBytes: empty + 5 * 900 }), logger);
  for (let seq = 1; seq <= 20; seq++) await bounded.write([recordJob(seq, { image: true })]);
  const kept = read(dir2).map((r) => r.seq);
  assert.ok(bounded.stats.bytes <= empty + 5 * 900, `${bounded.stats.bytes} bytes kept`);
  assert.ok(kept.length >= 3 && kept.length <= 7, `kept ${kept.join(",")}`);
  assert.equal(kept.at(-1), 20, "the newest is kept");
  assert.deepEqual(
    kept,
    [...kept].sort((a, b) => a - b),
  );
  assert.equal(kept[0], 21 - kept.length, "a contiguous run of the newest");
  bounded.close();
});

test("a corrupt database at start is moved aside with one log line, and a new one takes the rows", async () => {
  const dir = await tempDir("stpmd-records-");
  const { logger, lines } = capturingLogger();
  await writeFile(path.join(dir, RECORDS_DB), Buffer.alloc(8192, 0x5a));
  const writer = new RecordWriter(writerOptionsFor(dir), logger);
  await writer.write([recordJob(0)]);
  writer.close();
  assert.deepEqual(
    read(dir).map((r) => r.seq),
    [0],
  );
  const aside = (await readdir(dir)).filter((f) => f.startsWith(`${RECORDS_DB}.corrupt-`));
  assert.equal(aside.length, 1);
  assert.deepEqual(await readFile(path.join(dir, aside[0]!)), Buffer.alloc(8192, 0x5a), "kept as it was");
  const corrupt = lines.filter((l) => /is corrupt/.test(l.msg));
  assert.equal(corrupt.length, 1);
  assert.match(corrupt[0]!.msg, /moved it aside to .*records\.db\.corrupt-/);
  assert.equal(writer.stats.corrupt_moved, 1);
});

test("a database overwritten while the writer runs is found before the next rows go into it, moved aside, and replaced", async () => {
  const dir = await tempDir("stpmd-records-");
  const { logger, lines } = capturingLogger();
  const writer = new RecordWriter(writerOptionsFor(dir), logger);
  const batch = (from: number) => Array.from({ length: 100 }, (_, i) => recordJob(from + i));
  for (let from = 0; from < 3000; from += 100) await writer.write(batch(from));
  const file = path.join(dir, RECORDS_DB);
  // every page the writer needs for its next insert is in its cache: without the probe the insert succeeds
  await writeFile(file, Buffer.alloc((await stat(file)).size, 0xa5));
  await writeFile(`${file}-wal`, Buffer.alloc((await stat(`${file}-wal`)).size, 0x5a));
  await writer.write(batch(3000));
  assert.equal(writer.stats.corrupt_moved, 1);
  assert.equal(writer.stats.failed, 0, "the drain that found it is written to the new database");
  const corrupt = lines.filter((l) => /is corrupt/.test(l.msg));
  assert.equal(corrupt.length, 1, "one line");
  assert.match(corrupt[0]!.msg, /while running: .*moved it aside to .*records\.db\.corrupt-/);
  await writer.write(batch(3100));
  writer.close();
  assert.deepEqual(
    read(dir).map((r) => r.seq),
    Array.from({ length: 200 }, (_, i) => 3000 + i),
  );
  assert.equal(writer.stats.rows, 200);

  // only the WAL damaged: what a checkpoint had put into the database file is kept readable in the moved file
  const dir2 = await tempDir("stpmd-records-");
  const writer2 = new RecordWriter(writerOptionsFor(dir2), logger);
  for (let from = 0; from < 2000; from += 100) await writer2.write(batch(from));
  const file2 = path.join(dir2, RECORDS_DB);
  const other = openRecordsDb(file2);
  other.pragma("wal_checkpoint(PASSIVE)");
  other.close();
  await writer2.write(batch(2000));
  assert.equal(walHeaderProblem(`${file2}-wal`), undefined, "SQLite's own header passes");
  const flipped = path.join(dir2, "flipped-wal");
  const header = (await readFile(`${file2}-wal`)).subarray(0, 32);
  header[17]! ^= 1; // a bit of the salt
  await writeFile(flipped, header);
  assert.match(walHeaderProblem(flipped) ?? "", /checksum fails/);
  await writeFile(`${file2}-wal`, Buffer.alloc((await stat(`${file2}-wal`)).size, 0x5a));
  await writer2.write(batch(2100));
  writer2.close();
  assert.equal(writer2.stats.corrupt_moved, 1);
  assert.deepEqual(
    read(dir2).map((r) => r.seq),
    Array.from({ length: 100 }, (_, i) => 2100 + i),
  );
  const aside = (await readdir(dir2)).find((f) => /^records\.db\.corrupt-\d+T\d+Z$/.test(f))!;
  for (const suffix of ["-wal", "-shm"]) await rm(path.join(dir2, `${aside}${suffix}`), { force: true });
  const moved = openRecordsDb(path.join(dir2, aside), { readonly: true });
  try {
    assert.equal(moved.pragma("integrity_check", { simple: true }), "ok");
    const seqs = [...iterateRecords(moved, {})].map((r) => r.seq);
    assert.deepEqual(
      seqs.slice(0, 2000),
      Array.from({ length: 2000 }, (_, i) => i),
      "every checkpointed row",
    );
  } finally {
    moved.close();
  }
});

test("a folder deleted while running is recreated with a new database at the next write", async () => {
  const dir = path.join(await tempDir("stpmd-records-"), "records");
  const { logger, lines } = capturingLogger();
  const writer = new RecordWriter(writerOptionsFor(dir), logger);
  await writer.write([recordJob(0, { verdict: "defect", image: true })]);
  await rm(dir, { recursive: true });
  await writer.write([recordJob(1, { verdict: "defect", image: true })]);
  writer.close();
  const rows = read(dir);
  assert.deepEqual(
    rows.map((r) => r.seq),
    [1],
  );
  assert.ok(existsSync(path.join(dir, rows[0]!.image!)));
  assert.equal(writer.stats.recreated, 1);
  assert.ok(lines.some((l) => /was deleted while running; starting a new one/.test(l.msg)));
});

test("pages of a query are newest first and every filter narrows them", async () => {
  const dir = await tempDir("stpmd-records-");
  const writer = new RecordWriter(writerOptionsFor(dir), capturingLogger().logger);
  const t0 = Date.UTC(2026, 11, 6, 14, 0, 0);
  await writer.write(
    Array.from({ length: 30 }, (_, i) =>
      recordJob(i, {
        camera: i % 2 === 0 ? "cam1" : "cam2",
        verdict: i % 5 === 0 ? "defect" : "ok",
        ts: t0 + i * 60_000,
        ...(i === 7 ? { partId: "B1764-10" } : {}),
      }),
    ),
  );
  writer.close();
  const db = openRecordsDb(path.join(dir, RECORDS_DB), { readonly: true });
  const seqs = (q: Parameters<typeof queryRecords>[1]) => queryRecords(db, q).records.map((r) => r.seq);
  const first = queryRecords(db, { limit: 12 });
  assert.deepEqual(
    first.records.map((r) => r.seq),
    [29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18],
  );
  const second = queryRecords(db, { limit: 12, cursor: first.next_cursor! });
  const third = queryRecords(db, { limit: 12, cursor: second.next_cursor! });
  assert.deepEqual(
    [...second.records, ...third.records].map((r) => r.seq),
    Array.from({ length: 18 }, (_, i) => 17 - i),
  );
  assert.equal(third.next_cursor, null);
  assert.deepEqual(seqs({ limit: 100, camera: "cam2", verdict: "defect" }), [25, 15, 5]);
  assert.deepEqual(
    seqs({ limit: 100, from: new Date(t0 + 10 * 60_000).toISOString(), to: String(t0 + 13 * 60_000) }),
    [12, 11, 10],
  );
  assert.deepEqual(seqs({ limit: 100, score_min: 0.5 }), [25, 20, 15, 10, 5, 0]);
  assert.deepEqual(seqs({ limit: 3, score_max: 0.5 }), [29, 28, 27]);
  assert.deepEqual(seqs({ limit: 100, part_id: "B1764-10" }), [7]);
  assert.deepEqual(seqs({ limit: 100, model_version: "other" }), []);
  assert.equal(seqs({ limit: 100, label: "none" }).length, 30, "nothing is labelled yet");
  assert.deepEqual(seqs({ limit: 100, label: "false_alarm" }), []);
  assert.throws(
    () => queryRecords(db, { limit: 1, from: "yesterday" }),
    /from: "yesterday" is not an ISO 8601 time/,
  );
  db.close();
});

test("records.images.png_compression: the frames' PNGs at that zlib level, larger at 0 than at 9, the same pixels", async () => {
  // a smooth 128×96 gradient: compressible, so the levels differ in bytes
  const [width, height] = [128, 96];
  const rgb = new Uint8Array(width * height * 3).map((_, i) => (Math.floor(i / 3) % width) * 2);
  const saved: Record<number, { bytes: number; pixels: Uint8Array }> = {};
  for (const level of [0, 9]) {
    const dir = await tempDir(`stpmd-records-png${level}-`);
    const config = testConfig({ records: { dir, images: { png_compression: level } } }).records;
    const writer = new RecordWriter(writerOptions(config), capturingLogger().logger);
    const job = recordJob(0, { verdict: "defect", image: true });
    job.image!.pixels = { width, height, rgb };
    job.image!.mapSize = { width: 16, height: 16 };
    await writer.write([job]);
    writer.close();
    const [row] = read(dir);
    const file = path.join(dir, row!.image!);
    saved[level] = {
      bytes: (await stat(file)).size,
      pixels: new Uint8Array(await sharp(file).raw().toBuffer()),
    };
  }
  assert.ok(
    saved[0]!.bytes > 2 * saved[9]!.bytes,
    `level 0: ${saved[0]!.bytes} bytes, level 9: ${saved[9]!.bytes}`,
  );
  assert.ok(saved[0]!.bytes >= rgb.byteLength, "level 0 stores the pixels uncompressed");
  assert.deepEqual(saved[0]!.pixels, rgb);
  assert.deepEqual(saved[9]!.pixels, rgb);
});
