import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import type { Frame } from "../../src/core/frame.js";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { InspectionLoop } from "../../src/pipeline/inspection-loop.js";
import { Inspector } from "../../src/pipeline/inspector.js";
import { testConfig } from "../helpers/config.js";
import { trainTinyBundle } from "../helpers/daemon-process.js";
import { tempDir } from "../helpers/tiny-data.js";

const SIZE = 32;

function frame(cameraId: string, seq: number): Frame {
  return {
    cameraId,
    seq,
    captureTs: Date.now(),
    width: SIZE,
    height: SIZE,
    rgb: new Uint8Array(SIZE * SIZE * 3),
  };
}

test("the frame loop batches frames of any camera, delivers every result in order, and drains on close", async () => {
  const work = await tempDir("stpmd-loop-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1, SIZE);
  const logger = createLogger("silent");
  const inspector = new Inspector(bundle, { providers: ["cpu"] }, logger);
  await inspector.load();
  const batches: number[] = [];
  const delivered: InspectionResult[] = [];
  const { inference } = testConfig({ inference: { max_batch: 4, max_wait_ms: 5, queue_size: 64 } });
  const loop = new InspectionLoop(
    inspector,
    inference,
    logger,
    (results) => {
      batches.push(results.length);
      delivered.push(...results);
    },
    (_camera, manifest) => ({ threshold: manifest.threshold }),
  );
  try {
    loop.start();
    for (let seq = 0; seq < 30; seq++) {
      loop.push(frame("a", seq));
      loop.push(frame("b", seq));
      if (seq % 5 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    await loop.drain(); // everything already queued is inspected before it resolves
    assert.equal(delivered.length, 60);
    assert.equal(loop.droppedFrames, 0);
    assert.ok(Math.max(...batches) <= 4, `batches ${batches.join(",")}`);
    for (const camera of ["a", "b"]) {
      const seqs = delivered.filter((r) => r.frame.cameraId === camera).map((r) => r.frame.seq);
      assert.deepEqual(
        seqs,
        seqs.map((_, i) => i),
        `camera ${camera} in order`,
      );
    }
  } finally {
    await inspector.close();
  }
});
