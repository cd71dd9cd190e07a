import assert from "node:assert/strict";
import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import mqtt from "mqtt";
import sharp from "sharp";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import type { ResultPayload } from "../../src/publish/topics.js";
import { testConfig } from "../helpers/config.js";
import {
  nanWeights,
  nanWhenDark,
  replaySource,
  rewriteStudent,
  tinyStation,
} from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

/**
 * A score that is not a finite number never becomes an OK (issue 20, item 3): a model that yields NaN at run time
 * gives those frames an error verdict on every output, and a bundle that yields NaN on the probe frame is refused by
 * the watch, the old model staying in service.
 */

/** Sum of a Prometheus counter's samples for one camera in the exposition text. */
function counterOf(text: string, name: string, camera: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`camera="${camera}"`));
  return line === undefined ? undefined : Number(line.split(" ").pop());
}

/** `count` PNGs of one flat colour. */
async function flatFrames(dir: string, count: number, size: number, value: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) {
    await sharp(new Uint8Array(size * size * 3).fill(value), {
      raw: { width: size, height: size, channels: 3 },
    })
      .png()
      .toFile(path.join(dir, `${String(i).padStart(3, "0")}.png`));
  }
}

test("a model that yields NaN at run time: those frames are error verdicts on MQTT, /metrics and the status, never OK, logged once a minute per camera", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-nan-run-");
  // passes the mid-grey probe; NaN for the noise camera's dark pixels, finite for the bright camera's frames
  const model = path.join(work, "dark-nan");
  await rewriteStudent(bundle, model, "dark-nan", nanWhenDark);
  const bright = path.join(work, "bright");
  await flatFrames(bright, 2, 64, 200);
  const broker = await MosquittoBroker.start();
  const httpPort = await freeLoopbackPort();
  const { logger, lines } = capturingLogger("warn");
  const config = testConfig({
    model: { bundle: model, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [
      { id: "noise", source: replaySource(noise, 20) },
      { id: "bright", source: replaySource(bright, 20) },
    ],
    mqtt: {
      url: broker.url,
      client_id: "nan-run",
      prefix: "nan",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    http: { enabled: true, port: httpPort },
    collection: { enabled: true, dir: path.join(work, "frames"), min_interval_s: 0 },
    health: { watchdog: false },
  });
  const client = mqtt.connect(broker.url, { clientId: "nan-run-reader" });
  await new Promise<void>((resolve) => client.on("connect", () => resolve()));
  const received: { camera: string; payload: ResultPayload }[] = [];
  const defects: string[] = [];
  client.on("message", (topic, payload) => {
    const [, camera, kind] = topic.split("/");
    if (kind === "result") received.push({ camera: camera!, payload: JSON.parse(payload.toString()) });
    if (kind === "defect") defects.push(camera!);
  });
  await client.subscribeAsync(["nan/+/result", "nan/+/defect"], { qos: 1 });
  const results: InspectionResult[] = [];
  const daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
  try {
    await daemon.start();
    const of = (camera: string) => results.filter((r) => r.frame.cameraId === camera);
    await waitFor(
      "20 results of each camera",
      () => of("noise").length >= 20 && of("bright").length >= 20,
      20_000,
    );
    for (const camera of ["noise", "bright"])
      await daemon.control.enableCamera(camera, false, { via: "http" });
    await new Promise((r) => setTimeout(r, 1000)); // the last queued frames drain and reach the broker
    const produced = of("noise");
    assert.ok(
      produced.every((r) => r.verdict === "error" && Number.isNaN(r.score) && r.regions.length === 0),
      `noise frames: ${produced.map((r) => `${r.verdict} ${r.score}`).join(", ")}`,
    );
    assert.ok(
      of("bright").every((r) => r.verdict !== "error" && Number.isFinite(r.score)),
      "the same model judges the bright camera's frames",
    );

    // MQTT: every result produced was published (or counted dropped, before the connection was up) and arrived;
    // every noise result arrived as an error, none as OK, and no defect event
    const counts = daemon.sinkStatus("mqtt")!.counts!;
    assert.equal(counts.results_published! + counts.results_dropped!, results.length);
    assert.equal(received.length, counts.results_published);
    const onMqtt = received.filter((m) => m.camera === "noise").map((m) => m.payload);
    assert.ok(onMqtt.length >= 10, `${onMqtt.length} noise results on MQTT`);
    for (const p of onMqtt) {
      assert.equal(p.verdict, "error");
      assert.equal(p.defective, null, "neither defective nor good");
      assert.equal(p.score, null);
      assert.match(String(p.error), /score is NaN/);
    }
    assert.deepEqual(
      defects.filter((c) => c === "noise"),
      [],
    );

    // /metrics and the status count each error verdict, and none of them as a defect
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    assert.equal(counterOf(text, "stpmd_camera_errors_total", "noise"), produced.length);
    assert.equal(counterOf(text, "stpmd_camera_defects_total", "noise"), 0);
    assert.equal(counterOf(text, "stpmd_camera_errors_total", "bright"), 0);
    const status = daemon.snapshot().cameras.find((c) => c.id === "noise")!;
    assert.equal(status.errors, produced.length);
    assert.equal(status.last?.verdict, "error");
    // no error frame is kept as a normal one for retraining
    const kept = await readdir(path.join(work, "frames", "noise")).catch(() => []);
    assert.deepEqual(kept, []);

    // one line for the noise camera (not one per frame), at error, naming the camera and the model
    const told = lines.filter((l) => /not a finite number/.test(l.msg));
    assert.equal(told.length, 1, told.map((l) => l.msg).join("\n"));
    assert.equal(told[0]!.level, 50);
    assert.equal(told[0]!.camera, "noise");
    assert.equal(told[0]!.model_version, "dark-nan");
  } finally {
    client.end(true);
    await daemon.stop();
    await broker.close();
  }
});

test("the watch refuses a bundle whose student has NaN weights: one line naming the bundle and why, the old model stays in service", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-nan-watch-");
  const broker = await MosquittoBroker.start();
  const { logger, lines } = capturingLogger("warn");
  const config = testConfig({
    model: { bundle, watch: true, watch_debounce_ms: 200 },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam", source: replaySource(noise, 20) }],
    mqtt: {
      url: broker.url,
      client_id: "nan-watch",
      prefix: "nanw",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  const results: InspectionResult[] = [];
  const daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
  try {
    await daemon.start();
    const first = daemon.modelVersion!;
    await waitFor("results of the first model", () => results.length >= 5);
    // the bundle replaced as retrain replaces it, by the bundle module's own writer (hashes right)
    await rewriteStudent(bundle, bundle, "nan-weights", nanWeights);
    const refused = await waitFor(
      "the reload refused",
      () => lines.find((l) => l.msg === "model reload failed; keeping the running model"),
      15_000,
    );
    const reason = String((refused.err as { message?: string }).message);
    assert.ok(
      reason.startsWith(`${bundle}: the model's output is not finite on a mid-grey probe frame`),
      reason,
    );
    const mark = results.length;
    await waitFor("more results", () => results.length >= mark + 10);
    assert.equal(daemon.modelVersion, first);
    assert.ok(
      results.slice(mark).every((r) => r.modelVersion === first && r.verdict !== "error"),
      "the old model judges every later frame",
    );
    assert.ok(!results.some((r) => r.modelVersion === "nan-weights"));
  } finally {
    await daemon.stop();
    await broker.close();
  }
});
