import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt, { type MqttClient } from "mqtt";
import {
  DaemonProcess,
  noiseFrames,
  replaySource,
  trainTinyBundle,
  waitFor,
} from "../helpers/daemon-process.js";
import { MosquittoBroker } from "../helpers/mosquitto.js";
import { tempDir } from "../helpers/tiny-data.js";

/**
 * A camera's capture process killed mid-stream (what a native crash of the GStreamer binding now does): the real
 * daemon process with three replay cameras of noise frames, which the tiny bundle finds defective, so each frame is
 * one defect event; a real mosquitto; a subscriber. The killed camera restarts in a new process; the others go on
 * untouched.
 */

const SIZE = 64;
const FPS = 10;
/** Noise frames per replay: every camera shows them in a loop, so a frame's score names the file it shows. */
const FILES = 6;
const CAMERAS = ["a", "b", "c"];
const VICTIM = "b";

let work: string;
let bundle: string;
let noise: string;

before(async () => {
  work = await tempDir("stpmd-capture-faults-");
  bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1, SIZE);
  noise = path.join(work, "noise");
  await noiseFrames(noise, FILES, SIZE);
});

interface Event {
  seq: number;
  score: number;
  captureTs: number;
}

/** Every defect event per camera, by seq. */
class Observer {
  readonly events = new Map<string, Map<number, Event>>();
  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      if (!topic.endsWith("/defect")) return;
      const body = JSON.parse(payload.toString()) as {
        camera: string;
        seq: number;
        score: number;
        capture_ts: string;
      };
      const byCamera = this.events.get(body.camera) ?? new Map<number, Event>();
      byCamera.set(body.seq, { seq: body.seq, score: body.score, captureTs: Date.parse(body.capture_ts) });
      this.events.set(body.camera, byCamera);
    });
  }

  static async connect(url: string, prefix: string): Promise<Observer> {
    const client = await mqtt.connectAsync(url, { clientId: `obs-${prefix}` });
    const observer = new Observer(client);
    await client.subscribeAsync(`${prefix}/#`, { qos: 1 });
    return observer;
  }

  /** A camera's events in seq order. */
  of(camera: string): Event[] {
    return [...(this.events.get(camera)?.values() ?? [])].sort((x, y) => x.seq - y.seq);
  }
}

/** Seqs missing between the first and the last one. */
function gaps(events: readonly Event[]): number[] {
  const missing: number[] = [];
  for (let i = 1; i < events.length; i++) {
    for (let s = events[i - 1]!.seq + 1; s < events[i]!.seq; s++) missing.push(s);
  }
  return missing;
}

/** The daemon's capture processes, by camera id (from the spec each is started with). */
async function captureProcesses(daemonPid: number): Promise<Map<string, number>> {
  const byCamera = new Map<string, number>();
  for (const task of await readdir(`/proc/${daemonPid}/task`)) {
    const list = await readFile(`/proc/${daemonPid}/task/${task}/children`, "utf8").catch(() => "");
    for (const pid of list.split(" ").filter(Boolean).map(Number)) {
      const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
      if (!argv[1]?.endsWith("capture-process.js")) continue;
      const { spec } = JSON.parse(argv[2] ?? "{}") as { spec?: { id?: string } };
      if (spec?.id !== undefined) byCamera.set(spec.id, pid);
    }
  }
  return byCamera;
}

describe("Faults: a camera's capture process dies", () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  test("SIGKILL of one capture process: that camera restarts, the others miss no frame, no event is lost", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const observer = await Observer.connect(broker.url, "kill");
    cleanups.push(() => observer.client.endAsync(true));
    const config = {
      model: { bundle, watch: false },
      inference: { max_batch: 1, max_wait_ms: 5 },
      cameras: CAMERAS.map((id) => ({
        id,
        source: replaySource(noise, FPS),
        restart_backoff: { initial_ms: 200, max_ms: 200, factor: 1 },
      })),
      mqtt: {
        url: broker.url,
        client_id: "stpmd-kill",
        prefix: "kill",
        status_interval_s: 1,
        snapshot: "none",
        outbox: { dir: path.join(work, "outbox") },
      },
      log: { level: "info" },
      health: { watchdog: false },
    };
    const configFile = path.join(work, "kill.json");
    await writeFile(configFile, JSON.stringify(config, null, 2));
    const daemon = new DaemonProcess(configFile);
    cleanups.push(() => daemon.kill());

    await waitFor(
      "events from every camera",
      () => CAMERAS.every((id) => observer.of(id).length >= 2 * FILES),
      60_000,
    );
    const before = await captureProcesses(daemon.pid);
    assert.deepEqual([...before.keys()].sort(), CAMERAS, "one capture process per camera");
    const victimPid = before.get(VICTIM)!;
    // GStreamer is loaded by the capture processes only
    assert.match(await readFile(`/proc/${victimPid}/maps`, "utf8"), /libgstreamer-1\.0/);
    assert.doesNotMatch(await readFile(`/proc/${daemon.pid}/maps`, "utf8"), /libgstreamer-1\.0/);
    const seqAtKill = new Map(CAMERAS.map((id) => [id, observer.of(id).at(-1)!.seq]));
    process.kill(victimPid, "SIGKILL");
    const killedAt = Date.now();

    await waitFor("the killed camera's restart", () =>
      daemon.logs().some((l) => l.camera === VICTIM && l.kind === "process_exited"),
    );
    const line = daemon.logs().find((l) => l.camera === VICTIM && l.kind === "process_exited")!;
    assert.match(String(line.msg), new RegExp(`capture process ${victimPid} ended \\(SIGKILL\\)`));
    // the killed camera streams again, from a new process, and every camera goes on for 3 s more
    await waitFor(
      "events after the kill from every camera",
      () => CAMERAS.every((id) => (observer.of(id).at(-1)?.seq ?? 0) >= seqAtKill.get(id)! + 3 * FPS),
      30_000,
    );
    const afterKill = await captureProcesses(daemon.pid);
    assert.notEqual(afterKill.get(VICTIM), undefined, "the killed camera has a capture process again");
    assert.notEqual(afterKill.get(VICTIM), victimPid);
    for (const id of CAMERAS.filter((c) => c !== VICTIM)) {
      assert.equal(afterKill.get(id), before.get(id), `camera ${id} kept its capture process`);
    }

    for (const id of CAMERAS) {
      const events = observer.of(id);
      assert.deepEqual(gaps(events), [], `camera ${id}: events lost`);
      if (id === VICTIM) continue;
      // The replay loops over FILES noise frames, each with its own score: a frame missed or repeated anywhere
      // (around the kill above all) breaks the period.
      const firstLoop = new Set(events.slice(0, FILES).map((e) => e.score.toFixed(6)));
      assert.equal(firstLoop.size, FILES, `camera ${id}: each file has a score of its own`);
      const broken = events.slice(FILES).filter((e, i) => Math.abs(e.score - events[i]!.score) > 1e-6);
      assert.deepEqual(
        broken.map((e) => e.seq),
        [],
        `camera ${id}: frames out of the replay's order`,
      );
      const around = events.filter((e) => Math.abs(e.captureTs - killedAt) < 2000);
      const gapsMs = around.slice(1).map((e, i) => e.captureTs - around[i]!.captureTs);
      assert.ok(
        Math.max(...gapsMs) < 1000 / FPS + 400,
        `camera ${id}: frames ${gapsMs.join(",")} ms apart around the kill`,
      );
    }
    const status = await waitFor("a status counting the restart", () => {
      const restarts = daemon
        .logs()
        .filter((l) => l.camera === VICTIM && l.msg === "camera restart scheduled").length;
      return restarts >= 1 ? restarts : undefined;
    });
    assert.equal(status, 1, "one restart of the killed camera");
    for (const id of CAMERAS.filter((c) => c !== VICTIM)) {
      assert.ok(
        !daemon.logs().some((l) => l.camera === id && l.level === 40),
        `camera ${id} logged no warning`,
      );
    }
  });
});
