import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import type { Frame } from "../../src/core/frame.js";
import { Inspector } from "../../src/pipeline/inspector.js";
import { nanWeights, nanWhenDark, rewriteStudent, trainTinyBundle } from "../helpers/daemon-process.js";
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

/** A 64×64 frame of one grey level. */
function flat(cameraId: string, seq: number, value: number): Frame {
  return {
    cameraId,
    seq,
    captureTs: Date.now(),
    width: 64,
    height: 64,
    rgb: new Uint8Array(64 * 64 * 3).fill(value),
  };
}

test("a model that yields NaN for some frames gives them an error verdict, never OK, told once per camera a minute", async () => {
  const work = await tempDir("stpmd-inspector-nan-");
  const good = path.join(work, "model");
  await trainTinyBundle(work, good, 1, 64);
  const dark = path.join(work, "dark");
  await rewriteStudent(good, dark, "dark-nan", nanWhenDark);
  const { logger, lines } = capturingLogger("warn");
  const inspector = new Inspector(dark, { providers: ["cpu"] }, logger);
  await inspector.load(); // its output on the mid-grey probe is finite: accepted
  // bright but for a dark corner: NaN in part of the map only, after finite pixels
  const corner = flat("a", 2, 200);
  for (let y = 48; y < 64; y++) corner.rgb.fill(20, (y * 64 + 48) * 3, (y * 64 + 64) * 3);
  const station = () => ({ threshold: 1e9 });
  try {
    const results = await inspector.inspect(
      [flat("a", 0, 200), flat("a", 1, 20), corner, flat("b", 3, 20)],
      station,
    );
    assert.deepEqual(
      results.map((r) => r.verdict),
      ["ok", "error", "error", "error"],
    );
    for (const r of results.slice(1)) {
      assert.ok(!Number.isFinite(r.score));
      assert.equal(r.error, `the model's score is ${r.score}, not a finite number`);
      assert.deepEqual(r.regions, []);
    }
    const cornerMap = results[2]!.map;
    const bad = cornerMap.reduce((n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);
    assert.ok(Number.isFinite(cornerMap[0]!) && bad > 0 && bad < cornerMap.length, `${bad} NaN pixels`);
    // the same frame with its NaN pixels ignored is judged
    const ignore = Uint8Array.from(cornerMap, (v) => (Number.isFinite(v) ? 0 : 1));
    const [masked] = await inspector.inspect([corner], () => ({ threshold: 1e9, ignore }));
    assert.equal(masked!.verdict, "ok");
    assert.ok(Number.isFinite(masked!.score));
    await inspector.inspect([flat("a", 4, 20), flat("b", 5, 20)], station);
    const told = lines.filter((l) => /not a finite number/.test(l.msg));
    assert.deepEqual(
      told.map((l) => [l.level, l.camera, l.model_version]),
      [
        [50, "a", "dark-nan"],
        [50, "b", "dark-nan"],
      ],
      "one line per camera a minute, at error, naming the model",
    );
  } finally {
    await inspector.close();
  }
});

test("a bundle whose student has NaN weights is refused at load, naming it and why; on reload the model in service stays", async () => {
  const work = await tempDir("stpmd-inspector-nan-weights-");
  const bundle = path.join(work, "model");
  const first = await trainTinyBundle(work, bundle, 1, SIZE);
  const nan = path.join(work, "nan");
  await rewriteStudent(bundle, nan, "nan-weights", nanWeights);
  const refused = new Inspector(nan, { providers: ["cpu"] }, capturingLogger("warn").logger);
  try {
    await assert.rejects(refused.load(), {
      message: `${nan}: the model's output is not finite on a mid-grey probe frame (the score is NaN, ${SIZE * SIZE} of ${SIZE * SIZE} map pixels are not finite); bundle refused`,
    });
  } finally {
    await refused.close(); // an accepted model's thread would keep the test process alive
  }
  const { logger, lines } = capturingLogger("warn");
  const inspector = new Inspector(bundle, { providers: ["cpu"] }, logger);
  await inspector.load();
  try {
    await rewriteStudent(nan, bundle, "nan-weights", () => undefined);
    assert.equal(await inspector.reloadIfChanged("test"), "failed");
    assert.equal(inspector.manifest?.model_version, first);
    const failed = lines.find((l) => l.msg === "model reload failed; keeping the running model");
    assert.match(String((failed?.err as { message?: string } | undefined)?.message), /mid-grey probe frame/);
    const [r] = await inspector.inspect([frame("a", 0, SIZE)], () => ({ threshold: 1e9 }));
    assert.equal(r!.verdict, "ok");
    assert.equal(r!.modelVersion, first);
  } finally {
    await inspector.close();
  }
});
