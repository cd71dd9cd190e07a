import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createLogger } from "../src/core/log.js";
import type { InspectionResult } from "../src/core/result.js";
import {
  hourlyCounts,
  iterateRecords,
  openRecordsDb,
  QueryError,
  queryRecords,
  RECORDS_DB,
  RecordInserter,
  type RecordRow,
} from "../src/publish/record-store.js";
import { RecordsThread } from "../src/publish/records/record-thread.js";
import { type RecordJob, RecordWriter } from "../src/publish/records/record-writer.js";
import { RecordJobs } from "../src/publish/records/sink.js";
import type { RecordsQuery } from "../src/publish/records-api.js";
import { Random } from "../src/stpm/random.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

/**
 * The part record's store, measured on this machine's disk (the benchmark's temp folder):
 *
 * 1. rows/s the writer sustains: drains of 8 and 64 rows (an inference batch; a backlog), without images and with
 *    1 % defects saving a 256² frame and its map;
 * 2. what `deliver` costs the frame path: building the rows of a batch of 8 results (256² frames) and queueing them
 *    for the records thread, at 1 %, 10 % and 100 % defects, µs per batch on the main thread (the gathered rows go
 *    in one message every 200 ms, outside the timed call: about 0.05 ms of CPU per 100 rows, docs/records.md);
 * 3. query time on a day of a 4-camera 10 fps line (`--rows`, 3 456 000 by default), bulk-inserted here: the
 *    newest page, a camera's last hour, a camera's defects, a page at noon by cursor, a score filter over the day,
 *    a part id, the hourly counts, an hour's export, and one retention pass deleting the oldest hour.
 *
 * Run: node dist/benchmarks/records.js [--rows 3456000] [--seconds 3] [--dir /var/tmp]
 * Writes results/records.{json,md} (results/records-<rows>.{json,md} for another --rows).
 */

const CAMERAS = ["cam1", "cam2", "cam3", "cam4"];
const DAY_START = Date.UTC(2026, 11, 5);

const { values } = parseArgs({
  options: {
    rows: { type: "string", default: "3456000" },
    seconds: { type: "string", default: "3" },
    dir: { type: "string", default: os.tmpdir() },
  },
});
const ROWS = Number(values.rows);
const SECONDS = Number(values.seconds);
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

function row(i: number, random: Random): Omit<RecordRow, "image" | "map" | "image_bytes"> {
  // 4 cameras at 10 fps each: frame i of the day at i / 40 s; 1 % defects; a part id every 10th frame
  const defect = random.next() < 0.01;
  const score = defect ? 0.6 + random.next() * 0.4 : random.next() * 0.5;
  return {
    camera: CAMERAS[i % 4]!,
    ts: DAY_START + Math.floor((i * 1000) / 40),
    seq: Math.floor(i / 4),
    part_id: i % 10 === 0 ? `P${i}` : null,
    recipe: null,
    bundle: "/var/lib/stpmd/models/bottle",
    model_version: "20261201T000000Z",
    threshold: 0.55,
    threshold_rule: "sigma 3",
    score,
    verdict: defect ? "defect" : "ok",
    error: null,
    regions: defect ? '[{"bbox":[10,12,30,18],"area":412,"peak":0.81,"centroid":[24,20]}]' : "[]",
    latency_ms: 20 + random.next() * 30,
  };
}

function result(i: number, defect: boolean, size: number): InspectionResult {
  return {
    frame: {
      cameraId: CAMERAS[i % 4]!,
      seq: i,
      captureTs: Date.now(),
      width: size,
      height: size,
      rgb: new Uint8Array(size * size * 3).fill(i % 251),
    },
    score: defect ? 0.9 : 0.1,
    threshold: 0.5,
    verdict: defect ? "defect" : "ok",
    regions: [],
    map: new Float32Array(size * size).fill(0.2),
    modelVersion: "20261201T000000Z",
    inferredTs: Date.now(),
  };
}

/** Rows per second the writer commits in drains of `drain` rows for `seconds`. */
async function writerRate(dir: string, drain: number, defectRate: number, seconds: number): Promise<number> {
  await rm(dir, { recursive: true, force: true });
  const writer = new RecordWriter(
    { dir, fileMode: 0o640, dirMode: 0o750, maxAgeMs: 86_400_000 * 365, maxRows: 1e9, maxBytes: 1e12 },
    quiet,
  );
  const random = new Random(7);
  const size = 256;
  const pixels = new Uint8Array(size * size * 3).map(() => Math.floor(random.next() * 256));
  const map = new Float32Array(size * size).map(() => random.next());
  let written = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    const jobs: RecordJob[] = [];
    for (let k = 0; k < drain; k++) {
      const r = row(written + k, random);
      const withImage = random.next() < defectRate;
      jobs.push({
        row: {
          ...r,
          verdict: withImage ? "defect" : "ok",
          ts: Date.now(),
          image: null,
          map: null,
          image_bytes: 0,
        },
        ...(withImage ? { image: { pixels: { width: size, height: size, rgb: pixels }, map } } : {}),
      });
    }
    await writer.write(jobs);
    written += drain;
  }
  const rate = written / ((performance.now() - start) / 1000);
  writer.close();
  return rate;
}

/** µs of main-thread time per delivered batch of 8 (rows built, pixels copied, queued for the thread). */
async function deliverCost(
  dir: string,
  defectRate: number,
  seconds: number,
): Promise<{ us: number; dropped: number; images_dropped: number; batches: number }> {
  await rm(dir, { recursive: true, force: true });
  const thread = new RecordsThread(
    { dir, fileMode: 0o640, dirMode: 0o750, maxAgeMs: 86_400_000 * 365, maxRows: 1e9, maxBytes: 1e12 },
    createLogger("silent"),
  );
  thread.start();
  const jobs = new RecordJobs(
    {
      enabled: true,
      dir,
      labelled_dir: `${dir}-labelled`,
      images: { defects: true, native: false, native_mb: 48, png_compression: 6, normal_sample: 0 },
      retention: { max_age_days: 365, max_rows: 1e9, max_bytes: 1e12 },
      file_mode: "0640",
      dir_mode: "0750",
    },
    () => ({ bundle: "/models/b", rule: "bundle" }),
    (bytes) => thread.admitsImage(bytes),
  );
  const random = new Random(11);
  const batches = Array.from({ length: 50 }, (_, b) =>
    Array.from({ length: 8 }, (_, k) => result(b * 8 + k, random.next() < defectRate, 256)),
  );
  const times: number[] = [];
  const start = performance.now();
  let n = 0;
  // a batch of 8 every 40 ms: 200 frames/s, five times a 4-camera line at 10 fps, so the thread is loaded beyond the
  // line's rate and the queue's bounds show (images left out when the thread cannot encode them as fast)
  while (performance.now() - start < seconds * 1000) {
    const batch = batches[n++ % batches.length]!;
    const t = performance.now();
    const built = jobs.build(batch);
    thread.post(built.jobs, built.transfer);
    times.push((performance.now() - t) * 1000);
    await new Promise((r) => setTimeout(r, 40));
  }
  await thread.stop();
  return {
    us: median(times),
    dropped: thread.counts.dropped,
    images_dropped: jobs.imagesDropped,
    batches: n,
  };
}

function timed<T>(fn: () => T, runs = 5): { ms: number; result: T } {
  let result: T | undefined;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    result = fn();
    times.push(performance.now() - t);
  }
  return { ms: median(times), result: result as T };
}

async function main(): Promise<void> {
  const before = await machineState();
  const work = path.join(values.dir!, `stpmd-records-bench-${process.pid}`);
  const rates: Record<string, number> = {};
  for (const [drain, defects] of [
    [8, 0],
    [64, 0],
    [8, 0.01],
  ] as const) {
    const rate = await writerRate(path.join(work, "rate"), drain, defects, SECONDS);
    rates[`drain ${drain}, ${defects * 100} % defect images`] = rate;
    process.stderr.write(
      `[bench] writer, drains of ${drain}, ${defects * 100} % images: ${rate.toFixed(0)} rows/s\n`,
    );
  }
  const deliver: Record<string, Awaited<ReturnType<typeof deliverCost>>> = {};
  for (const rate of [0.01, 0.1, 1]) {
    deliver[`${rate * 100} % defects`] = await deliverCost(path.join(work, "deliver"), rate, SECONDS);
    process.stderr.write(
      `[bench] deliver at ${rate * 100} % defects: ${JSON.stringify(deliver[`${rate * 100} % defects`])}\n`,
    );
  }

  // a day of the line, bulk-inserted through the writer's own statements in transactions of 100 000 rows
  const dayDir = path.join(work, "day");
  await rm(dayDir, { recursive: true, force: true });
  const writer = new RecordWriter(
    {
      dir: dayDir,
      fileMode: 0o640,
      dirMode: 0o750,
      maxAgeMs: 86_400_000 * 3650,
      maxRows: 1e9,
      maxBytes: 1e12,
    },
    quiet,
  );
  writer.open();
  writer.close();
  const db = openRecordsDb(path.join(dayDir, RECORDS_DB));
  const inserter = new RecordInserter(db);
  const random = new Random(3);
  const insertStart = performance.now();
  for (let i = 0; i < ROWS; i += 100_000) {
    const chunk: RecordRow[] = [];
    for (let k = i; k < Math.min(ROWS, i + 100_000); k++)
      chunk.push({ ...row(k, random), image: null, map: null, image_bytes: 0 });
    inserter.insertMany(chunk);
  }
  const insertS = (performance.now() - insertStart) / 1000;
  db.pragma("wal_checkpoint(TRUNCATE)");
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  const dbBytes = (db.pragma("page_count", { simple: true }) as number) * pageSize;
  process.stderr.write(
    `[bench] ${ROWS} rows inserted in ${insertS.toFixed(1)} s, ${(dbBytes / 2 ** 20).toFixed(0)} MiB\n`,
  );
  db.close();

  const reader = openRecordsDb(path.join(dayDir, RECORDS_DB), { readonly: true });
  const span = Math.floor((ROWS * 1000) / 40);
  const iso = (ms: number) => new Date(ms).toISOString();
  const noon = queryRecords(reader, { limit: 1, to: String(DAY_START + span / 2) }).records[0]!;
  const q = (query: Partial<RecordsQuery>) => () =>
    queryRecords(reader, { limit: 100, ...query }).records.length;
  const queries: [string, () => number][] = [
    ["newest page (100), no filter", q({})],
    ["one camera's last hour, first page", q({ camera: "cam2", from: iso(DAY_START + span - 3_600_000) })],
    ["one camera's defects of the day, first page", q({ camera: "cam3", verdict: "defect" })],
    ["all defects of the day, first page", q({ verdict: "defect" })],
    ["a page at noon by cursor", q({ cursor: `${noon.ts}.${noon.id}` })],
    ["score ≥ 0.95 over the day (no index), first page", q({ score_min: 0.95 })],
    ["part id lookup", q({ part_id: `P${Math.floor(ROWS / 20) * 10}` })],
    [
      "hourly counts of the day",
      () => hourlyCounts(reader, { from: iso(DAY_START), to: iso(DAY_START + span + 1) }).length,
    ],
    [
      "export one camera's hour (iterate every row)",
      () => {
        let n = 0;
        for (const _ of iterateRecords(reader, {
          camera: "cam1",
          from: iso(DAY_START + span / 2),
          to: iso(DAY_START + span / 2 + 3_600_000),
        }))
          n += 1;
        return n;
      },
    ],
  ];
  const queryTimes: { query: string; ms: number; rows: number }[] = [];
  for (const [name, fn] of queries) {
    try {
      const { ms, result } = timed(fn);
      queryTimes.push({ query: name, ms, rows: result });
      process.stderr.write(`[bench] ${name}: ${ms.toFixed(2)} ms (${result} rows)\n`);
    } catch (err) {
      if (!(err instanceof QueryError)) throw err;
    }
  }
  reader.close();

  // retention: the oldest hour of the day deleted by age, as one pass of the writer does it
  const aged = new RecordWriter(
    {
      dir: dayDir,
      fileMode: 0o640,
      dirMode: 0o750,
      maxAgeMs: span - 3_600_000,
      maxRows: 1e9,
      maxBytes: 1e12,
    },
    quiet,
  );
  const openStart = performance.now();
  aged.open();
  const openMs = performance.now() - openStart;
  const retainStart = performance.now();
  await aged.retain(DAY_START + span);
  const retainMs = performance.now() - retainStart;
  const retained = { deleted: aged.stats.deleted, ms: retainMs, open_ms: openMs };
  aged.close();
  process.stderr.write(
    `[bench] open (quick_check, counts) ${openMs.toFixed(0)} ms; retention of the oldest hour: ${JSON.stringify(retained)}\n`,
  );
  await rm(work, { recursive: true, force: true });

  const report = {
    machine: machineInfo(),
    disk_dir: values.dir,
    before,
    after: await machineState(),
    rows: ROWS,
    insert_s: insertS,
    insert_rows_per_s: ROWS / insertS,
    db_mib: dbBytes / 2 ** 20,
    writer_rows_per_s: rates,
    deliver_us_per_batch_of_8: deliver,
    queries: queryTimes,
    retention: retained,
  };
  const md = [
    `# Part record: store and queries (${ROWS.toLocaleString("en")} rows)`,
    "",
    `\`node dist/benchmarks/records.js --rows ${ROWS}\` on ${String(report.machine.cpu)} (${String(report.machine.logical_cpus)} cores, shared), temp disk \`${values.dir}\`; load before ${JSON.stringify(before.loadavg)}, after ${JSON.stringify(report.after.loadavg)}.`,
    "",
    "## Writer (records thread side)",
    "",
    "| drains | rows/s |",
    "|---|---:|",
    ...Object.entries(rates).map(([k, v]) => `| ${k} | ${fmt(v, 0)} |`),
    "",
    "## Frame path: `deliver` of a batch of 8 results (256² frames)",
    "",
    "A batch every 40 ms (200 frames/s, five times a 4-camera 10 fps line); the time is the sink's `deliver` on the",
    "main thread: rows built, the images' pixels copied, queued for the records thread (which gets what gathered in one message every 200 ms, not timed here).",
    "",
    "| defects | µs per batch (median) | batches | rows dropped | images left out (queue full) |",
    "|---|---:|---:|---:|---:|",
    ...Object.entries(deliver).map(
      ([k, v]) => `| ${k} | ${fmt(v.us, 1)} | ${v.batches} | ${v.dropped} | ${v.images_dropped} |`,
    ),
    "",
    `## A day of a 4-camera 10 fps line: ${ROWS.toLocaleString("en")} rows, ${fmt(report.db_mib, 0)} MiB`,
    "",
    `Bulk insert: ${fmt(insertS, 1)} s (${fmt(report.insert_rows_per_s, 0)} rows/s, transactions of 100 000 rows, four indexes and the hourly counts).`,
    "",
    "| query | ms (median of 5) | rows |",
    "|---|---:|---:|",
    ...queryTimes.map((t) => `| ${t.query} | ${fmt(t.ms, 2)} | ${t.rows} |`),
    "",
    `Opening the day's database (quick_check, row count, image bytes): ${fmt(openMs, 0)} ms. One retention pass deleting the oldest hour (${retained.deleted} rows): ${fmt(retainMs, 0)} ms, on the records thread.`,
  ].join("\n");
  const stem = ROWS === 3_456_000 ? "records" : `records-${ROWS}`;
  const file = await writeResults(stem, report, md);
  process.stderr.write(`[bench] wrote ${file}\n`);
}

await main();
