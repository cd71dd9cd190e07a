/**
 * The walk over Sparkplug 3.0's edge-node requirements (tck-requirements.ts): two scenarios run the real node
 * against mosquitto through a wire tap, then each requirement is one test over what went over the wire, decoded
 * with the specification's own protobuf schema.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connect, type MqttClient } from "mqtt";
import { pino } from "pino";
import { SparkplugNode } from "../../../src/publish/sparkplug/sparkplug.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { MosquittoBroker } from "../../helpers/mosquitto.js";
import { MqttTap } from "../../helpers/mqtt-tap.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";
import { DATATYPES, decodeSpec, encodeSpec, metricValue, type SpecMetric } from "./spec-payload.js";
import { REQUIREMENTS, tckTable } from "./tck-requirements.js";
import { type HostMessage, Run, type Walk } from "./tck-walk.js";
import { SPARKPLUG_DOC, withTckTable } from "./write-tck-table.js";

const silent = pino({ level: "silent" });
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A host application: MQTT 5 with retain-as-published, so it sees a will's retain flag as the node set it. */
async function startHost(url: string, group: string, into: HostMessage[]): Promise<MqttClient> {
  const client = connect(url, { protocolVersion: 5, clean: true, reconnectPeriod: 100 });
  client.on("message", (topic, payload, packet) => {
    into.push({ topic, qos: packet.qos, retain: packet.retain, payload });
  });
  await new Promise<void>((resolve) => client.once("connect", () => resolve()));
  await client.subscribeAsync(`spBv1.0/${group}/#`, { qos: 1, rap: true });
  return client;
}

/** The host's decoded messages of one verb (and device) with a metric matching `where`, in arrival order. */
function seen(run: Run, verb: string, device?: string, where?: (m: SpecMetric) => boolean) {
  return run.received.filter((m) => {
    const [, , v, , d] = m.topic.split("/");
    if (v !== verb || (device !== undefined && d !== device)) return false;
    return where === undefined || (decodeSpec(m.payload).metrics ?? []).some(where);
  });
}

async function command(host: MqttClient, topic: string, metric: SpecMetric): Promise<void> {
  await host.publishAsync(topic, encodeSpec({ timestamp: Date.now(), metrics: [metric] }), { qos: 1 });
}

async function nodeFor(run: Run, url: string, control: TestLineControl, extra: Record<string, unknown> = {}) {
  const dir = await tempDir("stpmd-sparkplug-tck-");
  const config = testConfig({
    mqtt: { url, client_id: `publisher-${run.group}` },
    sparkplug: {
      enabled: true,
      group_id: run.group,
      edge_node_id: run.node,
      bdseq_file: path.join(dir, "bdseq"),
      history: { dir: path.join(dir, "history") },
      report_interval_ms: 100,
      reconnect_period_ms: 100,
      ...extra,
    },
  });
  const node = new SparkplugNode({ sparkplug: config.sparkplug, mqtt: config.mqtt }, control, silent);
  control.interfaces.splice(0, control.interfaces.length, node);
  return node;
}

/** No primary host: births, data, commands, a rebirth, more than 256 messages, a cut, a removed camera, a stop. */
async function sessionScenario(broker: MosquittoBroker): Promise<Run> {
  const tap = await MqttTap.start(broker.port);
  const cameras = ["cam1", "cam2", "cam3", "cam4"];
  const run = new Run(tap, "tck", "edge", cameras);
  const control = new TestLineControl(cameras, 0.5);
  const mqtt = { name: "mqtt", ok: false, detail: "connect ECONNREFUSED", durable: true, failed_batches: 0 };
  control.sinks = [mqtt];
  const host = await startHost(broker.url, run.group, run.received);
  const node = await nodeFor(run, tap.url, control);
  const cmd = (verb: string, device?: string): string =>
    `spBv1.0/${run.group}/${verb}/${run.node}${device === undefined ? "" : `/${device}`}`;
  try {
    await node.start();
    await waitFor("DBIRTH cam4", () => seen(run, "DBIRTH", "cam4")[0]);
    control.emit("cam1", 0.9);
    for (let i = 0; i < 20; i++) control.emit("cam2", 0.1);
    mqtt.ok = true; // the publisher's session comes up: NDATA Connection/MQTT true
    await waitFor(
      "NDATA Connection/MQTT",
      () => seen(run, "NDATA", undefined, (m) => m.name === "Connection/MQTT" && m.booleanValue === true)[0],
    );
    await command(host, cmd("DCMD", "cam1"), {
      name: "Threshold",
      datatype: DATATYPES.Double,
      doubleValue: 0.8,
    });
    await waitFor("Threshold echo", () => seen(run, "DDATA", "cam1", (m) => m.name === "Threshold")[0]);
    await command(host, cmd("DCMD", "cam3"), {
      name: "Enabled",
      datatype: DATATYPES.Boolean,
      booleanValue: false,
    });
    await waitFor("Enabled false", () => seen(run, "DDATA", "cam3", (m) => m.name === "Enabled")[0]);

    run.mark("rebirth");
    await command(host, cmd("NCMD"), {
      name: "Node Control/Rebirth",
      datatype: DATATYPES.Boolean,
      booleanValue: true,
    });
    await waitFor("the rebirth's DBIRTH cam4", () => seen(run, "DBIRTH", "cam4")[1]);

    for (let i = 0; i < 300; i++) control.emit("cam2", 0.95); // a DDATA each: seq wraps past 255
    for (let i = 0; i < 5; i++) control.emit("cam1", 0.1);
    const inspected = control.snapshot().inspected;
    await waitFor(
      "the counters' report",
      () => seen(run, "NDATA", undefined, (m) => m.name === "Inspected" && metricValue(m) === inspected)[0],
    );
    await pause(300); // three report intervals: nothing left to report
    run.mark("settled", control.snapshot());

    tap.cut(); // no DISCONNECT: the broker publishes the will
    await waitFor("the will", () => seen(run, "NDEATH")[0]);
    await waitFor("births after the reconnect", () => seen(run, "DBIRTH", "cam4")[2]);

    run.mark("removed");
    control.removeCamera("cam4"); // a reload without it: the node loses the device
    await waitFor("DDEATH cam4", () => seen(run, "DDEATH", "cam4")[0]);

    run.mark("stop");
    await node.stop();
    await waitFor("the stop's NDEATH", () => seen(run, "NDEATH")[1]);
    await pause(100);
  } finally {
    await node.stop();
    await host.endAsync();
    await tap.shutdown();
  }
  return run.finish();
}

/** With a primary host: another host's STATE, offline, a stale online, online, a stale offline, offline, online. */
async function primaryScenario(broker: MosquittoBroker, hostId: string): Promise<Run> {
  const tap = await MqttTap.start(broker.port);
  const run = new Run(tap, "tckp", "edge", ["cam1", "cam2"]);
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  const host = await startHost(broker.url, run.group, run.received);
  const state = async (id: string, online: boolean, timestamp: number): Promise<void> => {
    await host.publishAsync(`spBv1.0/STATE/${id}`, JSON.stringify({ online, timestamp }), {
      qos: 1,
      retain: true,
    });
  };
  const node = await nodeFor(run, tap.url, control, { primary_host_id: hostId });
  const t0 = Date.now();
  try {
    run.mark("other-online");
    await state(`${hostId}-other`, true, t0);
    await node.start();
    await waitFor("the node's SUBSCRIBE", () => tap.packets("up").find((e) => e.packet.cmd === "subscribe"));
    await pause(300);
    await state(hostId, false, t0);
    await pause(300);
    await state(hostId, true, t0 - 5000); // older than the offline one: not valid
    await pause(300);
    assert.deepEqual(seen(run, "NBIRTH"), [], "no births yet");

    run.mark("fresh-online");
    await state(hostId, true, t0 + 1);
    await waitFor("births", () => seen(run, "DBIRTH", "cam2")[0]);

    run.mark("stale-offline");
    await state(hostId, false, t0 - 10_000);
    await pause(400);

    run.mark("offline");
    await state(hostId, false, t0 + 2);
    await waitFor("NDEATH", () => seen(run, "NDEATH")[0]);
    await waitFor(
      "the reconnect's SUBSCRIBE",
      () => tap.packets("up").filter((e) => e.packet.cmd === "subscribe")[1],
    );
    await pause(300);

    run.mark("back-online");
    await state(hostId, true, t0 + 3);
    await waitFor("births again", () => seen(run, "DBIRTH", "cam2")[1]);
    run.mark("stop");
  } finally {
    await node.stop();
    for (const id of [hostId, `${hostId}-other`]) {
      await host.publishAsync(`spBv1.0/STATE/${id}`, "", { qos: 1, retain: true }); // clears the retained STATE
    }
    await host.endAsync();
    await tap.shutdown();
  }
  return run.finish();
}

describe("Sparkplug 3.0 edge-node requirements (tck-id-…), walked against the node and mosquitto", () => {
  let broker: MosquittoBroker;
  let walk: Walk;
  before(async () => {
    broker = await MosquittoBroker.start();
    const primaryHostId = "scada-tck";
    walk = {
      session: await sessionScenario(broker),
      primary: await primaryScenario(broker, primaryHostId),
      primaryHostId,
    };
  });
  after(async () => {
    await broker?.close();
  });

  for (const requirement of REQUIREMENTS) {
    const label = requirement.na === undefined ? requirement.id : `${requirement.id} (n/a: premise checked)`;
    test(label, () => requirement.check(walk));
  }
});

test("the list has each requirement once, with its words and its check", () => {
  const ids = REQUIREMENTS.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length, "duplicate ids");
  for (const r of REQUIREMENTS) {
    assert.match(r.id, /^tck-id-[a-z0-9-]+$/);
    assert.ok(r.requires.length > 10 && r.how.length > 10, r.id);
  }
  // the TCK's edge-node tests (tck/src/main/java/org/eclipse/sparkplug/tck/test/edge, commit e45b610) cite 164
  assert.equal(ids.length, 164);
});

test("docs/line-integration/sparkplug.md has the current requirement table (run write-tck-table.js after an edit)", () => {
  const committed = readFileSync(SPARKPLUG_DOC, "utf8");
  assert.equal(
    committed,
    withTckTable(committed),
    "stale: `npx tsc -p . && node dist/test/publish/sparkplug/write-tck-table.js`",
  );
  const edited = REQUIREMENTS.map((r, i) => (i === 0 ? { ...r, requires: "changed" } : r));
  assert.notEqual(
    withTckTable(committed, tckTable(edited)),
    committed,
    "an edit to the list changes the page",
  );
});
