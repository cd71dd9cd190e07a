import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { copyFile, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt, { type MqttClient } from "mqtt";
import {
  DaemonProcess,
  defectiveReplay,
  replaySource,
  sleep,
  trainTinyBundle,
  waitFor,
} from "../helpers/daemon-process.js";
import { MosquittoBroker, TcpGate } from "../helpers/mosquitto.js";

/**
 * The fault suite (run alone with `npm run test:faults`): the real daemon process, a real mosquitto, a replay
 * camera of noise frames that the tiny bundle finds defective, so each frame is one defect event and the camera's
 * seq numbers count what was produced. Each test injects one fault and compares what was produced with what a
 * subscriber received.
 */

const SIZE = 64;
const FPS = 10;

let work: string;
let bundle: string;
let noise: string;

before(async () => {
  ({ work, bundle, noise } = await defectiveReplay("stpmd-faults-", 6, SIZE));
});

interface Scenario {
  name: string;
  url: string;
  mqtt?: Record<string, unknown>;
  model?: Record<string, unknown>;
  cameraEnabled?: boolean;
  outbox?: string;
}

async function writeConfig(s: Scenario): Promise<string> {
  const config = {
    model: { bundle, watch: false, ...s.model },
    inference: { max_batch: 1, max_wait_ms: 5 },
    cameras: [{ id: "noise", source: replaySource(noise, FPS), enabled: s.cameraEnabled ?? true }],
    mqtt: {
      url: s.url,
      client_id: `stpmd-${s.name}`,
      prefix: s.name,
      status_interval_s: 1,
      reconnect_period_ms: 300,
      snapshot: "none",
      outbox: { dir: s.outbox ?? path.join(work, `${s.name}-outbox`) },
      ...s.mqtt,
    },
    log: { level: "info" },
    health: { watchdog: false },
  };
  const file = path.join(work, `${s.name}.json`);
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

/** A subscriber that records every defect event and status under `prefix`. */
class Observer {
  readonly events = new Map<string, number>();
  readonly statuses: Record<string, unknown>[] = [];
  private constructor(
    readonly client: MqttClient,
    prefix: string,
  ) {
    client.on("message", (topic, payload) => {
      const body = JSON.parse(payload.toString()) as Record<string, unknown>;
      if (topic.endsWith("/defect")) this.events.set(String(body.event_id), Number(body.seq));
      if (topic === `${prefix}/status`) this.statuses.push(body);
    });
    client.on("connect", () => {
      client.subscribe(`${prefix}/#`, { qos: 1 });
    });
  }

  static async connect(url: string, prefix: string, auth: Record<string, string> = {}): Promise<Observer> {
    const client = await mqtt.connectAsync(url, { clientId: `obs-${prefix}`, reconnectPeriod: 100, ...auth });
    const observer = new Observer(client, prefix);
    await client.subscribeAsync(`${prefix}/#`, { qos: 1 });
    return observer;
  }

  /** Distinct event seqs received, ascending. */
  seqs(): number[] {
    return [...new Set(this.events.values())].sort((a, b) => a - b);
  }

  lastStatus(): Record<string, unknown> | undefined {
    return this.statuses.at(-1);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** Seqs missing between the first and the last received one. */
function gaps(seqs: number[]): number[] {
  const missing: number[] = [];
  for (let i = 1; i < seqs.length; i++) {
    for (let s = seqs[i - 1]! + 1; s < seqs[i]!; s++) missing.push(s);
  }
  return missing;
}

describe("faults", { concurrency: false }, () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  test("the broker refuses the login, then accepts it: every event produced meanwhile arrives, in order", async () => {
    const passwords = path.join(work, "passwords");
    execFileSync("mosquitto_passwd", ["-c", "-b", passwords, "observer", "obs"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "stpmd", "not-the-daemons"]);
    const broker = await MosquittoBroker.start({ passwordFile: passwords });
    cleanups.push(() => broker.close());
    const observer = await Observer.connect(broker.url, "login", { username: "observer", password: "obs" });
    cleanups.push(() => observer.close());
    const config = await writeConfig({
      name: "login",
      url: broker.url,
      mqtt: { username: "stpmd", password: "right" },
    });
    const daemon = new DaemonProcess(config);
    cleanups.push(() => daemon.kill());

    await waitFor("the refusal logged", () => /Not authorized/.test(daemon.output));
    await sleep(3000); // ~30 events produced while refused, and mqtt.js has retried several times
    assert.equal(observer.events.size, 0);
    execFileSync("mosquitto_passwd", ["-b", passwords, "stpmd", "right"]);
    broker.reload();
    await waitFor("online after the password was fixed", () => observer.lastStatus()?.state === "online");
    await waitFor("the backlog delivered", () => observer.seqs().length >= 30, 30_000);
    const seqs = observer.seqs();
    assert.equal(seqs[0], 0, "the first event, produced while refused, arrived");
    assert.deepEqual(gaps(seqs), [], `events lost: ${seqs.join(",")}`);
  });

  test("the broker is killed mid-stream and restarted empty: no event lost", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const gate = await TcpGate.start(broker.port);
    cleanups.push(() => gate.shutdown());
    const observer = await Observer.connect(broker.url, "killed");
    cleanups.push(() => observer.close());
    const daemon = new DaemonProcess(await writeConfig({ name: "killed", url: gate.url }));
    cleanups.push(() => daemon.kill());

    await waitFor("events flowing", () => observer.seqs().length >= 10, 30_000);
    gate.close();
    await broker.kill();
    await sleep(3000);
    await broker.restart();
    // the observer back first (the new broker knows no session), then the daemon
    await waitFor("observer reconnected", () => observer.client.connected);
    await observer.client.subscribeAsync("killed/#", { qos: 1 });
    const reopened = observer.seqs().at(-1)!;
    gate.open();
    await waitFor("events after the outage", () => (observer.seqs().at(-1) ?? 0) >= reopened + 40, 30_000);
    const seqs = observer.seqs();
    assert.deepEqual(gaps(seqs), [], `events lost around the outage: ${seqs.join(",")}`);
  });

  test("the daemon is SIGKILLed with events queued: the next start delivers every event it had on disk", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const gate = await TcpGate.start(broker.port);
    cleanups.push(() => gate.shutdown());
    gate.close(); // unreachable from the start: every event goes to the outbox
    const observer = await Observer.connect(broker.url, "sigkill");
    cleanups.push(() => observer.close());
    const outbox = path.join(work, "sigkill-outbox");
    const first = new DaemonProcess(await writeConfig({ name: "sigkill", url: gate.url, outbox }));
    cleanups.push(() => first.kill());
    await waitFor("events queued on disk", () => first.hasLog(/first frame inspected/), 30_000);
    await sleep(3000);
    await first.kill();
    const onDisk = (await readdir(outbox)).filter((f) => f.endsWith(".msg")).length;
    assert.ok(onDisk >= 15, `only ${onDisk} events on disk`);

    // the same daemon restarted with its camera off, so that only the first run's events travel
    gate.open();
    const second = new DaemonProcess(
      await writeConfig({ name: "sigkill", url: gate.url, outbox, cameraEnabled: false }),
    );
    cleanups.push(() => second.kill());
    await waitFor("the queued events delivered", () => observer.events.size >= onDisk, 30_000);
    const seqs = observer.seqs();
    assert.equal(seqs[0], 0);
    assert.deepEqual(gaps(seqs), [], `events lost across the SIGKILL: ${seqs.join(",")}`);
    assert.equal(observer.events.size, onDisk, "each event on disk arrived once");
  });

  test("a second daemon on the same outbox refuses to start, naming the first; the first loses nothing", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const observer = await Observer.connect(broker.url, "twice");
    cleanups.push(() => observer.close());
    const config = await writeConfig({ name: "twice", url: broker.url });
    const first = new DaemonProcess(config);
    cleanups.push(() => first.kill());
    await waitFor("events flowing", () => observer.seqs().length >= 5, 30_000);
    const second = new DaemonProcess(config);
    cleanups.push(() => second.kill());
    const started = Date.now();
    const { code } = await second.exited;
    assert.equal(code, 1, second.output);
    assert.ok(Date.now() - started < 10_000, "refused within seconds");
    assert.match(second.output, new RegExp(`is in use by process ${first.pid}\\b.*ERR_OUTBOX_LOCKED`));
    const last = observer.seqs().at(-1)!;
    await waitFor("more events from the first", () => (observer.seqs().at(-1) ?? 0) >= last + 10, 15_000);
    assert.deepEqual(gaps(observer.seqs()), [], "the first daemon was never knocked off the broker");
    assert.equal(observer.statuses.filter((st) => st.state === "offline").length, 0);
  });

  test("another client with the daemon's client id cannot knock it off a broker set up like deploy/mosquitto", async () => {
    // The impostor first, on a broker without the setting: it takes over the daemon's session (the fault seen:
    // retained `offline` statuses, reconnect loops); then with `use_username_as_clientid true`, as shipped.
    const passwords = path.join(work, "passwords-takeover");
    execFileSync("mosquitto_passwd", ["-c", "-b", passwords, "observer", "obs"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "stpmd", "right"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "intruder", "int"]);
    const shipped = (await readFile("deploy/mosquitto/stpmd.conf", "utf8")).includes(
      "use_username_as_clientid true",
    );
    assert.ok(shipped, "deploy/mosquitto/stpmd.conf binds client ids to logins");
    const takeovers: Record<string, number> = {};
    for (const [name, extraConfig] of [
      ["takeover-open", []],
      ["takeover-bound", ["use_username_as_clientid true"]],
    ] as const) {
      const broker = await MosquittoBroker.start({ passwordFile: passwords, extraConfig: [...extraConfig] });
      cleanups.push(() => broker.close());
      const observer = await Observer.connect(broker.url, name, { username: "observer", password: "obs" });
      cleanups.push(() => observer.close());
      const daemon = new DaemonProcess(
        await writeConfig({ name, url: broker.url, mqtt: { username: "stpmd", password: "right" } }),
      );
      cleanups.push(() => daemon.kill());
      await waitFor("events flowing", () => observer.seqs().length >= 5, 30_000);
      // an impostor (a login of its own) reusing the daemon's client id, reconnecting as fast as it can for 3 s
      const impostor = await mqtt.connectAsync(broker.url, {
        clientId: `stpmd-${name}`,
        username: "intruder",
        password: "int",
        reconnectPeriod: 100,
      });
      await sleep(3000);
      await impostor.endAsync(true);
      await sleep(1000);
      takeovers[name] = daemon
        .logs()
        .filter((l) => /connection closed; reconnecting/.test(String(l.msg))).length;
      assert.deepEqual(gaps(observer.seqs()), [], `${name}: events lost`);
      await daemon.kill();
    }
    assert.ok(takeovers["takeover-open"]! > 0, "without the setting the impostor knocks the daemon off");
    assert.equal(takeovers["takeover-bound"], 0, "with it the daemon keeps its connection");
  });

  test("SIGKILL leaves nothing running: the camera's capture process ends with the daemon", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const config = await writeConfig({ name: "orphan", url: broker.url });
    const daemon = new DaemonProcess(config);
    cleanups.push(() => daemon.kill());
    await waitFor("inspecting", () => daemon.hasLog(/first frame inspected/), 30_000);
    const children = await childPids(daemon.pid);
    assert.equal(children.length, 1, "one capture process for the one camera");
    const cmdline = await readFile(`/proc/${children[0]}/cmdline`, "utf8");
    assert.match(cmdline, /capture-process\.js/);
    await daemon.kill();
    await waitFor("the capture process gone", () => !isRunning(children[0]!), 5000);
    assert.deepEqual(await processesWith(config), [], "no process still runs this config");
  });

  test("a bundle overwritten in place (cp new/* bundle/) is reloaded by the watch", async () => {
    const broker = await MosquittoBroker.start();
    cleanups.push(() => broker.close());
    const observer = await Observer.connect(broker.url, "inplace");
    cleanups.push(() => observer.close());
    const own = path.join(work, "inplace-model");
    const firstVersion = await trainTinyBundle(work, own, 2, SIZE);
    const daemon = new DaemonProcess(
      await writeConfig({
        name: "inplace",
        url: broker.url,
        model: { bundle: own, watch: true, watch_debounce_ms: 300 },
      }),
    );
    cleanups.push(() => daemon.kill());
    await waitFor(
      "first model in status",
      () => observer.lastStatus()?.model_version === firstVersion,
      30_000,
    );
    const next = path.join(work, "inplace-next");
    const nextVersion = await trainTinyBundle(work, next, 3, SIZE);
    for (const file of await readdir(next)) await copyFile(path.join(next, file), path.join(own, file));
    await waitFor(
      "the new model in status",
      () => observer.lastStatus()?.model_version === nextVersion,
      15_000,
    );
    assert.ok(daemon.hasLog(/model swapped/));
  });
});

async function childPids(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const list = await readFile(`/proc/${pid}/task/${task}/children`, "utf8").catch(() => "");
    children.push(...list.split(" ").filter(Boolean).map(Number));
  }
  return children;
}

/** Whether `pid` runs (exists and is no zombie waiting for a parent to reap it). */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Pids whose command line mentions `needle`. */
async function processesWith(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(needle)) found.push(Number(entry));
  }
  return found;
}
