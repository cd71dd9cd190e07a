import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import mqtt from "mqtt";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import type {
  ResultBatch,
  ResultSink,
  SinkContext,
  SinkFactory,
  SinkHealth,
} from "../../src/publish/sink.js";
import { SINKS } from "../../src/publish/sinks.js";
import type { StatusPayload } from "../../src/publish/topics.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { MosquittoBroker } from "../helpers/mosquitto.js";
import { waitFor } from "../helpers/wait.js";

/**
 * A new output written against the sink interface alone, as its own folder under src/publish would hold it: it
 * imports nothing of the daemon, and the daemon was never edited for it. It records what the daemon does to it.
 */
class RecordingSink implements ResultSink {
  readonly durable = false;
  readonly events: string[] = [];
  readonly batches: ResultBatch[] = [];
  batchesWhileStopped = 0;
  camerasAtStart: string[] = [];
  private running = false;

  constructor(
    private readonly context: SinkContext,
    readonly name = "recorder",
  ) {}

  async start(): Promise<void> {
    this.events.push("start");
    this.camerasAtStart = this.context.control.snapshot().cameras.map((camera) => camera.id);
    this.running = true;
  }

  async stop(): Promise<void> {
    this.events.push("stop");
    this.running = false;
  }

  deliver(batch: ResultBatch): void {
    if (!this.running) this.batchesWhileStopped += 1;
    this.batches.push(batch);
  }

  statusChanged(): void {
    if (this.events.at(-1) !== "status") this.events.push("status");
  }

  health(): SinkHealth {
    return { ok: true, counts: { batches: this.batches.length } };
  }

  get results(): number {
    return this.batches.reduce((sum, batch) => sum + batch.results.length, 0);
  }
}

/** An output that throws on every batch: it must cost only its own deliveries. */
class BrokenSink implements ResultSink {
  readonly name = "broken";
  readonly durable = true;
  calls = 0;
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  deliver(): void {
    this.calls += 1;
    throw new Error("disk on fire");
  }
  health(): SinkHealth {
    return { ok: false, detail: "disk on fire" };
  }
}

async function station(prefix: string, brokerUrl = "mqtt://127.0.0.1:1") {
  const { work, bundle, noise } = await tinyStation(prefix);
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam", source: replaySource(noise, 20) }],
    mqtt: {
      url: brokerUrl,
      prefix: "sinks",
      outbox: { dir: path.join(work, "outbox") },
      status_interval_s: 1,
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  return config;
}

test("the daemon drives a sink registered by one line: start before frames, every batch, status, health, stop after the last frame; a throwing sink costs only itself", async () => {
  const broker = await MosquittoBroker.start();
  const config = await station("stpmd-sinks-", broker.url);
  const statuses: StatusPayload[] = [];
  const sub = await mqtt.connectAsync(broker.url, { clientId: "sinks-status" });
  sub.on("message", (_topic, payload) => statuses.push(JSON.parse(payload.toString()) as StatusPayload));
  await sub.subscribeAsync("sinks/status", { qos: 1 });
  const { logger, lines } = capturingLogger("info");
  let recorder: RecordingSink | undefined;
  const broken = new BrokenSink();
  const recording: SinkFactory = {
    name: "recorder",
    create: (context) => (recorder = new RecordingSink(context)),
  };
  const breaking: SinkFactory = { name: "broken", create: () => broken };
  const seen: InspectionResult[] = [];
  const daemon = new Daemon(config, logger, {
    // the one registration line a new sink needs (here beside the registered ones, in the order given)
    sinks: [...SINKS, breaking, recording],
    hooks: { onResult: (r) => seen.push(r) },
  });
  let stopped = false;
  try {
    await daemon.start();
    assert.ok(recorder !== undefined, "the daemon built the sink from its factory");
    assert.equal(recorder.events[0], "start");
    assert.deepEqual(recorder.camerasAtStart, ["cam"], "a sink starts with the stations in place");
    await waitFor("ten batches at the new sink", () => recorder!.batches.length >= 10, 30_000);
    await waitFor("a status change", () => recorder!.events.includes("status"), 5_000);

    const batch = recorder.batches[0]!;
    assert.ok(
      batch.results.length >= 1 && batch.results.length <= 2,
      "a batch is at most inference.max_batch",
    );
    assert.equal(
      batch.manifest?.model_version,
      daemon.modelVersion,
      "the batch names the model that judged it",
    );
    assert.ok(batch.inferenceMs > 0);
    assert.ok(batch.results.every((r) => r.frame.cameraId === "cam"));
    // the broken sink is registered before the recorder: its throw on every batch did not keep a batch from it
    assert.equal(broken.calls, recorder.batches.length);
    assert.equal(recorder.results, seen.length, "the sink saw every result the daemon inspected");

    const sinks = daemon.snapshot().sinks;
    assert.deepEqual(
      sinks.map((s) => s.name),
      ["mqtt", "records", "broken", "recorder"],
      "the registered sinks (the part record is on by default), then the two given",
    );
    const byName = new Map(sinks.map((s) => [s.name, s]));
    assert.equal(byName.get("recorder")?.ok, true);
    assert.equal(byName.get("recorder")?.durable, false);
    assert.ok((byName.get("recorder")?.counts?.batches ?? 0) >= 10);
    assert.equal(byName.get("recorder")?.failed_batches, 0);
    assert.equal(byName.get("broken")?.ok, false);
    assert.equal(byName.get("broken")?.detail, "disk on fire");
    assert.equal(byName.get("broken")?.failed_batches, broken.calls, "every failed delivery is counted");
    assert.equal(byName.get("mqtt")?.durable, true);
    // the retained MQTT status carries the other outputs' health
    const status = await waitFor(
      "a status naming the outputs' failures",
      () => statuses.find((s) => s.state === "online" && (s.outputs?.broken?.failed_batches ?? 0) > 0),
      5_000,
    );
    assert.deepEqual(
      Object.keys(status.outputs).sort(),
      ["broken", "recorder", "records"],
      "MQTT itself is up",
    );
    assert.deepEqual(status.outputs.recorder, { ok: true, durable: false, failed_batches: 0 });
    assert.equal(status.outputs.broken?.detail, "disk on fire");
    const failures = lines.filter((l) => l.msg.startsWith("output broken failed on a batch"));
    assert.equal(failures.length, 1, `one line for ${broken.calls} failures within a minute`);
    assert.equal(failures[0]?.sink, "broken");

    stopped = true;
    await daemon.stop();
    assert.equal(recorder.events.at(-1), "stop");
    assert.equal(recorder.batchesWhileStopped, 0, "no batch before start or after stop");
    assert.equal(recorder.results, daemon.inspectedFrames, "the frames drained at stop reached the sink too");
  } finally {
    if (!stopped) await daemon.stop();
    await sub.endAsync();
    await broker.close();
  }
});

test("without its broker the MQTT sink says so in the status, and the other outputs are served all the same", async () => {
  const config = await station("stpmd-sinks-nobroker-");
  let recorder: RecordingSink | undefined;
  const recording: SinkFactory = {
    name: "recorder",
    create: (context) => (recorder = new RecordingSink(context)),
  };
  const daemon = new Daemon(config, createLogger("silent"), { sinks: [...SINKS, recording] });
  try {
    await daemon.start();
    await waitFor("batches at the recorder", () => (recorder?.batches.length ?? 0) >= 3, 30_000);
    const mqttStatus = await waitFor("the MQTT sink's refusal", () => {
      const s = daemon.sinkStatus("mqtt");
      return s?.detail !== undefined ? s : undefined;
    });
    assert.equal(mqttStatus.ok, false);
    assert.match(mqttStatus.detail ?? "", /ECONNREFUSED/);
    assert.equal(daemon.sinkStatus("recorder")?.ok, true);
  } finally {
    await daemon.stop();
  }
});

test("a sink that cannot start stops the daemon's start, and the sinks started before it are stopped again", async () => {
  const config = await station("stpmd-sinks-start-");
  const logger = createLogger("silent");
  let recorder: RecordingSink | undefined;
  const recording: SinkFactory = {
    name: "recorder",
    create: (context) => (recorder = new RecordingSink(context)),
  };
  const refusing: SinkFactory = {
    name: "refusing",
    create: () => ({
      name: "refusing",
      durable: false,
      start: () => Promise.reject(new Error("refusing: port 1 is taken")),
      stop: async () => undefined,
      deliver: () => undefined,
      health: () => ({ ok: false }),
    }),
  };
  const daemon = new Daemon(config, logger, { sinks: [recording, refusing] });
  await assert.rejects(daemon.start(), /refusing: port 1 is taken/);
  assert.deepEqual(recorder?.events, ["start", "stop"]);
  assert.equal(recorder?.batches.length, 0, "no camera ran");
  assert.equal(daemon.inspectedFrames, 0);
});

/** An output whose start() waits until the test releases it (OPC UA creating its certificate, say). */
class SlowStartingSink implements ResultSink {
  readonly name = "slow";
  readonly durable = false;
  readonly events: string[] = [];
  release: () => void = () => undefined;
  private readonly released = new Promise<void>((resolve) => {
    this.release = resolve;
  });
  async start(): Promise<void> {
    this.events.push("start");
    await this.released;
  }
  async stop(): Promise<void> {
    this.events.push("stop");
  }
  deliver(): void {
    this.events.push("batch");
  }
  health(): SinkHealth {
    return { ok: true };
  }
}

/** A daemon whose outputs are a recorder, a slow-starting sink, then a second recorder; with its log lines. */
async function slowStartingDaemon(prefix: string) {
  const config = await station(prefix);
  const { logger, lines } = capturingLogger("info");
  const recorders: RecordingSink[] = [];
  const recording: SinkFactory = {
    name: "recorder",
    create: (context) => {
      const sink = new RecordingSink(context, `recorder${recorders.length + 1}`);
      recorders.push(sink);
      return sink;
    },
  };
  const slow = new SlowStartingSink();
  const daemon = new Daemon(config, logger, {
    sinks: [recording, { name: "slow", create: () => slow }, recording],
  });
  const reloadsRun = () => lines.filter((l) => /^reload requested by/.test(l.msg)).length;
  return { daemon, slow, recorders, lines, reloadsRun };
}

test("reloads asked for while an output starts (SIGHUPs during start-up) run once started, one for all of them", async () => {
  const { daemon, slow, lines, reloadsRun } = await slowStartingDaemon("stpmd-sinks-early-reload-");
  try {
    const starting = daemon.start();
    await waitFor("the slow output starting", () => slow.events.includes("start"), 30_000);
    const reloads = [daemon.reload({ via: "sighup" }), daemon.reload({ via: "sighup" })];
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(reloadsRun(), 0, "no reload runs on a daemon still starting");
    assert.equal(lines.filter((l) => /during start-up; it runs once started/.test(l.msg)).length, 1);
    slow.release();
    await starting;
    const outcomes = await Promise.all(reloads);
    assert.equal(reloadsRun(), 1, "one reload for the two asked during start-up");
    assert.deepEqual(outcomes[0], outcomes[1]);
    await waitFor("frames after the reload", () => daemon.inspectedFrames > 0, 30_000);
  } finally {
    await daemon.stop();
  }
});

test("a stop asked for while an output starts (SIGTERM during start-up) ends start-up after it and stops what was started", async () => {
  const { daemon, slow, recorders, lines, reloadsRun } = await slowStartingDaemon("stpmd-sinks-early-stop-");
  const starting = daemon.start();
  await waitFor("the slow output starting", () => slow.events.includes("start"), 30_000);
  const reload = daemon.reload({ via: "sighup" });
  const stopping = daemon.stop();
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(daemon.stopStep, "finishing the start-up step in progress");
  slow.release();
  await starting;
  await stopping;
  assert.deepEqual(
    slow.events,
    ["start", "stop"],
    "the output that was starting is stopped, and saw no batch",
  );
  assert.deepEqual(
    recorders[0]!.events.filter((e) => e !== "status"),
    ["start", "stop"],
    "the output started before it is stopped",
  );
  assert.deepEqual(recorders[1]!.events, [], "the output after it never starts");
  assert.equal(daemon.inspectedFrames, 0, "no camera ran");
  assert.deepEqual(await reload, { configApplied: false, problems: [], swapped: [], failed: [] });
  assert.equal(reloadsRun(), 0, "the reload asked for during start-up does not run on a stopped daemon");
  assert.ok(lines.some((l) => l.msg === "stopped"));
});
