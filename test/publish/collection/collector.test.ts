import assert from "node:assert/strict";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../../src/core/log.js";
import type { InspectionResult } from "../../../src/core/result.js";
import { Collector } from "../../../src/publish/collection/collector.js";
import { collectionConfig } from "../../helpers/config.js";
import { tempDir } from "../../helpers/tiny-data.js";

function result(cameraId: string, seq: number, score: number): InspectionResult {
  const rgb = new Uint8Array(8 * 8 * 3).fill(seq % 256);
  return {
    frame: { cameraId, seq, captureTs: Date.UTC(2026, 0, 1, 0, 0, seq), width: 8, height: 8, rgb },
    score,
    threshold: 1,
    verdict: score > 1 ? "defect" : "ok",
    regions: [],
    map: new Float32Array(64),
    modelVersion: "v",
    inferredTs: Date.now(),
  };
}

const settle = () => new Promise((r) => setTimeout(r, 150));

test("only frames normal with margin are kept, newest per camera up to the cap, as readable PNGs in one folder per station", async () => {
  const dir = path.join(await tempDir(), "frames");
  const c = await Collector.open(
    collectionConfig({
      enabled: true,
      dir,
      score_quantile: 0.5,
      min_interval_s: 0,
      max_frames_per_camera: 3,
      max_bytes: 1 << 30,
    }),
    createLogger("silent"),
  );
  const validation = [0.1, 0.2, 0.3, 0.4]; // median 0.25
  c.consider(result("a", 1, 0.3), validation); // above the margin: not kept
  c.consider(result("a", 2, 2), validation); // defective: never kept
  for (let seq = 10; seq < 15; seq++) {
    c.consider(result("a", seq, 0.1), validation);
    await settle();
  }
  c.consider(result("b", 20, 0.05), validation);
  await settle();
  assert.deepEqual((await readdir(dir)).sort(), ["a", "b"]);
  const files = (await readdir(path.join(dir, "a"))).sort();
  assert.equal(files.filter((f) => f.startsWith("a_")).length, 3);
  assert.ok(
    files.some((f) => f.endsWith("_14.png")) && !files.some((f) => f.endsWith("_10.png")),
    files.join(),
  );
  assert.equal((await readdir(path.join(dir, "b"))).filter((f) => f.startsWith("b_")).length, 1);
  const meta = await sharp(path.join(dir, "a", files[0]!)).metadata();
  assert.equal(meta.width, 8);
  assert.equal(c.deleted, 2);
});

test("the minimum interval rate-limits saving per camera", async () => {
  const dir = path.join(await tempDir(), "frames");
  const c = await Collector.open(
    collectionConfig({
      enabled: true,
      dir,
      score_quantile: 1,
      min_interval_s: 60,
      max_frames_per_camera: 100,
      max_bytes: 1 << 30,
    }),
    createLogger("silent"),
  );
  for (let seq = 0; seq < 5; seq++) c.consider(result("a", seq, 0), [1]);
  await settle();
  assert.equal((await readdir(path.join(dir, "a"))).length, 1);
});

test("collected frames are 0640 in a 0750 folder whatever the umask, or as configured", async () => {
  const previous = process.umask(0);
  try {
    for (const [modes, fileMode, dirMode] of [
      [{}, 0o640, 0o750],
      [{ file_mode: "0600", dir_mode: "0700" }, 0o600, 0o700],
    ] as const) {
      const dir = path.join(await tempDir(), "frames");
      const c = await Collector.open(
        collectionConfig({
          enabled: true,
          dir,
          score_quantile: 1,
          min_interval_s: 0,
          max_frames_per_camera: 10,
          max_bytes: 1 << 30,
          ...modes,
        }),
        createLogger("silent"),
      );
      c.consider(result("a", 1, 0), [1]);
      await settle();
      const [file] = await readdir(path.join(dir, "a"));
      assert.ok(file?.endsWith(".png"), String(file));
      assert.equal((await stat(dir)).mode & 0o777, dirMode);
      assert.equal((await stat(path.join(dir, "a"))).mode & 0o777, dirMode);
      assert.equal((await stat(path.join(dir, "a", file!))).mode & 0o777, fileMode);
    }
  } finally {
    process.umask(previous);
  }
});

test("with a camera to ask, frames are saved at the size the camera gives on request, never at capture size", async () => {
  const dir = path.join(await tempDir(), "frames");
  const requests: string[] = [];
  const c = await Collector.open(
    collectionConfig({ enabled: true, dir, score_quantile: 1, min_interval_s: 0 }),
    createLogger("silent"),
    {
      requestOriginal: (camera) => {
        requests.push(camera);
        return camera !== "gone";
      },
    },
  );
  // qualifying frames at capture size ask once, and wait for the answer instead of saving themselves
  for (let seq = 0; seq < 3; seq++) c.consider(result("a", seq, 0), [1]);
  c.consider(result("gone", 0, 0), [1]);
  await settle();
  assert.deepEqual(requests, ["a", "gone"]);
  assert.equal(c.saved, 0);
  // the answer: a 40×20 RGBA frame, red, with its 8×8 capture-size rgb beside it
  const answer = result("a", 3, 0);
  const rgba = new Uint8Array(40 * 20 * 4);
  for (let i = 0; i < 40 * 20; i++) rgba.set([200, 10, 10, 255], i * 4);
  answer.frame.original = { width: 40, height: 20, rgba };
  c.consider(answer, [1]);
  await settle();
  const files = await readdir(path.join(dir, "a"));
  assert.deepEqual(files, [
    `a_${new Date(answer.frame.captureTs).toISOString().replace(/[-:.]/g, "")}_3.png`,
  ]);
  const { data, info } = await sharp(path.join(dir, "a", files[0]!))
    .raw()
    .toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [40, 20, 3]);
  assert.deepEqual([...data.subarray(0, 3)], [200, 10, 10]);
  // a full-size frame that does not qualify (defective) is not kept, and the next qualifying frame asks again
  const defective = result("a", 4, 5);
  defective.frame.original = { width: 40, height: 20, rgba };
  c.consider(defective, [1]);
  c.consider(result("a", 5, 0), [1]);
  assert.deepEqual(requests, ["a", "gone", "a"]);
  assert.equal(c.saved, 1);
});

test("a request for a full-size frame whose frame never comes (dropped by a full queue) is renewed after 10 s", async (t) => {
  t.mock.timers.enable({ apis: ["Date"], now: Date.UTC(2026, 0, 1) });
  const dir = path.join(await tempDir(), "frames");
  let requests = 0;
  const c = await Collector.open(
    collectionConfig({ enabled: true, dir, score_quantile: 1, min_interval_s: 0 }),
    createLogger("silent"),
    {
      requestOriginal: () => {
        requests++;
        return true;
      },
    },
  );
  c.consider(result("a", 1, 0), [1]);
  t.mock.timers.tick(9_000);
  c.consider(result("a", 2, 0), [1]); // still waiting for the first answer
  assert.equal(requests, 1);
  t.mock.timers.tick(1_001);
  c.consider(result("a", 3, 0), [1]); // the answer was lost: ask again
  assert.equal(requests, 2);
  assert.equal(c.saved, 0);
});

test("beyond three saves in flight a qualifying frame is dropped and counted, never queued", async () => {
  const dir = path.join(await tempDir(), "frames");
  const c = await Collector.open(
    collectionConfig({ enabled: true, dir, score_quantile: 1, min_interval_s: 0 }),
    createLogger("silent"),
  );
  // ten qualifying frames at once: the first three start their saves (encoding runs off the JS thread)
  for (let seq = 0; seq < 10; seq++) c.consider(result("a", seq, 0), [1]);
  c.consider(result("a", 10, 5), [1]); // defective: not a candidate, so not a drop either
  assert.deepEqual(c.stats(), { saved: 0, failed: 0, dropped: 7, deleted: 0 });
  await settle();
  assert.deepEqual(c.stats(), { saved: 3, failed: 0, dropped: 7, deleted: 0 });
  assert.equal((await readdir(path.join(dir, "a"))).length, 3);
  // the saves done, the next frame is saved again
  c.consider(result("a", 11, 0), [1]);
  await settle();
  assert.equal(c.stats().saved, 4);
});
