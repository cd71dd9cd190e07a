import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { register as globalRegistry } from "prom-client";
import { createLogger } from "../../../src/core/log.js";
import type { NodeSnapshot } from "../../../src/publish/control.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";

/** The metrics and health routes alone, as before the console existed. */
const NO_CONSOLE = { enabled: false, users: [], max_clients: 8, session_idle_min: 720 };

const logger = createLogger("silent");

/** The test control, plus what TestLineControl cannot produce: a daemon that is not ready, restarts, outbox counts. */
class ScriptedControl extends TestLineControl {
  ready = true;
  patch: ((snapshot: NodeSnapshot) => void) | undefined;

  override snapshot(): NodeSnapshot {
    const snapshot = super.snapshot();
    snapshot.ready = this.ready;
    this.patch?.(snapshot);
    return snapshot;
  }
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (format 0.0.4): one sample per non-comment line. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The one sample named `name` whose labels include `labels`; fails when there is none or several. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0]!.value;
}

describe("HTTP metrics and health, scraped over loopback", () => {
  let control: ScriptedControl;
  let http: HttpInterface;
  let base: string;

  before(async () => {
    control = new ScriptedControl(["cam1", "cam2"], 0.5);
    http = new HttpInterface({
      config: { enabled: true, bind: "127.0.0.1", port: await freeLoopbackPort(), console: NO_CONSOLE },
      control,
      logger,
    });
    control.interfaces.push(http);
    await http.start();
    base = `http://127.0.0.1:${http.address.port}`;
  });

  after(async () => {
    await http.stop();
  });

  async function scrape(): Promise<Sample[]> {
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    return parseExposition(await response.text());
  }

  test("counters are exactly what was fed: results per camera, batches into the histograms", async () => {
    const initial = await scrape();
    assert.equal(
      value(initial, "stpmd_camera_inspected_total", { camera: "cam2" }),
      0,
      "present before any result",
    );
    // cam1: 30 frames of which 7 above the 0.5 threshold; cam2: 12 normal frames
    for (let i = 0; i < 30; i++) control.emit("cam1", i < 7 ? 0.9 : 0.1);
    for (let i = 0; i < 12; i++) control.emit("cam2", 0.2);
    for (const [size, ms] of [
      [8, 12],
      [8, 30],
      [4, 5],
      [1, 700],
    ] as const) {
      http.onBatch(size, ms);
    }
    const samples = await scrape();
    assert.equal(value(samples, "stpmd_camera_inspected_total", { camera: "cam1" }), 30);
    assert.equal(value(samples, "stpmd_camera_defects_total", { camera: "cam1" }), 7);
    assert.equal(value(samples, "stpmd_camera_inspected_total", { camera: "cam2" }), 12);
    assert.equal(value(samples, "stpmd_camera_defects_total", { camera: "cam2" }), 0);

    assert.equal(value(samples, "stpmd_inference_batch_size_count"), 4);
    assert.equal(value(samples, "stpmd_inference_batch_size_sum"), 21);
    assert.equal(value(samples, "stpmd_inference_batch_size_bucket", { le: "1" }), 1);
    assert.equal(value(samples, "stpmd_inference_batch_size_bucket", { le: "4" }), 2);
    assert.equal(value(samples, "stpmd_inference_batch_size_bucket", { le: "8" }), 4);
    assert.equal(value(samples, "stpmd_inference_batch_duration_seconds_count"), 4);
    assert.ok(Math.abs(value(samples, "stpmd_inference_batch_duration_seconds_sum") - 0.747) < 1e-9);
    assert.equal(value(samples, "stpmd_inference_batch_duration_seconds_bucket", { le: "0.005" }), 1);
    assert.equal(value(samples, "stpmd_inference_batch_duration_seconds_bucket", { le: "0.05" }), 3);
    assert.equal(value(samples, "stpmd_inference_batch_duration_seconds_bucket", { le: "0.5" }), 3);
    assert.equal(value(samples, "stpmd_inference_batch_duration_seconds_bucket", { le: "1" }), 4);

    // a second scrape counts only what came since
    control.emit("cam2", 0.95);
    const later = await scrape();
    assert.equal(value(later, "stpmd_camera_inspected_total", { camera: "cam2" }), 13);
    assert.equal(value(later, "stpmd_camera_defects_total", { camera: "cam2" }), 1);
    assert.equal(value(later, "stpmd_camera_inspected_total", { camera: "cam1" }), 30);
  });

  test("gauges come from the snapshot at the scrape: state, enabled, threshold, fps, outbox, collection, model info", async () => {
    await control.enableCamera("cam2", false, { via: "http" });
    control.setThreshold("cam1", { value: 0.75 }, { via: "http" });
    let restarts = 3;
    control.patch = (snapshot) => {
      snapshot.cameras[0]!.fps = 29.5;
      snapshot.cameras[0]!.restarts = restarts;
      snapshot.cameras[1]!.bad_frames = 2;
      snapshot.cameras[0]!.dropped_frames = 12;
      snapshot.cameras[1]!.dropped_frames = 5;
      snapshot.dropped_frames = 17;
      snapshot.outbox = { queued: 4, overflowed: 2, lost: 1 };
      snapshot.collection = { enabled: true, saved: 9, failed: 3, dropped: 1, deleted: 0 };
      snapshot.sinks = [
        {
          name: "mqtt",
          durable: true,
          ok: false,
          detail: "Connection refused",
          failed_batches: 0,
          cameras: { cam1: { defects_without_snapshot: 7 } },
        },
        { name: "http", durable: false, ok: true, failed_batches: 6 },
        {
          name: "records",
          durable: false,
          ok: false,
          detail: "database or disk is full",
          failed_batches: 0,
          counts: {
            written: 120,
            failed: 8,
            dropped: 2,
            lost: 0,
            deleted: 30,
            queued: 5,
            rows: 90,
            bytes: 123456,
            images_saved: 11,
            images_failed: 4,
            images_dropped: 1,
            images_deleted: 6,
            corrupt_moved: 1,
            recreated: 0,
          },
        },
      ];
    };
    const samples = await scrape();
    assert.equal(value(samples, "stpmd_camera_state", { camera: "cam1", state: "streaming" }), 1);
    assert.equal(value(samples, "stpmd_camera_state", { camera: "cam1", state: "stalled" }), 0);
    assert.equal(value(samples, "stpmd_camera_state", { camera: "cam2", state: "disabled" }), 1);
    assert.equal(value(samples, "stpmd_camera_state", { camera: "cam2", state: "streaming" }), 0);
    assert.equal(value(samples, "stpmd_camera_enabled", { camera: "cam2" }), 0);
    assert.equal(value(samples, "stpmd_camera_threshold", { camera: "cam1" }), 0.75);
    assert.equal(value(samples, "stpmd_camera_fps", { camera: "cam1" }), 29.5);
    assert.equal(value(samples, "stpmd_camera_restarts_total", { camera: "cam1" }), 3);
    assert.equal(value(samples, "stpmd_camera_bad_frames_total", { camera: "cam2" }), 2);
    assert.equal(value(samples, "stpmd_dropped_frames_total"), 17);
    assert.equal(value(samples, "stpmd_camera_dropped_frames_total", { camera: "cam1" }), 12);
    assert.equal(value(samples, "stpmd_camera_dropped_frames_total", { camera: "cam2" }), 5);
    assert.equal(value(samples, "stpmd_outbox_queued"), 4);
    assert.equal(value(samples, "stpmd_outbox_overflowed_total"), 2);
    assert.equal(value(samples, "stpmd_outbox_lost_total"), 1);
    assert.equal(value(samples, "stpmd_collection_enabled"), 1);
    for (const [outcome, count] of [
      ["saved", 9],
      ["failed", 3],
      ["dropped", 1],
      ["deleted", 0],
    ] as const) {
      assert.equal(value(samples, "stpmd_collection_frames_total", { outcome }), count, outcome);
    }
    for (const [outcome, count] of Object.entries({
      written: 120,
      failed: 8,
      dropped: 2,
      lost: 0,
      deleted: 30,
    })) {
      assert.equal(value(samples, "stpmd_records_rows_total", { outcome }), count, `rows ${outcome}`);
    }
    for (const [outcome, count] of Object.entries({ saved: 11, failed: 4, dropped: 1, deleted: 6 })) {
      assert.equal(value(samples, "stpmd_records_images_total", { outcome }), count, `images ${outcome}`);
    }
    assert.equal(value(samples, "stpmd_records_recoveries_total", { kind: "corrupt" }), 1);
    assert.equal(value(samples, "stpmd_records_recoveries_total", { kind: "deleted" }), 0);
    assert.equal(value(samples, "stpmd_records_rows"), 90);
    assert.equal(value(samples, "stpmd_records_bytes"), 123456);
    assert.equal(value(samples, "stpmd_records_queued"), 5);
    assert.equal(value(samples, "stpmd_output_up", { output: "records", durable: "false" }), 0);
    assert.equal(value(samples, "stpmd_ready"), 1);
    assert.equal(value(samples, "stpmd_output_up", { output: "mqtt", durable: "true" }), 0);
    assert.equal(value(samples, "stpmd_output_up", { output: "http", durable: "false" }), 1);
    assert.equal(value(samples, "stpmd_output_failed_batches_total", { output: "http" }), 6);
    assert.equal(value(samples, "stpmd_output_failed_batches_total", { output: "mqtt" }), 0);
    assert.equal(value(samples, "stpmd_defects_without_snapshot_total", { camera: "cam1" }), 7);
    assert.equal(
      value(samples, "stpmd_defects_without_snapshot_total", { camera: "cam2" }),
      0,
      "a series for each",
    );
    assert.equal(
      value(samples, "stpmd_model_info", {
        bundle: "/models/test",
        model_version: "20261201T000000Z",
        student_sha256: "0".repeat(64),
      }),
      1,
    );
    assert.equal(
      value(samples, "stpmd_camera_info", { camera: "cam1", model_version: "20261201T000000Z" }),
      1,
    );
    assert.ok(
      samples.some((s) => s.name === "process_cpu_seconds_total"),
      "process metrics are exported",
    );

    // the daemon's own counts are followed, not accumulated: the same count scraped again stays the same
    restarts = 5;
    assert.equal(value(await scrape(), "stpmd_camera_restarts_total", { camera: "cam1" }), 5);
    assert.equal(value(await scrape(), "stpmd_camera_restarts_total", { camera: "cam1" }), 5);
    control.patch = undefined;
    await control.enableCamera("cam2", true, { via: "http" });
  });

  test("/healthz is 200; /readyz follows snapshot().ready with a reason", async () => {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(await health.text(), "ok\n");

    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(await ready.text(), "ready\n");

    control.ready = false;
    control.patch = (snapshot) => {
      for (const cam of snapshot.cameras) cam.state = "restarting";
    };
    try {
      const notReady = await fetch(`${base}/readyz`);
      assert.equal(notReady.status, 503);
      assert.equal(
        await notReady.text(),
        "not ready: no camera is streaming (cam1: restarting, cam2: restarting)\n",
      );
      control.patch = (snapshot) => {
        snapshot.models = [];
      };
      assert.equal(await (await fetch(`${base}/readyz`)).text(), "not ready: no model loaded\n");
      assert.equal(value(await scrape(), "stpmd_ready"), 0);
    } finally {
      control.ready = true;
      control.patch = undefined;
    }
  });

  test("other paths are 404, other methods 405, HEAD has no body", async () => {
    const missing = await fetch(`${base}/metrics/x`);
    assert.equal(missing.status, 404);
    assert.equal(
      await missing.text(),
      "not found: /metrics/x (routes: /metrics, /healthz, /readyz, /api/candidates, /api/candidates/<camera>/report, /api/candidates/<camera>/images/<file>.png)\n",
    );
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    const head = await fetch(`${base}/metrics?debug=1`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
  });

  test("the registry is private, and a taken port is refused with a one-line reason", async () => {
    assert.equal(globalRegistry.getSingleMetric("stpmd_camera_inspected_total"), undefined);
    // a second interface in the same process registers the same names without a clash
    const second = new HttpInterface({
      config: { enabled: true, bind: "127.0.0.1", port: http.address.port, console: NO_CONSOLE },
      control,
      logger,
    });
    await assert.rejects(second.start(), {
      message: `http: cannot listen on 127.0.0.1:${http.address.port}: the port is in use by another process; set http.port to a free one`,
    });
  });
});

test("stop() returns promptly while a client holds a connection with a request half sent", async () => {
  const control = new TestLineControl(["cam1"]);
  const http = new HttpInterface({
    config: { enabled: true, bind: "127.0.0.1", port: await freeLoopbackPort(), console: NO_CONSOLE },
    control,
    logger,
    processMetrics: false,
  });
  await http.start();
  // not idle, so server.close() alone would wait for it (until Node's 60 s headers timeout)
  const socket = net.connect({ port: http.address.port, host: "127.0.0.1" });
  await once(socket, "connect");
  socket.write("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  const closed = once(socket, "close");
  await new Promise((resolve) => setTimeout(resolve, 50));
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([
    http.stop().then(() => true),
    new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), 2000);
    }),
  ]);
  clearTimeout(timer);
  if (!stopped) socket.destroy();
  assert.ok(stopped && Date.now() - started < 1000, `stop took ${Date.now() - started} ms`);
  await closed;
});
