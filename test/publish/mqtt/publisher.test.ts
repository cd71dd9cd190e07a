import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { connectAsync, type MqttClient } from "mqtt";
import type { Level } from "pino";
import sharp from "sharp";
import type { MqttConfig, PartialConfig } from "../../../src/config/index.js";
import { isStpmdError } from "../../../src/core/errors.js";
import { createLogger } from "../../../src/core/log.js";
import type { InspectionResult } from "../../../src/core/result.js";
import { LineMetrics } from "../../../src/publish/http/metrics.js";
import { Publisher, type PublisherRuntime } from "../../../src/publish/mqtt/publisher.js";
import { MqttSink } from "../../../src/publish/mqtt/sink.js";
import { type DefectPayload, type StatusPayload, Topics } from "../../../src/publish/topics.js";
import type { Region } from "../../../src/stpm/regions.js";
import { mqttConfig, testConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { MosquittoBroker, TcpGate } from "../../helpers/mosquitto.js";
import { testSinkContext } from "../../helpers/sink-context.js";
import { waitFor } from "../../helpers/wait.js";

const WIDTH = 32;
const HEIGHT = 24;
const BASE_TS = Date.UTC(2025, 0, 2, 3, 4, 5, 600);
const LATENCY_MS = 25;
const WAIT_MS = 5000;

// STPMD_TEST_LOG_LEVEL=debug shows the publisher's own log lines when a test needs debugging.
const logger = createLogger((process.env.STPMD_TEST_LOG_LEVEL as Level | undefined) ?? "silent");

/** A frame of flat grey; defective frames get a 4×4 hot spot at (20, 10) with map value 3 (threshold 1). */
function inspection(seq: number, options: { camera?: string; defective?: boolean } = {}): InspectionResult {
  const { camera = "cam0", defective = true } = options;
  const rgb = new Uint8Array(WIDTH * HEIGHT * 3).fill(128);
  const map = new Float32Array(WIDTH * HEIGHT).fill(0.05);
  const regions: Region[] = [];
  if (defective) {
    for (let y = 10; y < 14; y++) map.fill(3, y * WIDTH + 20, y * WIDTH + 24);
    regions.push({ bbox: [20, 10, 4, 4], area: 16, peak: 3, centroid: [21.5, 11.5] });
  }
  const captureTs = BASE_TS + seq * 40;
  return {
    frame: { cameraId: camera, seq, captureTs, width: WIDTH, height: HEIGHT, rgb },
    score: defective ? 3 : 0.05,
    threshold: 1,
    verdict: defective ? "defect" : "ok",
    regions,
    map,
    modelVersion: "stpm-test-1",
    inferredTs: captureTs + LATENCY_MS,
  };
}

interface Received {
  topic: string;
  payload: Buffer;
  retain: boolean;
}

/** A real mqtt.js subscriber (MQTT 5, retain-as-published so live messages still show their retain flag). */
class Subscriber {
  readonly messages: Received[] = [];
  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      this.messages.push({ topic, payload, retain: packet.retain });
    });
  }

  static async connect(url: string, filter = "stpmd/#"): Promise<Subscriber> {
    const client = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0 });
    const subscriber = new Subscriber(client);
    await client.subscribeAsync(filter, { qos: 1, rap: true });
    return subscriber;
  }

  on(topic: string): Received[] {
    return this.messages.filter((message) => message.topic === topic);
  }

  json<T>(topic: string): T[] {
    return this.on(topic).map((message) => JSON.parse(message.payload.toString("utf8")) as T);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

const until = (condition: () => boolean, what: string, timeoutMs = WAIT_MS) =>
  waitFor(what, condition, timeoutMs);

function statusStates(subscriber: Subscriber): { state: string; retain: boolean }[] {
  return subscriber.on("stpmd/status").map((m) => ({
    state: (JSON.parse(m.payload.toString("utf8")) as StatusPayload).state,
    retain: m.retain,
  }));
}

describe("Publisher against a real mosquitto", () => {
  let broker: MosquittoBroker;
  let outboxRoot: string;
  const cleanups: (() => Promise<void>)[] = [];

  beforeEach(async () => {
    broker = await MosquittoBroker.start();
    outboxRoot = await mkdtemp(path.join(os.tmpdir(), "stpmd-publisher-test-"));
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await broker.close();
    await rm(outboxRoot, { recursive: true, force: true });
  });

  type Overrides = NonNullable<PartialConfig["mqtt"]> & PublisherRuntime;

  /** The `mqtt` slice (schema defaults for the rest) and the runtime options, from one set of overrides. */
  function config(overrides: Overrides = {}): [MqttConfig, PublisherRuntime] {
    const { stopTimeoutMs = 2000, maxConcurrentSnapshots, ...keys } = overrides;
    const mqtt = mqttConfig({
      url: broker.url,
      client_id: `stpmd-test-${process.pid}`,
      snapshot_quality: 90,
      outbox: { dir: path.join(outboxRoot, "outbox"), max_messages: 1000, max_bytes: 16 << 20 },
      reconnect_period_ms: 150,
      ...keys,
    });
    return [mqtt, { stopTimeoutMs, ...(maxConcurrentSnapshots ? { maxConcurrentSnapshots } : {}) }];
  }

  async function startPublisher(overrides: Overrides = {}): Promise<Publisher> {
    const [mqtt, runtime] = config(overrides);
    const publisher = new Publisher(mqtt, logger, runtime);
    await publisher.start();
    cleanups.push(() => publisher.stop());
    return publisher;
  }

  async function subscribe(url = broker.url): Promise<Subscriber> {
    const subscriber = await Subscriber.connect(url);
    cleanups.push(() => subscriber.close());
    return subscriber;
  }

  test("publishes results, defect events with a snapshot topic, and online/stopped status", async () => {
    const subscriber = await subscribe();
    const publisher = await startPublisher();
    await until(() => statusStates(subscriber).length === 1, "online status");
    publisher.publishStatus({
      model_version: "stpm-test-1",
      fps: 12.5,
      dropped_frames: 3,
      cameras: {
        cam0: {
          state: "streaming",
          fps: 12.5,
          restarts: 0,
          bad_frames: 0,
          errors: 1,
          model_version: "stpm-test-1",
          threshold: 0.5,
          predicted_false_alarms: { false_alarms: 1, normals: 42, rate: 1 / 42, upper95: 0.11 },
        },
      },
      outputs: { opcua: { ok: false, durable: false, detail: "not listening", failed_batches: 2 } },
      recipe: "bottle-500ml",
    });
    publisher.publishResult(inspection(0, { defective: false }));
    publisher.publishResult(inspection(1));
    await until(
      () =>
        subscriber.on("stpmd/cam0/result").length === 2 &&
        subscriber.on("stpmd/cam0/defect").length === 1 &&
        subscriber.on("stpmd/cam0/snapshot").length === 1 &&
        statusStates(subscriber).length === 2,
      "result, defect, snapshot and status",
    );

    assert.deepEqual(subscriber.json("stpmd/cam0/result"), [
      {
        seq: 0,
        capture_ts: "2025-01-02T03:04:05.600Z",
        score: 0.05,
        threshold: 1,
        verdict: "ok",
        defective: false,
        regions: 0,
        latency_ms: 25,
        model_version: "stpm-test-1",
      },
      {
        seq: 1,
        capture_ts: "2025-01-02T03:04:05.640Z",
        score: 3,
        threshold: 1,
        verdict: "defect",
        defective: true,
        regions: 1,
        latency_ms: 25,
        model_version: "stpm-test-1",
      },
    ]);
    assert.equal(subscriber.on("stpmd/cam0/result")[0]!.retain, false);

    const [defect] = subscriber.json<DefectPayload>("stpmd/cam0/defect");
    assert.deepEqual(defect, {
      event_id: `cam0-${BASE_TS + 40}-1`,
      camera: "cam0",
      seq: 1,
      capture_ts: "2025-01-02T03:04:05.640Z",
      inferred_ts: "2025-01-02T03:04:05.665Z",
      score: 3,
      threshold: 1,
      regions: [{ bbox: [20, 10, 4, 4], area: 16, peak: 3 }],
      model_version: "stpm-test-1",
      frame_size: [WIDTH, HEIGHT],
      snapshot: "topic",
    });
    assert.equal(subscriber.on("stpmd/cam0/defect")[0]!.retain, false);
    // The snapshot follows its event, retained, as a JPEG of the frame's size.
    const topicsInOrder = subscriber.messages.map((m) => m.topic).filter((t) => /defect|snapshot/.test(t));
    assert.deepEqual(topicsInOrder, ["stpmd/cam0/defect", "stpmd/cam0/snapshot"]);
    const snapshot = subscriber.on("stpmd/cam0/snapshot")[0]!;
    assert.equal(snapshot.retain, true);
    const meta = await sharp(snapshot.payload).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["jpeg", WIDTH, HEIGHT]);

    const status = subscriber.json<StatusPayload>("stpmd/status")[1]!;
    assert.equal(status.state, "online");
    assert.equal(status.model_version, "stpm-test-1");
    assert.equal(status.dropped_frames, 3);
    assert.deepEqual(status.cameras, {
      cam0: {
        state: "streaming",
        fps: 12.5,
        restarts: 0,
        bad_frames: 0,
        errors: 1,
        model_version: "stpm-test-1",
        threshold: 0.5,
        predicted_false_alarms: { false_alarms: 1, normals: 42, rate: 1 / 42, upper95: 0.11 },
      },
    });
    assert.deepEqual(status.outputs, {
      opcua: { ok: false, durable: false, detail: "not listening", failed_batches: 2 },
    });
    assert.ok(Number.isFinite(Date.parse(status.ts)));
    assert.deepEqual(Object.keys(status).sort(), [
      "cameras",
      "defects_without_snapshot",
      "dropped_frames",
      "fps",
      "model_version",
      "outbox",
      "outputs",
      "recipe",
      "state",
      "ts",
      "uptime_s",
    ]);
    assert.equal(status.recipe, "bottle-500ml");

    // The subscriber can see a message before the publisher has processed the broker's PUBACK for it.
    await until(
      () => publisher.stats().eventsDelivered === 1 && publisher.stats().snapshotsDelivered === 1,
      "delivery counts",
    );
    const stats = publisher.stats();
    assert.equal(stats.resultsPublished, 2);
    assert.equal(stats.eventsQueued, 1);
    assert.equal(stats.snapshotsDelivered, 1);
    assert.equal(stats.outboxQueued, 0);

    await publisher.stop();
    await until(() => statusStates(subscriber).length === 3, "stopped status");
    assert.deepEqual(statusStates(subscriber).at(-1), { state: "stopped", retain: true });
    // A clean disconnect must not fire the last will: a late subscriber still sees `stopped`.
    const late = await subscribe();
    await until(() => statusStates(late).length === 1, "retained status for a late subscriber");
    assert.deepEqual(statusStates(late), [{ state: "stopped", retain: true }]);
  });

  test("inline snapshots travel base64 in the event and nothing goes to the snapshot topic", async () => {
    const subscriber = await subscribe();
    const publisher = await startPublisher({ snapshot: "inline" });
    await until(() => publisher.isConnected, "connection");
    publisher.publishResult(inspection(5));
    await until(() => subscriber.on("stpmd/cam0/defect").length === 1, "defect event");
    const [defect] = subscriber.json<DefectPayload>("stpmd/cam0/defect");
    assert.equal(defect!.snapshot, "inline");
    const meta = await sharp(Buffer.from(defect!.snapshot_jpeg_base64!, "base64")).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["jpeg", WIDTH, HEIGHT]);
    await publisher.stop();
    assert.equal(subscriber.on("stpmd/cam0/snapshot").length, 0);
  });

  test("an abrupt connection loss fires the retained offline will; reconnecting publishes online again", async () => {
    const subscriber = await subscribe();
    const publisher = await startPublisher();
    await until(() => statusStates(subscriber).length === 1, "online status");
    publisher.mqttClient!.stream.destroy(); // no DISCONNECT packet: the broker must publish the will
    await until(() => statusStates(subscriber).length >= 3, "offline then online");
    assert.deepEqual(statusStates(subscriber).slice(0, 3), [
      { state: "online", retain: true },
      { state: "offline", retain: true },
      { state: "online", retain: true },
    ]);
  });

  test("defects published while the broker is down arrive in order after it restarts without persistence", async () => {
    // The gate decides when the publisher may reach the restarted broker, so the subscriber is there first.
    const gate = await TcpGate.start(broker.port);
    cleanups.push(() => gate.shutdown());
    const before = await Subscriber.connect(broker.url);
    const publisher = await startPublisher({ url: gate.url, snapshot: "none" });
    await until(() => statusStates(before).length === 1, "online status");
    await before.close();

    await broker.stop();
    gate.close();
    await until(() => !publisher.isConnected, "publisher to notice the outage");
    for (let seq = 0; seq < 20; seq++) publisher.publishResult(inspection(seq));
    await until(() => publisher.stats().eventsQueued === 20, "20 events in the outbox");
    assert.equal(publisher.stats().outboxQueued, 20);
    assert.equal(publisher.stats().resultsDropped, 20, "results are dropped, not queued, while offline");

    await broker.restart();
    const after = await subscribe();
    gate.open();
    await until(
      () => new Set(after.json<DefectPayload>("stpmd/cam0/defect").map((d) => d.seq)).size === 20,
      "20 events",
    );
    const seqs = after.json<DefectPayload>("stpmd/cam0/defect").map((d) => d.seq);
    const firstSeen = seqs.filter((seq, i) => seqs.indexOf(seq) === i);
    assert.deepEqual(
      firstSeen,
      Array.from({ length: 20 }, (_, i) => i),
    );
    // QoS 1 may repeat a message, but never reorders: each repeat follows its original immediately.
    for (let i = 1; i < seqs.length; i++)
      assert.ok(seqs[i]! >= seqs[i - 1]!, `order broken at ${seqs.join(",")}`);
    await until(() => statusStates(after).some((s) => s.state === "online"), "online on the fresh broker");
    assert.deepEqual(statusStates(after).at(-1), { state: "online", retain: true });
    await until(() => publisher.stats().eventsDelivered === 20, "20 deliveries acknowledged");
    assert.equal(publisher.stats().outboxQueued, 0);
  });

  test("events queued by one publisher are delivered by the next one; overflow is counted", async () => {
    const gate = await TcpGate.start(broker.port);
    cleanups.push(() => gate.shutdown());
    gate.close();
    const outbox = { dir: path.join(outboxRoot, "shared"), max_messages: 3, max_bytes: 1 << 20 };
    const [firstConfig, firstRuntime] = config({
      url: gate.url,
      snapshot: "none",
      outbox,
      stopTimeoutMs: 300,
    });
    const first = new Publisher(firstConfig, logger, firstRuntime);
    await first.start();
    for (let seq = 0; seq < 5; seq++) first.publishResult(inspection(seq));
    await until(() => first.stats().eventsQueued + first.stats().eventsOverflowed === 5, "5 events handled");
    assert.equal(first.stats().eventsQueued, 3);
    assert.equal(first.stats().eventsOverflowed, 2);
    await first.stop();

    const subscriber = await subscribe();
    const second = await startPublisher({ snapshot: "none", outbox });
    await until(() => subscriber.on("stpmd/cam0/defect").length >= 3, "3 resumed events");
    assert.deepEqual(
      subscriber.json<DefectPayload>("stpmd/cam0/defect").map((d) => d.seq),
      [0, 1, 2],
    );
    await until(() => second.stats().outboxQueued === 0, "outbox drained");
  });

  test("a saturated snapshot renderer sends events without pictures, still in capture order", async () => {
    const subscriber = await subscribe();
    const publisher = await startPublisher({ maxConcurrentSnapshots: 1 });
    await until(() => publisher.isConnected, "connection");
    for (let seq = 0; seq < 5; seq++) publisher.publishResult(inspection(seq));
    await until(() => publisher.stats().eventsDelivered === 5, "5 events");
    await until(() => subscriber.on("stpmd/cam0/snapshot").length === 1, "the one snapshot");
    const events = subscriber.json<DefectPayload>("stpmd/cam0/defect");
    // Event 0 waits for its render; events 1–4 (no render) must not overtake it.
    assert.deepEqual(
      events.map((e) => [e.seq, e.snapshot]),
      [
        [0, "topic"],
        [1, "none"],
        [2, "none"],
        [3, "none"],
        [4, "none"],
      ],
    );
    assert.equal(publisher.stats().snapshotsSkipped, 4);
  });

  test("defects sent without their snapshot (renderer busy) are counted per camera in health, status and metrics", async () => {
    const subscriber = await subscribe();
    const config = testConfig({
      mqtt: {
        url: broker.url,
        client_id: `stpmd-test-${process.pid}`,
        outbox: { dir: path.join(outboxRoot, "sink") },
        reconnect_period_ms: 150,
        snapshot: "topic",
      },
      cameras: [
        { id: "cam0", source: "videotestsrc" },
        { id: "cam1", source: "videotestsrc" },
      ],
    });
    const control = new TestLineControl(["cam0", "cam1"]);
    const sink = new MqttSink(testSinkContext(config, control, logger));
    await sink.start();
    cleanups.push(() => sink.stop());
    await until(() => sink.health().ok, "connection");
    // One batch of 14 defects at once: the renderer (2 at a time) is busy for all but the first two.
    const results = Array.from({ length: 14 }, (_, seq) =>
      inspection(seq, { camera: seq % 3 === 0 ? "cam1" : "cam0" }),
    );
    sink.deliver({ results, inferenceMs: 1, manifest: undefined });
    await until(
      () => subscriber.on("stpmd/cam0/defect").length + subscriber.on("stpmd/cam1/defect").length === 14,
      "14 events",
    );

    const sentWithout: Record<string, number> = {};
    for (const camera of ["cam0", "cam1"]) {
      const events = subscriber.json<DefectPayload>(`stpmd/${camera}/defect`);
      sentWithout[camera] = events.filter((event) => event.snapshot === "none").length;
    }
    assert.equal(sentWithout.cam0! + sentWithout.cam1!, 12, "all but the two rendered");
    const health = sink.health();
    assert.equal(health.counts?.defects_without_snapshot, 12);
    assert.deepEqual(health.cameras, {
      cam0: { defects_without_snapshot: sentWithout.cam0 },
      cam1: { defects_without_snapshot: sentWithout.cam1 },
    });

    const statuses = subscriber.on("stpmd/status").length; // the one sent on connecting, before the defects
    sink.statusChanged();
    await until(() => subscriber.on("stpmd/status").length > statuses, "status");
    const status = subscriber.json<StatusPayload>("stpmd/status").at(-1)!;
    assert.deepEqual(status.defects_without_snapshot, sentWithout);

    const metrics = new LineMetrics(control, { processMetrics: false });
    const text = await metrics.render({
      ...control.snapshot(),
      sinks: [{ name: "mqtt", durable: true, failed_batches: 0, ...health }],
    });
    for (const camera of ["cam0", "cam1"]) {
      const line = new RegExp(`^stpmd_defects_without_snapshot_total\\{camera="${camera}"\\} (\\d+)$`, "m");
      assert.equal(Number(line.exec(text)?.[1]), sentWithout[camera], camera);
    }
  });

  test("camera ids that are not a topic level are refused without throwing to the caller", async () => {
    assert.throws(
      () => new Topics("stpmd").camera("line/1", "result"),
      (err: unknown) =>
        isStpmdError(err) && err.code === "ERR_CONFIG_INVALID" && /"line\/1"/.test(err.message),
    );
    assert.throws(() => new Topics("stpmd/#"), /'#'|"#"/);
    assert.throws(() => config({ prefix: "a/+/b" }), /mqtt\.prefix: must not contain "\+" or "#"/);

    const subscriber = await subscribe();
    const publisher = await startPublisher();
    await until(() => publisher.isConnected, "connection");
    for (const camera of ["line/1", "cam+", "cam#"]) {
      assert.doesNotThrow(() => publisher.publishResult(inspection(1, { camera })));
    }
    publisher.publishResult(inspection(2));
    await until(
      () => subscriber.on("stpmd/cam0/snapshot").length === 1,
      "the valid camera's event and snapshot",
    );
    assert.equal(publisher.stats().resultsDropped, 3);
    assert.deepEqual([...new Set(subscriber.messages.map((m) => m.topic))].sort(), [
      "stpmd/cam0/defect",
      "stpmd/cam0/result",
      "stpmd/cam0/snapshot",
      "stpmd/status",
    ]);
  });
});

describe("Publisher on MQTT 5 behind an ACL", () => {
  test("a defect event the broker refuses stays queued (not counted delivered) until the ACL lets it through", async () => {
    const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-publisher-acl-"));
    const passwords = path.join(work, "passwords");
    const acl = path.join(work, "acl");
    execFileSync("mosquitto_passwd", ["-c", "-b", passwords, "stpmd", "daemon-pw"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "observer", "obs"]);
    const rules = (daemonTopics: string[]) =>
      writeFileSync(
        acl,
        [
          "user stpmd",
          ...daemonTopics.map((t) => `topic write ${t}`),
          "user observer",
          "topic read stpmd/#",
          "",
        ].join("\n"),
      );
    // the ACL forgot the defect and snapshot topics
    rules(["stpmd/status", "stpmd/+/result"]);
    const broker = await MosquittoBroker.start({ passwordFile: passwords, extraConfig: [`acl_file ${acl}`] });
    const observer = await connectAsync(broker.url, {
      protocolVersion: 5,
      reconnectPeriod: 0,
      username: "observer",
      password: "obs",
    });
    const seen: string[] = [];
    observer.on("message", (topic) => seen.push(topic));
    await observer.subscribeAsync("stpmd/#", { qos: 1 });
    const publisher = new Publisher(
      mqttConfig({
        url: broker.url,
        username: "stpmd",
        password: "daemon-pw",
        reconnect_period_ms: 150,
        outbox: { dir: path.join(work, "outbox") },
      }),
      logger,
      { stopTimeoutMs: 1000 },
    );
    try {
      await publisher.start();
      await until(() => publisher.isConnected, "connection");
      assert.equal(publisher.mqttClient?.options.protocolVersion, 5, "MQTT 5 by default");
      publisher.publishResult(inspection(1));
      await until(() => seen.includes("stpmd/cam0/result"), "the result, which the ACL allows");
      await sleep(600); // four drain retries, 150 ms apart
      assert.equal(publisher.stats().eventsDelivered, 0, "the refused event is not counted delivered");
      assert.equal(publisher.stats().outboxQueued, 1, "it waits in the outbox");
      assert.equal(seen.includes("stpmd/cam0/defect"), false);

      rules(["stpmd/status", "stpmd/+/result", "stpmd/+/defect", "stpmd/+/snapshot"]);
      broker.reload();
      await until(
        () => seen.includes("stpmd/cam0/snapshot"),
        "the event and its snapshot once the ACL allows them",
      );
      assert.deepEqual(
        seen.filter((t) => t !== "stpmd/status"),
        ["stpmd/cam0/result", "stpmd/cam0/defect", "stpmd/cam0/snapshot"],
      );
      assert.equal(publisher.stats().eventsDelivered, 1);
      assert.equal(publisher.stats().outboxQueued, 0);
    } finally {
      await observer.endAsync(true);
      await publisher.stop();
      await broker.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
