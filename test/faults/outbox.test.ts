// Fault injection for the defect-event outbox: a real Publisher, a real mosquitto behind a gate that keeps it
// unreachable while events are produced, real (tiny or vanishing) filesystems. Each case counts the event ids
// produced against those received and the counters: every event is received or counted, and nothing twice.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { connectAsync, type MqttClient } from "mqtt";
import type { InspectionResult } from "../../src/core/result.js";
import { Publisher } from "../../src/publish/mqtt/publisher.js";
import type { DefectPayload, StatusPayload } from "../../src/publish/topics.js";
import { mqttConfig } from "../helpers/config.js";
import { capturingLogger, type LogLine } from "../helpers/logs.js";
import { MosquittoBroker, TcpGate } from "../helpers/mosquitto.js";
import { waitFor } from "../helpers/wait.js";

const run = promisify(execFile);
const WIDTH = 160;
const HEIGHT = 120;
const BASE_TS = Date.UTC(2026, 1, 3, 4, 5, 6);

/** A defective frame of noise, so its JPEG snapshot is tens of KiB and a small filesystem fills in a few events. */
function inspection(seq: number): InspectionResult {
  const rgb = new Uint8Array(WIDTH * HEIGHT * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (Math.imul(i + 1, 2654435761 + seq * 97) >>> 24) & 0xff;
  const map = new Float32Array(WIDTH * HEIGHT).fill(0.1);
  for (let y = 40; y < 60; y++) map.fill(3, y * WIDTH + 60, y * WIDTH + 90);
  const captureTs = BASE_TS + seq * 40;
  return {
    frame: { cameraId: "cam0", seq, captureTs, width: WIDTH, height: HEIGHT, rgb },
    score: 3,
    threshold: 1,
    verdict: "defect",
    regions: [{ bbox: [60, 40, 30, 20], area: 600, peak: 3, centroid: [75, 50] }],
    map,
    modelVersion: "fault-1",
    inferredTs: captureTs + 20,
  };
}

const until = (condition: () => boolean, what: string) => waitFor(what, condition);

class Subscriber {
  readonly defects: DefectPayload[] = [];
  readonly snapshots: Buffer[] = [];
  readonly statuses: StatusPayload[] = [];
  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      if (topic.endsWith("/defect")) this.defects.push(JSON.parse(payload.toString("utf8")) as DefectPayload);
      else if (topic.endsWith("/snapshot")) this.snapshots.push(payload);
      else if (topic.endsWith("/status"))
        this.statuses.push(JSON.parse(payload.toString("utf8")) as StatusPayload);
    });
  }

  static async connect(url: string): Promise<Subscriber> {
    const client = await connectAsync(url, { reconnectPeriod: 0 });
    await client.subscribeAsync("stpmd/#", { qos: 1 });
    return new Subscriber(client);
  }

  /** Distinct events received whose snapshot travels on the snapshot topic. */
  withSnapshot(): number {
    return new Set(this.defects.filter((d) => d.snapshot === "topic").map((d) => d.event_id)).size;
  }

  /** Distinct event ids received (QoS 1 may deliver one twice). */
  eventIds(): Set<string> {
    return new Set(this.defects.map((d) => d.event_id));
  }
}

describe("outbox faults with a real publisher and mosquitto", () => {
  let root: string;
  let broker: MosquittoBroker;

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "stpmd-outbox-faults-"));
    broker = await MosquittoBroker.start();
  });
  after(async () => {
    await broker.close();
    await rm(root, { recursive: true, force: true });
  });

  /**
   * Produces `count` defect events (with snapshots) while the broker is unreachable, waits until each is queued,
   * refused or lost, runs `midway` after the first `midwayAt`, then lets the publisher reach the broker and waits
   * until the outbox is empty.
   */
  async function produceOffline(
    outbox: { dir: string; max_messages: number; max_bytes: number },
    count: number,
    midway?: { at: number; action: () => Promise<void> },
  ): Promise<{ publisher: Publisher; subscriber: Subscriber; produced: string[]; lines: LogLine[] }> {
    // a fresh broker per case, so no retained snapshot of an earlier case is counted
    await broker.restart();
    const gate = await TcpGate.start(broker.port);
    gate.close();
    const { logger, lines } = capturingLogger();
    const publisher = new Publisher(
      mqttConfig({
        url: gate.url,
        client_id: `stpmd-fault-${process.pid}-${path.basename(outbox.dir)}`,
        snapshot_quality: 95,
        outbox,
        reconnect_period_ms: 100,
      }),
      logger,
      { maxConcurrentSnapshots: 4, stopTimeoutMs: 2000 },
    );
    await publisher.start();
    const produced: string[] = [];
    for (let seq = 0; seq < count; seq++) {
      if (midway !== undefined && seq === midway.at) {
        await until(() => publisher.stats().eventsPending === 0, `${seq} events settled before the fault`);
        await midway.action();
      }
      publisher.publishResult(inspection(seq));
      produced.push(`cam0-${BASE_TS + seq * 40}-${seq}`);
      // a frame every few ms, like a camera: the pending-defect bound is not what this test is about
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await until(() => publisher.stats().eventsPending === 0, `${count} events queued, refused or lost`);
    const subscriber = await Subscriber.connect(broker.url);
    gate.open();
    // an entry leaves the outbox once the broker acknowledged all its messages (delivered is counted by then)
    await until(() => publisher.stats().outboxQueued === 0, "the outbox to drain");
    await until(() => subscriber.statuses.some((s) => s.state === "online"), "an online status");
    // the broker acknowledges a snapshot before the subscriber necessarily has it
    await until(
      () => new Set(subscriber.snapshots.map((s) => s.toString("base64"))).size >= subscriber.withSnapshot(),
      "every delivered event's snapshot at the subscriber",
    );
    await publisher.stop();
    await subscriber.client.endAsync();
    await gate.shutdown();
    return { publisher, subscriber, produced, lines };
  }

  /** Every produced event is received or counted, exactly, and each received event came with its snapshot. */
  function assertAccounted(result: Awaited<ReturnType<typeof produceOffline>>): {
    received: number;
    overflowed: number;
    lost: number;
  } {
    const { publisher, subscriber, produced, lines } = result;
    const stats = publisher.stats();
    const received = subscriber.eventIds();
    for (const id of received) assert.ok(produced.includes(id), `unexpected event ${id}`);
    assert.equal(received.size, stats.eventsDelivered, "received = delivered");
    assert.equal(
      received.size + stats.eventsOverflowed + stats.eventsLost,
      produced.length,
      `produced ${produced.length} = received ${received.size} + overflowed ${stats.eventsOverflowed} + lost ${stats.eventsLost}`,
    );
    // never half a pair: a snapshot for every received event, none without one
    // (an event the saturated renderer sent without a picture says so: snapshot "none")
    assert.equal(
      new Set(subscriber.snapshots.map((s) => s.toString("base64"))).size,
      subscriber.withSnapshot(),
    );
    assert.ok(subscriber.withSnapshot() > 0);
    // one log line per lost event, naming it
    const lostLines = lines.filter((line) => / lost: /.test(line.msg) && typeof line.event_id === "string");
    const lostViaDirectory = lines
      .filter((line) => Array.isArray(line.lost_events))
      .flatMap((line) => line.lost_events as string[]);
    assert.equal(lostLines.length + lostViaDirectory.length, stats.eventsLost, "a line per lost event");
    // the status published on reconnecting (before the drain) carries the same counters, in events, and what
    // was then still queued was delivered afterwards
    const online = subscriber.statuses.filter((s) => s.state === "online").at(-1)!;
    assert.deepEqual(
      { overflowed: online.outbox.overflowed, lost: online.outbox.lost },
      { overflowed: stats.eventsOverflowed, lost: stats.eventsLost },
    );
    assert.ok(online.outbox.queued <= received.size, `status queued ${online.outbox.queued}`);
    return { received: received.size, overflowed: stats.eventsOverflowed, lost: stats.eventsLost };
  }

  test("a full filesystem (256 KiB tmpfs): every event is delivered or counted in lost, never half-stored", async (t) => {
    const mountPoint = path.join(root, "tiny");
    await mkdir(mountPoint);
    try {
      await run("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", mountPoint]);
    } catch (err) {
      t.skip(
        `cannot mount a tmpfs here (${(err as Error).message.split("\n")[0]}); the size-limited case still runs`,
      );
      return;
    }
    try {
      const result = await produceOffline(
        { dir: path.join(mountPoint, "outbox"), max_messages: 10_000, max_bytes: 512 * 1024 * 1024 },
        60,
      );
      const counts = assertAccounted(result);
      t.diagnostic(`tmpfs 256 KiB, 60 events: ${JSON.stringify(counts)}`);
      assert.ok(counts.lost > 0, "the filesystem filled up");
      assert.ok(counts.received > 0, "what fitted was delivered");
      assert.equal(counts.overflowed, 0);
      assert.ok(result.lines.some((line) => /exceeds the space this outbox can grow to/.test(line.msg)));
      assert.ok(result.lines.some((line) => line.errno === "ENOSPC"));
    } finally {
      await run("umount", [mountPoint]).catch(() => undefined);
    }
  });

  test("a size-limited outbox: every event is delivered or counted in overflowed", async (t) => {
    const result = await produceOffline(
      { dir: path.join(root, "limited"), max_messages: 10_000, max_bytes: 256 * 1024 },
      60,
    );
    const counts = assertAccounted(result);
    t.diagnostic(`max_bytes 256 KiB, 60 events: ${JSON.stringify(counts)}`);
    assert.ok(counts.overflowed > 0, "the bound was reached");
    assert.equal(counts.lost, 0);
  });

  test("the outbox directory deleted while running: it is recreated and the later events are delivered", async (t) => {
    const dir = path.join(root, "deleted");
    const result = await produceOffline({ dir, max_messages: 10_000, max_bytes: 64 * 1024 * 1024 }, 20, {
      at: 10,
      action: () => rm(dir, { recursive: true }),
    });
    const counts = assertAccounted(result);
    t.diagnostic(`directory deleted after 10 of 20 events: ${JSON.stringify(counts)}`);
    const received = result.subscriber.eventIds();
    for (const id of result.produced.slice(10))
      assert.ok(received.has(id), `${id}, produced after the deletion`);
    // the ten deleted with the directory are lost, except one the drain may already hold in memory
    assert.ok(counts.lost >= 9 && counts.lost <= 10, `lost ${counts.lost}`);
    assert.equal(counts.overflowed, 0);
  });
});
