import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import mqtt from "mqtt";
import { get as sparkplugNamespace } from "sparkplug-payload";
import { createLogger } from "../../src/core/log.js";
import { DurableQueue } from "../../src/publish/durable-queue.js";
import { testConfig } from "../helpers/config.js";
import {
  DaemonProcess,
  noiseFrames,
  replaySource,
  sleep,
  trainTinyBundle,
  waitFor,
} from "../helpers/daemon-process.js";
import { MosquittoBroker } from "../helpers/mosquitto.js";
import { tempDir } from "../helpers/tiny-data.js";

/**
 * A defect inspected during shutdown must reach Sparkplug as it reaches MQTT: the Sparkplug node stays born until
 * the frames queued at SIGTERM were inspected (or keeps the defect in its history for the next start). The frame
 * queue is made to hold frames at the SIGTERM: batches of up to 16 frames that wait up to 1 s to fill, from a
 * 10 fps camera of noise frames (each one a defect).
 */

const SIZE = 64;
const codec = sparkplugNamespace("spBv1.0")!;

let work: string;
let broker: MosquittoBroker;

before(async () => {
  work = await tempDir("stpmd-sparkplug-stop-");
  await trainTinyBundle(work, path.join(work, "model"), 1, SIZE);
  await noiseFrames(path.join(work, "noise"), 6, SIZE);
  broker = await MosquittoBroker.start();
});

after(async () => {
  await broker.close();
});

test("SIGTERM with frames queued: every defect on MQTT also reaches Sparkplug (sent, or held for replay)", async (t) => {
  const history = path.join(work, "history");
  const config = {
    model: { bundle: path.join(work, "model"), watch: false },
    inference: { max_batch: 16, max_wait_ms: 1000, queue_size: 32 },
    cameras: [{ id: "noise", source: replaySource(path.join(work, "noise"), 10) }],
    mqtt: {
      url: broker.url,
      client_id: "stpmd-spstop",
      prefix: "spstop",
      snapshot: "none",
      outbox: { dir: path.join(work, "outbox") },
    },
    sparkplug: {
      enabled: true,
      group_id: "spstop",
      edge_node_id: "node",
      bdseq_file: path.join(work, "bdseq"),
      history: { dir: history },
    },
    log: { level: "info" },
    health: { watchdog: false },
  };
  const file = path.join(work, "stpmd.json");
  await writeFile(file, JSON.stringify(config, null, 2));

  // the defect events on MQTT, with when they arrived, and the defects Sparkplug sent as DDATA
  const onMqtt = new Map<string, number>();
  const onSparkplug = new Set<string>();
  const verbs: string[] = [];
  const client = await mqtt.connectAsync(broker.url, { clientId: "spstop-observer" });
  client.on("message", (topic, payload) => {
    if (topic.startsWith("spstop/") && topic.endsWith("/defect")) {
      onMqtt.set(String((JSON.parse(payload.toString()) as { event_id: string }).event_id), Date.now());
      return;
    }
    const verb = topic.split("/")[2] ?? "";
    verbs.push(verb);
    if (verb !== "DDATA") return;
    const metrics = codec.decodePayload(payload).metrics ?? [];
    const value = (name: string) => metrics.find((m) => m.name === name)?.value;
    if (value("Last/Defective") === true) onSparkplug.add(String(value("Last/Event Id")));
  });
  await client.subscribeAsync(["spstop/+/defect", "spBv1.0/spstop/#"], { qos: 1 });

  const daemon = new DaemonProcess(file);
  try {
    await waitFor("a defect on Sparkplug", () => onSparkplug.size > 0, 30_000);
    // SIGTERM 0.6 s after a batch was delivered: about 6 frames wait for the next one
    const delivered = onSparkplug.size;
    await waitFor("the next batch", () => onSparkplug.size > delivered, 5_000);
    await sleep(600);
    const stopAt = Date.now();
    daemon.child.kill("SIGTERM");
    assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.output);
    await sleep(500); // the last QoS 1 deliveries to the observer

    // what the node kept on disk for its next session counts as not lost
    const held = await DurableQueue.open(
      testConfig({ sparkplug: { history: { dir: history } } }).sparkplug.history,
      createLogger("silent"),
    );
    for (let entry = await held.peek(); entry !== undefined; entry = await held.peek()) {
      if (entry.eventId !== undefined) onSparkplug.add(entry.eventId);
      await held.ack(entry.seq);
    }
    await held.close();

    const duringStop = [...onMqtt].filter(([, at]) => at >= stopAt).map(([id]) => id);
    assert.ok(duringStop.length >= 3, `only ${duringStop.length} defects inspected during the stop`);
    t.diagnostic(`${onMqtt.size} defects on MQTT, ${duringStop.length} of them after the SIGTERM`);
    const missing = [...onMqtt.keys()].filter((id) => !onSparkplug.has(id));
    assert.deepEqual(
      missing,
      [],
      `${missing.length} of ${onMqtt.size} defects on MQTT never reached Sparkplug (${duringStop.length} ` +
        `inspected during the stop); Sparkplug messages: ${verbs.join(" ")}`,
    );
    assert.equal(verbs.at(-1), "NDEATH", "NDEATH is the node's last message");
  } finally {
    await daemon.kill();
    await client.endAsync(true);
  }
});
