import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import type { Frame } from "../../src/core/frame.js";
import { Inspector } from "../../src/pipeline/inspector.js";
import { trainTinyBundle } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { tempDir } from "../helpers/tiny-data.js";

const SIZE = 32;

function frame(cameraId: string, seq: number, size: number): Frame {
  const rgb = new Uint8Array(size * size * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 7 + seq) % 251;
  return { cameraId, seq, captureTs: Date.now(), width: size, height: size, rgb };
}

test("frames of another size are resized to the model's, and each camera's mismatch is told once", async () => {
  const work = await tempDir("stpmd-inspector-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1, SIZE);
  const { logger, lines } = capturingLogger("warn");
  const inspector = new Inspector(bundle, { providers: ["cpu"] }, logger);
  await inspector.load();
  const station = () => ({ threshold: 1 });
  try {
    for (let seq = 0; seq < 3; seq++) {
      const results = await inspector.inspect([frame("a", seq, 48), frame("b", seq, 64)], station);
      for (const r of results) assert.equal(r.map.length, SIZE * SIZE, "the map is on the model's grid");
    }
    await inspector.inspect([frame("a", 3, SIZE)], station);
    const notices = lines.filter(
      (l) => l.msg === "frame size differs from the model's; resizing in software",
    );
    assert.deepEqual(
      notices.map((l) => [l.camera, l.frame]),
      [
        ["a", [48, 48]],
        ["b", [64, 64]],
      ],
    );
  } finally {
    await inspector.close();
  }
});
