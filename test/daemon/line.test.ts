import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import mqtt from "mqtt";
import { get as sparkplugNamespace } from "sparkplug-payload";
import type { UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { Plc } from "../helpers/opcua.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");
const sparkplug = sparkplugNamespace("spBv1.0")!;

/** The value of one metric in a decoded Sparkplug payload. */
function metric(payload: UPayload, name: string): unknown {
  const m = payload.metrics?.find((x) => x.name === name);
  const v = m?.value as unknown;
  return typeof v === "object" && v !== null && "toNumber" in v
    ? (v as { toNumber(): number }).toNumber()
    : v;
}

/** Sum of a Prometheus counter's samples for one camera in the exposition text. */
function counterOf(text: string, name: string, camera: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`camera="${camera}"`));
  return line === undefined ? undefined : Number(line.split(" ").pop());
}

test("the line's interfaces drive the real daemon: an MQTT command and a Sparkplug DCMD change its verdicts through one control path, /metrics counts what it inspected", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-line-");
  const broker = await MosquittoBroker.start();
  const httpPort = await freeLoopbackPort();
  const results: InspectionResult[] = [];
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam", source: replaySource(noise, 20), threshold: { value: 1e-9 } }],
    mqtt: {
      url: broker.url,
      client_id: "line-e2e",
      prefix: "line",
      snapshot: "none",
      status_interval_s: 1,
      commands: { enabled: true },
      outbox: { dir: path.join(work, "outbox") },
    },
    http: { enabled: true, port: httpPort },
    sparkplug: {
      enabled: true,
      group_id: "plant",
      edge_node_id: "line7",
      bdseq_file: path.join(work, "bdseq"),
      history: { dir: path.join(work, "history") },
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  const client = mqtt.connect(broker.url, { clientId: "line-e2e-operator" });
  await new Promise<void>((resolve) => client.on("connect", () => resolve()));
  const responses: {
    topic: string;
    body: { transaction?: string; status: string; data?: unknown; error?: string };
  }[] = [];
  const births: UPayload[] = [];
  const ddata: UPayload[] = [];
  const nodeBirths: UPayload[] = [];
  client.on("message", (topic, payload) => {
    if (topic === "spBv1.0/plant/NBIRTH/line7") nodeBirths.push(sparkplug.decodePayload(payload));
    if (topic.startsWith("line/command/")) responses.push({ topic, body: JSON.parse(payload.toString()) });
    else if (topic === "spBv1.0/plant/DBIRTH/line7/cam") births.push(sparkplug.decodePayload(payload));
    else if (topic === "spBv1.0/plant/DDATA/line7/cam") ddata.push(sparkplug.decodePayload(payload));
  });
  await client.subscribeAsync(["line/command/+/response", "spBv1.0/plant/#"], { qos: 1 });
  let daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
  try {
    await daemon.start();
    await waitFor(
      "frames judged defective at the configured threshold",
      () => results.filter((r) => r.verdict === "defect").length >= 3,
      30_000,
    );
    await waitFor("the camera's DBIRTH", () => births.length > 0, 15_000);
    assert.equal(metric(births[0]!, "Threshold"), 1e-9, "DBIRTH carries the threshold in force");

    // MQTT command: set_threshold → an ok response with the transaction, and the next verdicts use it
    client.publish(
      "line/command/set_threshold",
      JSON.stringify({ transaction: "t1", camera: "cam", threshold: { value: 1e9 } }),
    );
    const ok = await waitFor("set_threshold response", () =>
      responses.find((r) => r.body.transaction === "t1"),
    );
    assert.equal(ok.body.status, "ok", JSON.stringify(ok.body));
    let mark = results.length;
    await waitFor(
      "verdicts at 1e9",
      () => results.slice(mark).filter((r) => r.threshold === 1e9).length >= 3,
      15_000,
    );
    assert.ok(
      results
        .slice(mark)
        .filter((r) => r.threshold === 1e9)
        .every((r) => r.verdict === "ok"),
    );
    assert.equal(daemon.snapshot().cameras[0]!.threshold, 1e9);

    // a bad request changes nothing and gets an error naming the problem
    client.publish(
      "line/command/set_threshold",
      JSON.stringify({ transaction: "t2", camera: "nope", threshold: { value: 1 } }),
    );
    const refused = await waitFor("error response", () => responses.find((r) => r.body.transaction === "t2"));
    assert.equal(refused.body.status, "error");
    assert.match(refused.body.error ?? "", /unknown camera "nope"/);
    assert.equal(daemon.snapshot().cameras[0]!.threshold, 1e9);

    // Sparkplug DCMD Threshold goes down the same path: echoed in DDATA, applied to the next verdicts
    const dcmd = sparkplug.encodePayload({
      timestamp: Date.now(),
      metrics: [{ name: "Threshold", type: "Double", value: 1e-9 }],
    });
    client.publish("spBv1.0/plant/DCMD/line7/cam", Buffer.from(dcmd));
    await waitFor(
      "DDATA echo of the threshold",
      () => ddata.some((p) => metric(p, "Threshold") === 1e-9),
      15_000,
    );
    mark = results.length;
    await waitFor(
      "defective again at 1e-9",
      () => results.slice(mark).filter((r) => r.verdict === "defect" && r.threshold === 1e-9).length >= 2,
      15_000,
    );

    // /metrics counts exactly what was inspected: stop the camera over MQTT, then compare
    client.publish(
      "line/command/enable_camera",
      JSON.stringify({ transaction: "t3", camera: "cam", enabled: false }),
    );
    const disabled = await waitFor("enable_camera response", () =>
      responses.find((r) => r.body.transaction === "t3"),
    );
    assert.equal(disabled.body.status, "ok", JSON.stringify(disabled.body));
    await new Promise((r) => setTimeout(r, 1000)); // the last queued frames drain
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    assert.equal(counterOf(text, "stpmd_camera_inspected_total", "cam"), results.length);
    assert.equal(
      counterOf(text, "stpmd_camera_defects_total", "cam"),
      results.filter((r) => r.verdict === "defect").length,
    );
    assert.equal((await fetch(`http://127.0.0.1:${httpPort}/healthz`)).status, 200);
    assert.equal(
      (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status,
      503,
      "no camera streams any more",
    );

    // a daemon restart: the Sparkplug node's next session is born with a higher bdSeq (persisted in bdseq_file)
    const firstBdSeq = metric(nodeBirths.at(-1)!, "bdSeq") as number;
    const birthsBefore = nodeBirths.length;
    await daemon.stop();
    daemon = new Daemon(config, logger);
    await daemon.start();
    await waitFor("NBIRTH after the restart", () => nodeBirths.length > birthsBefore, 15_000);
    assert.ok(
      (metric(nodeBirths.at(-1)!, "bdSeq") as number) > firstBdSeq,
      `bdSeq ${metric(nodeBirths.at(-1)!, "bdSeq")} after ${firstBdSeq}`,
    );
  } finally {
    await daemon.stop();
    client.end(true);
    await broker.stop();
  }
});

test("a PLC over OPC UA triggers the real daemon: the result it reads carries its part id, as does the MQTT result", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-line-opcua-");
  const broker = await MosquittoBroker.start();
  const port = await freeLoopbackPort();
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 1, max_wait_ms: 0, queue_size: 8 },
    cameras: [{ id: "cam", source: replaySource(noise, 10) }],
    mqtt: {
      url: broker.url,
      client_id: "line-opcua",
      prefix: "plc",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    opcua: {
      enabled: true,
      port,
      bind: "127.0.0.1",
      hostname: "localhost",
      allow_anonymous: true,
      security: { policies: ["None"], modes: ["None"] },
      pki_dir: path.join(work, "pki"),
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  const sub = mqtt.connect(broker.url, { clientId: "line-opcua-sub" });
  await new Promise<void>((resolve) => sub.on("connect", () => resolve()));
  const partIds: string[] = [];
  sub.on("message", (_topic, payload) => {
    const r = JSON.parse(payload.toString()) as { part_id?: string };
    if (r.part_id) partIds.push(r.part_id);
  });
  await sub.subscribeAsync("plc/cam/result", { qos: 1 });
  const daemon = new Daemon(config, logger);
  let plc: Plc | undefined;
  try {
    await daemon.start();
    plc = await Plc.connect({ dir: work, endpoint: `opc.tcp://localhost:${port}` }, { anonymous: true });
    for (const part of ["P-1", "P-2", "P-3"]) {
      const status = await plc.trigger("cam", part);
      assert.equal(status.name, "Good", `trigger ${part}: ${status.toString()}`);
      const result = await plc.takeResult("cam", 0, 15_000);
      assert.equal(result.partId, part);
      assert.equal(result.error, false);
      assert.ok(result.score > 0 && result.ok !== result.ng);
    }
    await waitFor("part ids on the MQTT results", () => (partIds.length >= 3 ? partIds : undefined));
    assert.deepEqual(partIds, ["P-1", "P-2", "P-3"]);
  } finally {
    await plc?.close();
    await daemon.stop();
    sub.end(true);
    await broker.stop();
  }
});
