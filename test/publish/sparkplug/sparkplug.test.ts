import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { connect, type MqttClient } from "mqtt";
import { pino } from "pino";
import { get as sparkplugNamespace } from "sparkplug-payload";
import type { UMetric, UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import type { SparkplugConfig } from "../../../src/config/index.js";
import type { Logger } from "../../../src/core/log.js";
import { SparkplugNode } from "../../../src/publish/sparkplug/sparkplug.js";
import { defectEventId } from "../../../src/publish/topics.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl, testCandidateView } from "../../helpers/line-control.js";
import { MosquittoBroker, TcpGate } from "../../helpers/mosquitto.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

const codec = sparkplugNamespace("spBv1.0")!;

/** One message the host received, decoded as a Sparkplug host would. */
interface Received {
  topic: string;
  verb: string;
  device: string | undefined;
  payload: UPayload;
  /** Position in arrival order over all of this host's messages. */
  index: number;
}

/** uint64 fields arrive as Long objects from protobufjs; the tests compare plain numbers. */
function num(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "object" && value !== null && "toNumber" in value) {
    return (value as { toNumber(): number }).toNumber();
  }
  throw new Error(`not a number: ${String(value)}`);
}

function metric(message: Received, name: string): UMetric {
  const found = message.payload.metrics?.find((m) => m.name === name);
  assert.ok(found, `${message.verb} ${message.device ?? ""} has no metric "${name}"`);
  return found;
}

/**
 * A Sparkplug host application written for the test: it subscribes to the group, decodes every message with
 * sparkplug-payload (a message that does not decode fails the test), and sends commands and STATE.
 */
class TestHost {
  readonly received: Received[] = [];
  readonly decodeErrors: string[] = [];
  private constructor(
    readonly client: MqttClient,
    readonly group: string,
    readonly node: string,
  ) {}

  static async start(
    url: string,
    group: string,
    node: string,
    login: { username?: string; password?: string } = {},
  ): Promise<TestHost> {
    const client = connect(url, { clientId: `host-${group}`, clean: true, reconnectPeriod: 100, ...login });
    const host = new TestHost(client, group, node);
    client.on("message", (topic, payload) => {
      const [, , verb = "", , device] = topic.split("/");
      if (verb === "NCMD" || verb === "DCMD") return; // the host's own commands, some malformed on purpose
      try {
        host.received.push({
          topic,
          verb,
          device,
          payload: codec.decodePayload(payload),
          index: host.received.length,
        });
      } catch (err) {
        host.decodeErrors.push(`${topic}: ${String(err)}`);
      }
    });
    await new Promise<void>((resolve) => client.once("connect", () => resolve()));
    await client.subscribeAsync(`spBv1.0/${group}/#`, { qos: 1 });
    return host;
  }

  of(verb: string, device?: string): Received[] {
    return this.received.filter((m) => m.verb === verb && (device === undefined || m.device === device));
  }

  /** Waits for the `count`-th message (1-based) matching verb and device, and returns it. */
  async next(verb: string, device?: string, count = 1, timeoutMs = 10_000): Promise<Received> {
    return waitFor(`${count} ${verb} ${device ?? ""}`, () => this.of(verb, device)[count - 1], timeoutMs);
  }

  async command(metrics: UMetric[], device?: string): Promise<void> {
    const topic =
      device === undefined
        ? `spBv1.0/${this.group}/NCMD/${this.node}`
        : `spBv1.0/${this.group}/DCMD/${this.node}/${device}`;
    await this.client.publishAsync(
      topic,
      Buffer.from(codec.encodePayload({ timestamp: Date.now(), metrics })),
    );
  }

  async raw(topic: string, payload: Buffer): Promise<void> {
    await this.client.publishAsync(topic, payload);
  }

  /** Sparkplug 3.0 STATE: JSON, retained, QoS 1. */
  async state(hostId: string, online: boolean, timestamp = Date.now()): Promise<void> {
    await this.client.publishAsync(`spBv1.0/STATE/${hostId}`, JSON.stringify({ online, timestamp }), {
      qos: 1,
      retain: true,
    });
  }

  async close(): Promise<void> {
    await this.client.endAsync();
    assert.deepEqual(this.decodeErrors, [], "every message the node sent decodes as Sparkplug B");
  }
}

/** A pino logger whose lines the test can read. */
function capturingLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line !== "") lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines: () => lines };
}

let broker: MosquittoBroker;
before(async () => {
  broker = await MosquittoBroker.start();
});
after(async () => {
  await broker.close();
});

let caseNumber = 0;
/** A fresh group, node, state directory and control for one test. */
async function setUp(url: string, extra: Partial<SparkplugConfig> = {}) {
  const n = caseNumber++;
  const dir = await tempDir("stpmd-sparkplug-");
  const group = `line${n}`;
  const node = `stpmd${n}`;
  const config = testConfig({
    mqtt: { url, client_id: `publisher-${n}` },
    sparkplug: {
      enabled: true,
      group_id: group,
      edge_node_id: node,
      bdseq_file: path.join(dir, "bdseq"),
      history: { dir: path.join(dir, "history") },
      report_interval_ms: 200,
      reconnect_period_ms: 100,
      ...extra,
    },
  });
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  const { logger, lines } = capturingLogger();
  const host = await TestHost.start(broker.url, group, node);
  const makeNode = (): SparkplugNode => {
    const sparkplug = new SparkplugNode({ sparkplug: config.sparkplug, mqtt: config.mqtt }, control, logger);
    control.interfaces.splice(0, control.interfaces.length, sparkplug);
    return sparkplug;
  };
  return { dir, group, node, config, control, host, lines, makeNode };
}

describe("Sparkplug B edge node", () => {
  test("births before data; defects as DDATA at their capture time; the NDEATH will carries NBIRTH's bdSeq", async () => {
    const gate = await TcpGate.start(broker.port);
    const { control, host, makeNode } = await setUp(gate.url);
    const node = makeNode();
    await node.start();
    try {
      const nbirth = await host.next("NBIRTH");
      assert.equal(num(nbirth.payload.seq), 0);
      assert.equal(nbirth.index, 0, "NBIRTH is the node's first message");
      const bdSeq = metric(nbirth, "bdSeq");
      assert.equal(bdSeq.type, "Int64");
      assert.equal(num(bdSeq.value), 0, "first connect ever: bdSeq 0");
      assert.equal(metric(nbirth, "Node Control/Rebirth").value, false);
      assert.equal(metric(nbirth, "Node Control/Reload Model").type, "Boolean");
      assert.equal(metric(nbirth, "Models/0/Version").value, "20261201T000000Z");
      assert.equal(metric(nbirth, "Models/0/Student SHA256").value, "0".repeat(64));
      const dbirth1 = await host.next("DBIRTH", "cam1");
      const dbirth2 = await host.next("DBIRTH", "cam2");
      assert.deepEqual([num(dbirth1.payload.seq), num(dbirth2.payload.seq)], [1, 2]);
      assert.equal(metric(dbirth1, "Threshold").type, "Double");
      assert.equal(metric(dbirth1, "Threshold").value, 0.5);
      assert.equal(metric(dbirth1, "Enabled").value, true);
      assert.equal(metric(dbirth1, "State").value, "streaming");
      assert.equal(metric(dbirth1, "Review/False Alarms").type, "UInt64", "review counts declared at birth");
      assert.equal(num(metric(dbirth1, "Review/Confirmed Defects").value), 0);

      const defect = control.emit("cam1", 0.9);
      const ddata = await host.next("DDATA", "cam1");
      assert.ok(ddata.index > dbirth1.index, "DDATA only after its device's DBIRTH");
      assert.equal(metric(ddata, "Last/Score").value, 0.9);
      assert.equal(metric(ddata, "Last/Defective").value, true);
      assert.equal(metric(ddata, "Last/Event Id").value, defectEventId(defect));
      assert.equal(metric(ddata, "Last/Regions").value, 1);
      assert.equal(num(metric(ddata, "Last/Score").timestamp), defect.frame.captureTs);
      assert.equal(metric(ddata, "Last/Score").isHistorical ?? false, false);

      // counters by exception: a burst of results is one report carrying the new count
      for (let i = 0; i < 20; i++) control.emit("cam2", 0.1);
      const counters = await waitFor("cam2 Inspected 20", () =>
        host
          .of("DDATA", "cam2")
          .find((m) => m.payload.metrics?.some((x) => x.name === "Inspected" && num(x.value) === 20)),
      );
      assert.equal(metric(counters, "Inspected").type, "UInt64");
      assert.equal(
        host.of("DDATA", "cam2").filter((m) => m.payload.metrics?.some((x) => x.name === "Inspected")).length,
        1,
      );
      // a frame the model could not judge: reported with the next counters as an error, neither defective nor good
      control.emit("cam2", Number.NaN);
      const error = await waitFor("cam2 Errors 1", () =>
        host
          .of("DDATA", "cam2")
          .find((m) => m.payload.metrics?.some((x) => x.name === "Errors" && num(x.value) === 1)),
      );
      assert.equal(metric(error, "Last/Verdict").value, "error");
      assert.equal(metric(error, "Last/Defective").value, null);
      assert.equal(metric(error, "Last/Score").value, null);
      // labels from the review console: the changed count goes out as DDATA with the next report
      control.setReview("cam2", { false_alarms: 2, confirmed_defects: 1 });
      control.emit("cam2", 0.1);
      const review = await waitFor("cam2 Review/False Alarms 2", () =>
        host
          .of("DDATA", "cam2")
          .find((m) =>
            m.payload.metrics?.some((x) => x.name === "Review/False Alarms" && num(x.value) === 2),
          ),
      );
      assert.equal(num(metric(review, "Review/Confirmed Defects").value), 1);

      const seqs = host.received.filter((m) => m.verb !== "NDEATH").map((m) => num(m.payload.seq));
      assert.deepEqual(
        seqs,
        seqs.map((_, i) => i % 256),
        "seq counts every message of the session",
      );
      const unstamped = host.received
        .filter((m) => m.verb !== "NDEATH")
        .flatMap((m) =>
          (m.payload.metrics ?? []).filter((x) => x.timestamp == null).map((x) => `${m.verb} ${x.name}`),
        );
      assert.deepEqual(unstamped, [], "every metric of a birth or a data message carries a timestamp");

      gate.close(); // the connection dies without a DISCONNECT: the broker publishes the will
      const ndeath = await host.next("NDEATH");
      assert.equal(num(metric(ndeath, "bdSeq").value), 0, "NDEATH carries the bdSeq of the NBIRTH it ends");
      gate.open();
      const rebirth = await host.next("NBIRTH", undefined, 2);
      assert.ok(num(metric(rebirth, "bdSeq").value) >= 1, "a new connect has a new bdSeq");
      // the reconnect is visible to a host as a second session, with its start time
      assert.equal(num(metric(nbirth, "Connection/Sessions").value), 1);
      assert.equal(num(metric(rebirth, "Connection/Sessions").value), 2);
      assert.equal(metric(rebirth, "Connection/Session Start").type, "DateTime");
      assert.ok(
        num(metric(rebirth, "Connection/Session Start").value) >
          num(metric(nbirth, "Connection/Session Start").value),
      );
      assert.equal(metric(rebirth, "Connection/Primary Host").value, "");
      assert.equal(metric(rebirth, "Connection/Primary Host Online").value, null, "no primary host: null");
    } finally {
      await node.stop();
      await host.close();
      await gate.shutdown();
    }
  });

  test("an outage costs one bdSeq, however many connection attempts it took: only a CONNECT the broker answered uses one", async () => {
    const gate = await TcpGate.start(broker.port);
    const { host, makeNode } = await setUp(gate.url);
    const node = makeNode();
    await node.start();
    try {
      const birth1 = await host.next("NBIRTH");
      const before = num(metric(birth1, "bdSeq").value);
      gate.close(); // connections refused from now on: the node retries every 100 ms
      await host.next("NDEATH");
      await new Promise((resolve) => setTimeout(resolve, 1500)); // ~10 refused attempts (before: ~10 bdSeqs)
      gate.open();
      const birth2 = await host.next("NBIRTH", undefined, 2);
      assert.equal(
        num(metric(birth2, "bdSeq").value),
        (before + 1) % 256,
        "the first session after the outage has the next bdSeq",
      );
    } finally {
      await node.stop();
      await host.close();
      await gate.shutdown();
    }
  });

  test("bdSeq grows across a restart of the node and is stored in bdseq_file", async () => {
    const { config, host, makeNode } = await setUp(broker.url);
    const first = makeNode();
    await first.start();
    const birth1 = await host.next("NBIRTH");
    await first.stop();
    const death = await host.next("NDEATH");
    assert.equal(
      num(metric(death, "bdSeq").value),
      num(metric(birth1, "bdSeq").value),
      "clean stop: NDEATH first",
    );
    const second = makeNode();
    await second.start();
    try {
      const birth2 = await host.next("NBIRTH", undefined, 2);
      assert.equal(num(metric(birth2, "bdSeq").value), num(metric(birth1, "bdSeq").value) + 1);
      assert.equal((await readFile(config.sparkplug.bdseq_file, "utf8")).trim(), String(second.currentBdSeq));
    } finally {
      await second.stop();
      await host.close();
    }
  });

  test("NCMD Rebirth re-sends the births with the same bdSeq; Reload Model goes to the control", async () => {
    const { control, host, makeNode } = await setUp(broker.url);
    const node = makeNode();
    await node.start();
    try {
      const birth = await host.next("NBIRTH");
      await host.next("DBIRTH", "cam2");
      await host.command([{ name: "Node Control/Rebirth", type: "Boolean", value: true }]);
      const again = await host.next("NBIRTH", undefined, 2);
      assert.equal(num(again.payload.seq), 0);
      assert.equal(num(metric(again, "bdSeq").value), num(metric(birth, "bdSeq").value));
      const dbirth = await host.next("DBIRTH", "cam1", 2);
      assert.equal(num(dbirth.payload.seq), 1);
      await host.next("DBIRTH", "cam2", 2);

      await host.command([{ name: "Node Control/Reload Model", type: "Boolean", value: true }]);
      const reload = await waitFor("reload call", () => control.calls.find((c) => c.method === "reload"));
      assert.deepEqual(reload.by, { via: "sparkplug" });
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("DCMD Threshold and Enabled: applied through the control, echoed, and the next verdict uses the threshold", async () => {
    const { control, host, lines, makeNode } = await setUp(broker.url);
    const node = makeNode();
    await node.start();
    try {
      await host.next("DBIRTH", "cam2");
      await host.command([{ name: "Threshold", type: "Double", value: 0.8 }], "cam1");
      const echo = await waitFor("Threshold echo", () =>
        host.of("DDATA", "cam1").find((m) => m.payload.metrics?.some((x) => x.name === "Threshold")),
      );
      assert.equal(metric(echo, "Threshold").value, 0.8);
      assert.deepEqual(control.calls, [
        { method: "setThreshold", args: ["cam1", { value: 0.8 }], by: { via: "sparkplug" } },
      ]);
      const verdict = control.emit("cam1", 0.7);
      assert.equal(verdict.threshold, 0.8);
      assert.equal(verdict.verdict, "ok");

      // refused by the control (not positive), and the wrong datatype: logged, nothing changes
      await host.command([{ name: "Threshold", type: "Double", value: -1 }], "cam1");
      await host.command([{ name: "Threshold", type: "Int32", value: 3 }], "cam1");
      await waitFor("refusal and datatype log lines", () => {
        const messages = lines().map((l) => String(l.msg));
        return (
          messages.some(
            (m) => m.includes("DCMD Threshold refused") && m.includes("must be a positive number"),
          ) && messages.some((m) => m.includes("must be Double or Float, got Int32"))
        );
      });
      assert.equal(control.snapshot().cameras[0]!.threshold, 0.8);
      assert.equal(
        control.calls.filter((c) => c.method === "setThreshold").length,
        2,
        "Int32 never reached it",
      );

      // disabling keeps the device born (its tags stay live for a host), so re-enabling writes to a live device
      await host.command([{ name: "Enabled", type: "Boolean", value: false }], "cam2");
      const off = await waitFor("Enabled false", () =>
        host.of("DDATA", "cam2").find((m) => m.payload.metrics?.some((x) => x.name === "Enabled")),
      );
      assert.equal(metric(off, "Enabled").value, false);
      assert.equal(metric(off, "State").value, "disabled");
      await host.command([{ name: "Enabled", type: "Boolean", value: true }], "cam2");
      const on = await waitFor("Enabled true", () =>
        host
          .of("DDATA", "cam2")
          .find((m) => m.payload.metrics?.some((x) => x.name === "Enabled" && x.value === true)),
      );
      assert.equal(metric(on, "State").value, "streaming");
      await new Promise((resolve) => setTimeout(resolve, 300)); // two report intervals: no DDEATH, no DBIRTH
      assert.deepEqual(host.of("DDEATH"), [], "a disabled camera is not dead");
      assert.equal(host.of("DBIRTH", "cam2").length, 1, "nor born again");
      assert.deepEqual(
        control.calls.filter((c) => c.method === "enableCamera").map((c) => c.args),
        [
          ["cam2", false],
          ["cam2", true],
        ],
      );
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("Connection/MQTT: the publisher's session as a host sees it, down with its error at birth, NDATA on each change", async () => {
    const { control, host, makeNode } = await setUp(broker.url);
    const mqtt = {
      name: "mqtt",
      ok: false,
      detail: "connect ECONNREFUSED 127.0.0.1:1883",
      durable: true,
      failed_batches: 0,
    };
    control.sinks = [mqtt];
    const node = makeNode();
    await node.start();
    try {
      const birth = await host.next("NBIRTH");
      assert.equal(metric(birth, "Connection/MQTT").value, false);
      assert.equal(metric(birth, "Connection/MQTT Detail").value, "connect ECONNREFUSED 127.0.0.1:1883");
      const changed = (value: boolean) =>
        host
          .of("NDATA")
          .find((m) => m.payload.metrics?.some((x) => x.name === "Connection/MQTT" && x.value === value));
      mqtt.ok = true;
      const up = await waitFor("NDATA Connection/MQTT true", () => changed(true));
      assert.equal(metric(up, "Connection/MQTT Detail").value, "", "no error while connected");
      mqtt.ok = false;
      mqtt.detail = "connection lost";
      const down = await waitFor("NDATA Connection/MQTT false", () => changed(false));
      assert.equal(metric(down, "Connection/MQTT Detail").value, "connection lost");
      assert.ok(down.index > up.index);
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("a camera disabled while the node was not born: DBIRTH with Enabled false, and its held defect replayed to it", async () => {
    const hostId = `scada${caseNumber}`;
    const { control, host, makeNode } = await setUp(broker.url, { primary_host_id: hostId });
    const node = makeNode();
    await node.start();
    try {
      const held = control.emit("cam2", 0.97); // no STATE yet: held on disk
      await control.enableCamera("cam2", false, { via: "mqtt" });
      await host.state(hostId, true);
      const dbirth = await host.next("DBIRTH", "cam2");
      assert.equal(metric(dbirth, "Enabled").value, false);
      assert.equal(metric(dbirth, "State").value, "disabled");
      const replayed = await host.next("DDATA", "cam2");
      assert.equal(metric(replayed, "Last/Event Id").value, defectEventId(held));
      assert.equal(metric(replayed, "Last/Event Id").isHistorical, true);
      assert.deepEqual(host.of("DDEATH"), []);
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("Model/* DCMD: candidate commands through the control as sparkplug, declared in DBIRTH, refusals logged", async () => {
    const { control, host, lines, makeNode } = await setUp(broker.url);
    control.candidateViews = [testCandidateView("cam1")];
    const node = makeNode();
    await node.start();
    try {
      const dbirth = await host.next("DBIRTH", "cam1");
      for (const name of [
        "Model/Retrain",
        "Model/Cancel Retrain",
        "Model/Shadow",
        "Model/Promote",
        "Model/Rollback",
        "Model/Discard",
      ]) {
        assert.deepEqual([metric(dbirth, name).type, metric(dbirth, name).value], ["Boolean", false], name);
      }
      assert.equal(metric(dbirth, "Model/Job Epoch").type, "Int32");
      assert.equal(metric(dbirth, "Model/Shadow Frames").type, "Int64");
      assert.equal(metric(dbirth, "Model/Job State").type, "String");
      await host.command([{ name: "Model/Retrain", type: "Boolean", value: true }], "cam1");
      await host.command([{ name: "Model/Promote", type: "Boolean", value: false }], "cam1"); // false: nothing
      await host.command([{ name: "Model/Promote", type: "Boolean", value: true }], "cam1");
      await host.command([{ name: "Model/Shadow", type: "Boolean", value: true }], "cam1");
      await host.command([{ name: "Model/Rollback", type: "String", value: "yes" }], "cam1");
      await host.command([{ name: "Model/Discard", type: "Boolean", value: true }], "cam2");
      await waitFor("the refusals logged", () => {
        const messages = lines().map((l) => String(l.msg));
        return (
          messages.some((m) =>
            m.includes('DCMD Model/Rollback for camera "cam1" must be Boolean, got String'),
          ) && messages.some((m) => m.includes("DCMD Model/Discard refused: camera cam2 has no candidate"))
        );
      });
      const by = { via: "sparkplug" };
      assert.deepEqual(control.calls, [
        { method: "startRetrain", args: ["cam1"], by },
        { method: "promote", args: ["cam1", false], by },
        { method: "setShadow", args: ["cam1", true], by },
        { method: "discardCandidate", args: ["cam2"], by },
      ]);
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("malformed protobuf, unknown camera and unknown metric: a log line each, no crash, no change", async () => {
    const { control, host, lines, makeNode } = await setUp(broker.url);
    const node = makeNode();
    await node.start();
    try {
      await host.next("DBIRTH", "cam2");
      await host.raw(
        `spBv1.0/${host.group}/DCMD/${host.node}/cam1`,
        Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x01]),
      );
      await host.raw(`spBv1.0/${host.group}/NCMD/${host.node}`, Buffer.from("not protobuf at all"));
      await host.command([{ name: "Threshold", type: "Double", value: 0.7 }], "cam9");
      await host.command([{ name: "Exposure", type: "Double", value: 0.7 }], "cam1");
      await waitFor("four log lines", () => {
        const messages = lines().map((l) => String(l.msg));
        return (
          messages.filter((m) => m.includes("is not a Sparkplug B payload")).length === 2 &&
          messages.some((m) => m.includes('unknown camera "cam9"')) &&
          messages.some((m) => m.includes('unknown metric "Exposure"'))
        );
      });
      assert.deepEqual(control.calls, []);
      // still serving commands
      await host.command([{ name: "Threshold", type: "Double", value: 0.6 }], "cam1");
      await waitFor("the valid DCMD", () => control.calls.length === 1);
      assert.equal(node.isBorn, true);
    } finally {
      await node.stop();
      await host.close();
    }
  });

  test("primary host: no births before STATE online; offline holds defects on disk; back online replays them as historical", async () => {
    const hostId = `scada${caseNumber}`;
    const { control, host, makeNode } = await setUp(broker.url, { primary_host_id: hostId });
    const node = makeNode();
    await node.start();
    try {
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.deepEqual(host.received, [], "no births while the primary host has not said online");
      assert.deepEqual(node.health(), {
        ok: false,
        detail: "waiting for the primary host",
        connection: { connected: true, born: false },
        counts: { queued: 0, overflowed: 0, lost: 0 },
      });
      const held = [control.emit("cam1", 0.95)]; // before the first birth: held too
      const onlineAt = Date.now();
      await host.state(hostId, true, onlineAt);
      const birth1 = await host.next("NBIRTH");
      assert.equal(metric(birth1, "Connection/Primary Host").value, hostId);
      assert.equal(metric(birth1, "Connection/Primary Host Online").value, true);
      await host.next("DBIRTH", "cam2");
      await host.state(hostId, false, onlineAt - 1000); // older than the newest STATE: stale, ignored
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(host.of("NDEATH"), [], "a stale offline STATE does not end the session");

      await host.state(hostId, false);
      const death = await host.next("NDEATH");
      assert.equal(num(metric(death, "bdSeq").value), num(metric(birth1, "bdSeq").value));
      await waitFor("the node to reconnect and wait", () => !node.isBorn);
      held.push(control.emit("cam1", 0.91), control.emit("cam2", 0.92));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(host.of("NBIRTH").length, 1, "no births while the primary host is offline");
      assert.equal(node.health().ok, false);
      assert.equal(node.health().counts?.queued, 2, "the defects held while offline, on disk");

      await host.state(hostId, true);
      const birth2 = await host.next("NBIRTH", undefined, 2);
      assert.ok(num(metric(birth2, "bdSeq").value) > num(metric(birth1, "bdSeq").value));
      const historical = await waitFor("3 historical DDATA", () => {
        const found = host.received.filter(
          (m) => m.verb === "DDATA" && m.payload.metrics?.some((x) => x.isHistorical),
        );
        return found.length === 3 ? found : undefined;
      });
      assert.deepEqual(
        historical.map((m) => metric(m, "Last/Event Id").value),
        held.map((r) => defectEventId(r)),
        "replayed oldest first, one DDATA per defect",
      );
      for (const [i, m] of historical.entries()) {
        assert.equal(m.device, held[i]!.frame.cameraId);
        assert.equal(
          num(metric(m, "Last/Score").timestamp),
          held[i]!.frame.captureTs,
          "stamped with capture time",
        );
        // the defect held before the first births may go out after them; the ones held while offline after the second
        assert.ok(
          m.index > (i === 0 ? birth1.index : birth2.index),
          `historical DDATA ${i} after the births`,
        );
      }
      const live = control.emit("cam1", 0.99);
      const liveData = await waitFor("live DDATA", () =>
        host
          .of("DDATA", "cam1")
          .find((m) =>
            m.payload.metrics?.some((x) => x.name === "Last/Event Id" && x.value === defectEventId(live)),
          ),
      );
      assert.equal(metric(liveData, "Last/Score").isHistorical ?? false, false);
      assert.deepEqual(node.health(), {
        ok: true,
        connection: { connected: true, born: true },
        counts: { queued: 0, overflowed: 0, lost: 0 },
      });
    } finally {
      await node.stop();
      await host.close();
    }
  });
});

test("deploy/mosquitto's ACL: the Sparkplug user runs the node, the Sparkplug host commands it, the read-only scada user cannot", async () => {
  const dir = await tempDir("stpmd-sparkplug-acl-");
  const passwords = path.join(dir, "passwd");
  for (const [i, user] of ["stpmd", "stpmd-sparkplug", "sparkplug-host", "scada"].entries()) {
    execFileSync("mosquitto_passwd", [...(i === 0 ? ["-c"] : []), "-b", passwords, user, `${user}-pw`]);
  }
  const acl = path.resolve(import.meta.dirname, "../../../../deploy/mosquitto/stpmd.acl");
  const secured = await MosquittoBroker.start({
    passwordFile: passwords,
    extraConfig: [`acl_file ${acl}`, "use_username_as_clientid true"],
  });
  const hostId = "scada-acl";
  const config = testConfig({
    mqtt: { url: secured.url, username: "stpmd", password: "stpmd-pw" },
    sparkplug: {
      enabled: true,
      group_id: "acl",
      edge_node_id: "node",
      primary_host_id: hostId,
      username: "stpmd-sparkplug",
      password: "stpmd-sparkplug-pw",
      bdseq_file: path.join(dir, "bdseq"),
      history: { dir: path.join(dir, "history") },
    },
  });
  const control = new TestLineControl(["cam1"], 0.5);
  const node = new SparkplugNode(
    { sparkplug: config.sparkplug, mqtt: config.mqtt },
    control,
    capturingLogger().logger,
  );
  const host = await TestHost.start(secured.url, "acl", "node", {
    username: "sparkplug-host",
    password: "sparkplug-host-pw",
  });
  const reader = await TestHost.start(secured.url, "acl", "node", {
    username: "scada",
    password: "scada-pw",
  });
  await node.start();
  try {
    await host.state(hostId, true);
    await host.next("DBIRTH", "cam1");
    await reader.command([{ name: "Threshold", type: "Double", value: 0.9 }], "cam1");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(control.calls, [], "the broker drops the read-only user's DCMD");
    await host.command([{ name: "Threshold", type: "Double", value: 0.7 }], "cam1");
    const call = await waitFor("the host's DCMD", () => control.calls[0]);
    assert.deepEqual(call.args, ["cam1", { value: 0.7 }]);
  } finally {
    await node.stop();
    await host.close();
    await reader.close();
    await secured.close();
  }
});

describe("bdSeq store", () => {
  test("starts at 0, counts up per connect, wraps after 255, and restarts at 0 from an unreadable file", async () => {
    const { BdSeqStore } = await import("../../../src/publish/sparkplug/bdseq.js");
    const { writeFile } = await import("node:fs/promises");
    const { logger, lines } = capturingLogger();
    const file = path.join(await tempDir("stpmd-bdseq-"), "state", "bdseq");
    const store = new BdSeqStore(file, logger);
    assert.deepEqual([await store.next(), await store.next()], [0, 1]);
    await writeFile(file, "255\n");
    assert.equal(await new BdSeqStore(file, logger).next(), 0, "255 + 1 wraps to 0");
    assert.equal((await readFile(file, "utf8")).trim(), "0");
    await writeFile(file, "garbage");
    assert.equal(await new BdSeqStore(file, logger).next(), 0);
    assert.ok(lines().some((l) => String(l.msg).includes("does not hold a number 0-255")));
  });
});
