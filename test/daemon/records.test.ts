import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { resizeRgb } from "../../src/data/images.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../src/publish/record-store.js";
import { testConfig } from "../helpers/config.js";
import { noiseFrames, replaySource, tinyStation } from "../helpers/daemon-process.js";
import { writePart } from "../helpers/tiny-data.js";
import { waitFor } from "../helpers/wait.js";

test("a replay run: every inspected frame is a row with its fields, defects have frame and map, 1 in N normal frames a frame", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-records-daemon-");
  const good = path.join(work, "good");
  await mkdir(good);
  for (let i = 0; i < 4; i++) {
    await writePart(
      path.join(good, `${String(i).padStart(3, "0")}.png`),
      synthesizePart(64, 100 + i, "none"),
    );
  }
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 4, max_wait_ms: 10, queue_size: 16 },
    cameras: [
      { id: "noise", source: replaySource(noise, 20) },
      { id: "good", source: replaySource(good, 20) },
    ],
    mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, "outbox") } },
    records: { images: { normal_sample: 3 } },
    health: { watchdog: false },
  });
  assert.equal(config.records.dir, path.join(work, "records"), "beside the outbox by default");
  const seen: InspectionResult[] = [];
  const daemon = new Daemon(config, createLogger("silent"), { hooks: { onResult: (r) => seen.push(r) } });
  await daemon.start();
  try {
    await waitFor(
      "defects and normal frames",
      () =>
        seen.filter((r) => r.verdict === "defect").length >= 10 &&
        seen.filter((r) => r.verdict === "ok").length >= 10,
      60_000,
    );
  } finally {
    await daemon.stop();
  }
  const health = daemon.snapshot().sinks.find((s) => s.name === "records");
  assert.ok(health?.ok, `records healthy: ${health?.detail}`);

  const db = openRecordsDb(path.join(config.records.dir, RECORDS_DB), { readonly: true });
  const rows = [...iterateRecords(db, {})];
  db.close();
  assert.equal(rows.length, seen.length, "one row per inspected frame, all written by the time stop returns");
  assert.equal(health?.counts?.written, seen.length);
  const byKey = new Map(rows.map((row) => [`${row.camera}/${row.seq}`, row]));
  const goodSeen = new Map<string, number>();
  for (const r of seen) {
    const row = byKey.get(`${r.frame.cameraId}/${r.frame.seq}`);
    assert.ok(row, `a row for ${r.frame.cameraId} #${r.frame.seq}`);
    assert.equal(row.ts, r.frame.captureTs);
    assert.equal(row.verdict, r.verdict);
    assert.ok(Math.abs(row.score! - r.score) < 1e-6);
    assert.ok(Math.abs(row.threshold! - r.threshold) < 1e-6);
    assert.equal(row.model_version, r.modelVersion);
    assert.equal(row.bundle, bundle);
    assert.equal(row.threshold_rule, "bundle");
    assert.equal(row.latency_ms, r.inferredTs - r.frame.captureTs);
    assert.deepEqual(row.regions, r.regions);
    if (r.verdict === "defect") {
      assert.ok(row.image && existsSync(path.join(config.records.dir, row.image)), "a defect's frame");
      assert.ok(row.map && existsSync(path.join(config.records.dir, row.map)), "a defect's map");
    } else {
      const n = goodSeen.get(r.frame.cameraId) ?? 0;
      goodSeen.set(r.frame.cameraId, n + 1);
      assert.equal(row.image !== null, n % 3 === 0, `good frame ${n} of ${r.frame.cameraId}: 1 in 3 kept`);
      assert.equal(row.map, null);
    }
  }
});

/** Daemons run by {@link defectsRecorded}: each gets folders of its own. */
let daemonRuns = 0;

/** Runs a daemon on `source` until `defects` defects were judged; returns the results, rows and records health. */
async function defectsRecorded(
  work: string,
  bundle: string,
  source: string,
  records: Record<string, unknown>,
  defects: number,
  inference: Record<string, number> = { max_batch: 1, max_wait_ms: 0, queue_size: 8 },
) {
  const config = testConfig({
    model: { bundle, watch: false },
    inference,
    cameras: [{ id: "wide", source }],
    mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, `outbox-${++daemonRuns}`) } },
    records: { dir: path.join(work, `records-${daemonRuns}`), ...records },
    health: { watchdog: false },
  });
  const seen: InspectionResult[] = [];
  const daemon = new Daemon(config, createLogger("silent"), { hooks: { onResult: (r) => seen.push(r) } });
  await daemon.start();
  try {
    await waitFor("defects", () => seen.filter((r) => r.verdict === "defect").length >= defects, 60_000);
  } finally {
    await daemon.stop();
  }
  const health = daemon.snapshot().sinks.find((s) => s.name === "records");
  const db = openRecordsDb(path.join(config.records.dir, RECORDS_DB), { readonly: true });
  const rows = new Map([...iterateRecords(db, {})].map((row) => [row.seq, row]));
  db.close();
  const image = async (file: string | null) => {
    assert.ok(file, "an image");
    const { data, info } = await sharp(path.join(config.records.dir, file))
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, channels: info.channels, data };
  };
  return { seen: seen.filter((r) => r.verdict === "defect"), rows, health, image };
}

test("a defect's frame is kept at the ROI's own resolution: scaled, it is the frame the model judged; its map is on the model's grid", async () => {
  const { work, bundle } = await tinyStation("stpmd-records-native-");
  const wide = path.join(work, "wide");
  await noiseFrames(wide, 4, 192, 144, 5);
  const run = await defectsRecorded(work, bundle, replaySource(wide, 20), {}, 6);
  assert.ok(run.health?.ok, `records healthy: ${run.health?.detail}`);
  // the frames judged while the daemon stops, after its cameras stopped, can no longer be fetched: only those
  const missed = run.health?.counts?.images_native_missed ?? 0;
  assert.ok(missed <= 2, `${missed} missed`);
  for (const [i, r] of run.seen.entries()) {
    const row = run.rows.get(r.frame.seq);
    assert.ok(row, `a row for defect #${r.frame.seq}`);
    const frame = await run.image(row.image);
    if (i >= run.seen.length - missed) {
      assert.deepEqual([frame.width, frame.height], [r.frame.width, r.frame.height], "the last, at shutdown");
      continue;
    }
    assert.deepEqual([frame.width, frame.height, frame.channels], [192, 144, 3], "the native ROI");
    // the model's frame is GStreamer's scaling of the same frame: a few grey levels from sharp's, where another
    // noise frame is 85 away
    const judged = await resizeRgb(frame.data, 192, 144, r.frame.width, r.frame.height);
    let difference = 0;
    for (let i = 0; i < judged.length; i++) difference += Math.abs(judged[i]! - r.frame.rgb[i]!);
    difference /= judged.length;
    assert.ok(
      difference < 6,
      `defect #${r.frame.seq}: kept = judged, scaled (mean difference ${difference})`,
    );
    const map = await run.image(row.map);
    assert.deepEqual([map.width, map.height], [r.frame.width, r.frame.height], "the map on the model's grid");
  }
  // records.images.native false: the frame as the model saw it, as before
  const plain = await defectsRecorded(work, bundle, replaySource(wide, 20), { images: { native: false } }, 3);
  for (const r of plain.seen) {
    const frame = await plain.image(plain.rows.get(r.frame.seq)!.image);
    assert.deepEqual([frame.width, frame.height], [r.frame.width, r.frame.height]);
  }
});

test("a defect whose native frame is no longer held is kept as the model saw it, and counted", async () => {
  const { work, bundle } = await tinyStation("stpmd-records-native-missed-");
  const wide = path.join(work, "wide");
  // 1200×900 RGB is 3.2 MB: a 1 MiB ring holds only the newest frame, and batches of 8 wait for 8 frames, so all
  // but the last of a batch are judged after a newer frame came
  await noiseFrames(wide, 3, 1200, 900);
  const run = await defectsRecorded(work, bundle, replaySource(wide, 30), { images: { native_mb: 1 } }, 16, {
    max_batch: 8,
    max_wait_ms: 1000,
    queue_size: 16,
  });
  let atCaptureSize = 0;
  for (const r of run.seen) {
    const row = run.rows.get(r.frame.seq);
    assert.ok(row?.image, `defect #${r.frame.seq}: a row with its frame, whatever its size`);
    const frame = await run.image(row.image);
    if (frame.width === r.frame.width) {
      atCaptureSize += 1;
      assert.deepEqual(Buffer.from(frame.data), Buffer.from(r.frame.rgb), "the frame the model saw");
    } else {
      assert.deepEqual([frame.width, frame.height], [1200, 900]);
    }
  }
  assert.ok(
    atCaptureSize >= 7,
    `${atCaptureSize} of ${run.seen.length} defects judged after a newer frame came`,
  );
  // every image kept at the model's size is counted, a sampled normal frame's too (with some noise frames one is
  // judged good, and the first good frame of a camera is sampled)
  let missed = 0;
  for (const row of run.rows.values()) {
    if (row.image !== null && (await run.image(row.image)).width !== 1200) missed += 1;
  }
  assert.ok(missed >= atCaptureSize);
  assert.equal(run.health?.counts?.images_native_missed, missed, "each one counted");
});
