import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { MosquittoBroker } from "../../src/demo/broker.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import type { StoredAuditEntry } from "../../src/publish/audit.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { testConfig } from "../helpers/config.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");

async function train(work: string, out: string, seed: number, imageSize: number): Promise<string> {
  const s = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: path.join(work, "train"),
    teacherFile: path.join(work, "teacher.onnx"),
    outDir: out,
    epochs: 1,
    batchSize: 4,
    imageSize,
    seed,
    logger,
    progress: false,
  });
  return s.manifest.model_version;
}

test("a bundle replaced on disk is picked up without a signal, even at another input size", async () => {
  const work = await tempDir("stpmd-reload-");
  await writeFile(path.join(work, "teacher.onnx"), encodeModel(randomTeacher(1, 4)));
  await normalFrames(6, 64, path.join(work, "train"));
  const bundle = path.join(work, "model");
  const first = await train(work, bundle, 1, 64);
  const broker = await MosquittoBroker.start();
  const config = testConfig({
    model: { bundle, watch: true, watch_debounce_ms: 200 },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 8 },
    cameras: [
      {
        id: "pattern",
        source: "videotestsrc is-live=true ! video/x-raw,framerate=20/1",
        stall_timeout_s: 5,
        restart_backoff: { initial_ms: 200, max_ms: 1000 },
      },
    ],
    mqtt: {
      url: broker.url,
      client_id: "reload-test",
      prefix: "reload",
      snapshot: "none",
      reconnect_period_ms: 200,
      status_interval_s: 1,
      outbox: { dir: path.join(work, "outbox"), max_messages: 100, max_bytes: 1 << 24 },
    },
    collection: { dir: path.join(work, "c") },
    log: { level: "error" },
    health: { watchdog: false },
  });
  const sizes: number[] = [];
  const seen: { seq: number }[] = [];
  const daemon = new Daemon(config, logger, {
    hooks: {
      onResult: (r) => {
        sizes.push(r.frame.width);
        seen.push({ seq: r.frame.seq });
      },
    },
  });
  try {
    await daemon.start();
    assert.equal(daemon.modelVersion, first);
    const second = await train(work, bundle, 2, 96);
    const deadline = Date.now() + 15_000;
    while (daemon.modelVersion !== second && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(daemon.modelVersion, second);
    // the swap is on record in the audit log, via the file watch, naming the model now in force
    let swapped: StoredAuditEntry | undefined;
    while (swapped === undefined && Date.now() < deadline + 5000) {
      swapped = (await daemon.audit.query({ action: "reload_result", limit: 1 })).entries[0];
      if (swapped === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(
      [swapped?.via, swapped?.user, swapped?.after],
      ["file-watch", null, { models: [`${path.resolve(bundle)}@${second}`] }],
    );
    // cameras were restarted at the new model size: after the batches already in flight, frames arrive at 96×96
    await waitFor("a 96×96 result", () => sizes.includes(96));
    const first96 = sizes.indexOf(96);
    await waitFor("more results", () => sizes.length >= first96 + 6);
    assert.deepEqual(sizes.slice(first96, first96 + 6), [96, 96, 96, 96, 96, 96]);
    const seqs = seen.map((r) => r.seq);
    assert.ok(
      seqs.every((s, i) => i === 0 || s > seqs[i - 1]!),
      "sequence numbers keep increasing across the camera rebuild",
    );
  } finally {
    await daemon.stop();
    await broker.close();
  }
});

test("the file watch swaps each station's bundle on its own, and a broken one keeps its old model", async () => {
  const work = await tempDir("stpmd-reload-stations-");
  await writeFile(path.join(work, "teacher.onnx"), encodeModel(randomTeacher(1, 4)));
  await normalFrames(6, 64, path.join(work, "train"));
  const shared = path.join(work, "shared-model");
  const own = path.join(work, "own-model");
  const sharedFirst = await train(work, shared, 1, 64);
  const ownFirst = await train(work, own, 2, 64);
  const broker = await MosquittoBroker.start();
  const source = "videotestsrc is-live=true ! video/x-raw,framerate=20/1";
  const config = testConfig({
    model: { bundle: shared, watch: true, watch_debounce_ms: 200 },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 8 },
    cameras: [
      { id: "a", source },
      { id: "b", source, model: own },
      { id: "c", source, model: shared }, // names the default bundle too: shares station a's loaded model
    ],
    mqtt: {
      url: broker.url,
      client_id: "reload-stations-test",
      prefix: "reload2",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox"), max_messages: 100, max_bytes: 1 << 24 },
    },
    collection: { dir: path.join(work, "c") },
    log: { level: "error" },
    health: { watchdog: false },
  });
  const versions = new Map<string, string[]>([
    ["a", []],
    ["b", []],
    ["c", []],
  ]);
  const daemon = new Daemon(config, logger, {
    hooks: { onResult: (r) => versions.get(r.frame.cameraId)!.push(r.modelVersion) },
  });
  const latest = (camera: string) => versions.get(camera)!.at(-1);
  try {
    await daemon.start();
    await waitFor(
      "all stations inspected",
      () => latest("a") === sharedFirst && latest("b") === ownFirst && latest("c") === sharedFirst,
    );
    assert.deepEqual(
      daemon
        .snapshot()
        .models.map((m) => m.bundle)
        .sort(),
      [own, shared].sort(),
      "one loaded model per bundle, whatever the number of cameras naming it",
    );
    // station b's bundle is retrained in place: b swaps, a keeps its model and is not touched
    const ownSecond = await train(work, own, 3, 64);
    await waitFor("station b on its new model", () => latest("b") === ownSecond, 15_000);
    assert.equal(latest("a"), sharedFirst);
    assert.ok(!versions.get("a")!.includes(ownSecond));
    assert.ok(!versions.get("c")!.includes(ownSecond));
    // station a's bundle breaks on disk: its reload fails, it keeps its model, b goes on with its own
    await writeFile(path.join(shared, "student.onnx"), "not an onnx model");
    await new Promise((r) => setTimeout(r, 1500)); // past the debounce and the failed reload
    const mark = { a: versions.get("a")!.length, b: versions.get("b")!.length };
    await waitFor(
      "both stations still inspect",
      () => versions.get("a")!.length >= mark.a + 5 && versions.get("b")!.length >= mark.b + 5,
    );
    assert.ok(
      versions
        .get("a")!
        .slice(mark.a)
        .every((v) => v === sharedFirst),
    );
    assert.ok(
      versions
        .get("b")!
        .slice(mark.b)
        .every((v) => v === ownSecond),
    );
  } finally {
    await daemon.stop();
    await broker.close();
  }
});
