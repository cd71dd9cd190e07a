import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../src/publish/record-store.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
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
