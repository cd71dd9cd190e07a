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
import { capturingLogger } from "../helpers/logs.js";
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

test("a consumer that throws, or a batch that fails inference, costs only that batch; a repeated failure is logged once a minute", async () => {
  const work = await tempDir("stpmd-loop-faults-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1, SIZE);
  const { logger, lines } = capturingLogger("error");
  const inspector = new Inspector(bundle, { providers: ["cpu"] }, createLogger("silent"));
  await inspector.load();
  // the fault: inference fails for the batches of frames 5 and 6, as when the inference thread has died
  const inspect = inspector.inspect.bind(inspector);
  inspector.inspect = (frames, station) =>
    frames.some((f) => f.seq === 5 || f.seq === 6)
      ? Promise.reject(new Error("inference thread exited"))
      : inspect(frames, station);
  const delivered: number[] = [];
  let throwsLeft = 3;
  const { inference } = testConfig({ inference: { max_batch: 1, max_wait_ms: 0, queue_size: 64 } });
  const loop = new InspectionLoop(
    inspector,
    inference,
    logger,
    (results) => {
      if (throwsLeft-- > 0) throw new TypeError("consumer bug");
      delivered.push(...results.map((r) => r.frame.seq));
    },
    (_camera, manifest) => ({ threshold: manifest.threshold }),
  );
  try {
    loop.start();
    for (let seq = 0; seq < 10; seq++) {
      loop.push(frame("a", seq));
      await new Promise((r) => setTimeout(r, 20));
    }
    await loop.drain();
    assert.deepEqual(delivered, [3, 4, 7, 8, 9]);
    assert.equal(loop.failedDeliveries, 3);
    assert.equal(loop.failedBatches, 2);
    assert.deepEqual(
      lines.map((l) => [l.msg.split(":")[0], l.frames]),
      [
        ["delivering a batch's results failed; continuing", ["a#0"]],
        ["inference failed for a batch; continuing", ["a#5"]],
      ],
    );
    assert.match(lines[0]!.msg, /: consumer bug$/);
  } finally {
    await inspector.close();
  }
});
