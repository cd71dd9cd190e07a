import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt, { type MqttClient } from "mqtt";
import { DaemonProcess, defectiveReplay, replaySource, sleep, waitFor } from "../helpers/daemon-process.js";
import { freeLoopbackPort, MosquittoBroker } from "../helpers/mosquitto.js";

/**
 * Signals at any moment of `stpmd run`'s life, as systemd sends them: `systemctl reload` (SIGHUP) as soon as the
 * process exists or right after READY=1, `systemctl stop` (SIGTERM) while the outputs start (OPC UA creating its
 * certificate). The daemon must neither die of a signal nor lose the reload: a SIGHUP during start-up is applied
 * once started, a SIGTERM stops what was started and exits 0 within seconds.
 */

const SIZE = 64;

let work: string;
let bundle: string;
let noise: string;
let broker: MosquittoBroker;
let configs = 0;

before(async () => {
  ({ work, bundle, noise } = await defectiveReplay("stpmd-signals-", 4, SIZE));
  broker = await MosquittoBroker.start();
});

after(async () => {
  await broker.close();
});

interface Options {
  opcua?: boolean;
  threshold?: number;
}

/** A daemon config of one replay camera, MQTT on the test broker; returns its file and MQTT prefix. */
async function writeConfig(
  name: string,
  o: Options,
  file?: string,
): Promise<{ file: string; prefix: string }> {
  const prefix = `signals-${name}`;
  const config = {
    model: { bundle, watch: false },
    inference: { max_batch: 1, max_wait_ms: 5 },
    cameras: [
      {
        id: "noise",
        source: replaySource(noise, 10),
        ...(o.threshold !== undefined ? { threshold: { value: o.threshold } } : {}),
      },
    ],
    mqtt: {
      url: broker.url,
      client_id: `stpmd-${prefix}`,
      prefix,
      status_interval_s: 1,
      snapshot: "none",
      outbox: { dir: path.join(work, `${name}-outbox`) },
    },
    // a fresh PKI folder: node-opcua creates the server's certificate at the first start, the slow case
    ...(o.opcua
      ? {
          opcua: {
            enabled: true,
            port: await freeLoopbackPort(),
            bind: "127.0.0.1",
            hostname: "localhost",
            allow_anonymous: true,
            pki_dir: path.join(work, `${name}-pki`),
          },
        }
      : {}),
    log: { level: "info" },
    health: { watchdog: false },
  };
  const out = file ?? path.join(work, `${name}-${configs++}.json`);
  await writeFile(out, JSON.stringify(config, null, 2));
  return { file: out, prefix };
}

/** An sd_notify socket like systemd's: the datagrams the daemon sends, with when they arrived. */
class NotifySocket {
  readonly messages: { text: string; at: number }[] = [];
  private constructor(
    readonly path: string,
    private readonly listener: ChildProcess,
  ) {}

  static async open(file: string): Promise<NotifySocket> {
    const listener = spawn("python3", [
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('listening',flush=True)\nwhile True: print(s.recv(4096).decode().replace('\\n',' '),flush=True)",
      file,
    ]);
    const socket = new NotifySocket(file, listener);
    listener.stdout!.on("data", (d: Buffer) => {
      const at = Date.now();
      for (const text of d.toString().trim().split("\n")) socket.messages.push({ text, at });
    });
    await waitFor("notify socket", () => socket.messages.some((m) => m.text === "listening"));
    return socket;
  }

  close(): void {
    this.listener.kill();
  }
}

/** The retained `<prefix>/status` as a subscriber sees it. */
async function statusWatcher(
  prefix: string,
): Promise<{ client: MqttClient; last: () => Status | undefined }> {
  const client = await mqtt.connectAsync(broker.url, { clientId: `watch-${prefix}` });
  let last: Status | undefined;
  client.on("message", (_topic, payload) => {
    last = JSON.parse(payload.toString()) as Status;
  });
  await client.subscribeAsync(`${prefix}/status`, { qos: 1 });
  return { client, last: () => last };
}

interface Status {
  state: string;
  cameras?: Record<string, { threshold: number | null }>;
}

function isRunning(daemon: DaemonProcess): boolean {
  return daemon.child.exitCode === null && daemon.child.signalCode === null;
}

/** Log lines of `reload requested by sighup`: one per reload that ran (not the line that queues it). */
function reloadsRun(daemon: DaemonProcess): number {
  return daemon.logs().filter((l) => l.msg === "reload requested by sighup").length;
}

/** SIGTERM, then the exit: 0, within `withinMs`, with the stop logged and no error or stack trace. */
async function assertCleanStop(daemon: DaemonProcess, withinMs: number): Promise<number> {
  const sent = Date.now();
  daemon.child.kill("SIGTERM");
  const exit = await Promise.race([daemon.exited, sleep(withinMs).then(() => undefined)]);
  assert.ok(exit, `still running ${withinMs} ms after SIGTERM:\n${daemon.output}`);
  assert.deepEqual(exit, { code: 0, signal: null }, daemon.output);
  assert.ok(daemon.hasLog(/^stopped$/), `no "stopped" line after ${Date.now() - sent} ms:\n${daemon.output}`);
  const errors = daemon.logs().filter((l) => Number(l.level) >= 50);
  assert.deepEqual(errors, [], "no error logged");
  assert.doesNotMatch(daemon.output, /^\s+at /m, "no stack trace");
  return Date.now() - sent;
}

/**
 * Whether process `pid` handles SIGHUP (its SigCgt mask in /proc): the first moment it can survive one. The daemon
 * installs its SIGTERM, SIGINT and SIGHUP handlers together, so this tells for SIGTERM too (Node itself catches
 * SIGTERM and SIGINT from its first moment, to restore the terminal before it dies of them, so their bits do not).
 */
function handlesSignals(pid: number): boolean {
  const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return mask !== undefined && (BigInt(`0x${mask}`) & 1n) !== 0n; // bit 0: signal 1, SIGHUP
}

describe("signals during start-up", { concurrency: false }, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  test("a SIGHUP with the first log line (start-up) is applied once started; the daemon keeps running", async () => {
    const { file, prefix } = await writeConfig("hup-start", {});
    const watcher = await statusWatcher(prefix);
    cleanups.push(() => watcher.client.endAsync(true));
    const daemon = new DaemonProcess(file);
    cleanups.push(() => daemon.kill());
    await waitFor("the first log line", () => daemon.logs().length > 0, 30_000);
    // the file edited and SIGHUP sent while the daemon starts: this threshold must be in force once it runs
    await writeConfig("hup-start", { threshold: 1234.5 }, file);
    daemon.child.kill("SIGHUP");
    await waitFor("the reload run", () => reloadsRun(daemon) > 0 || !isRunning(daemon), 30_000);
    assert.ok(isRunning(daemon), `the daemon died of the SIGHUP:\n${daemon.output}`);
    assert.ok(daemon.hasLog(/asked for a reload during start-up/), "the SIGHUP came during start-up");
    await waitFor(
      "the new threshold in the status",
      () => watcher.last()?.cameras?.noise?.threshold === 1234.5,
      10_000,
    );
    await waitFor("inspecting", () => daemon.hasLog(/first frame inspected/), 30_000);
    assert.equal(reloadsRun(daemon), 1, "one reload for the one SIGHUP");
    await assertCleanStop(daemon, 10_000);
  });

  test("a SIGHUP, then a SIGTERM, the moment the process catches them (its modules still loading): a reload once started, then exit 0", async (t) => {
    const { file } = await writeConfig("hup-first", {});
    const daemon = new DaemonProcess(file);
    cleanups.push(() => daemon.kill());
    const spawned = Date.now();
    await waitFor("SIGHUP handled", () => handlesSignals(daemon.pid), 10_000);
    daemon.child.kill("SIGHUP");
    const linesBefore = daemon.logs().length;
    t.diagnostic(`SIGHUP sent ${Date.now() - spawned} ms after the spawn`);
    assert.equal(linesBefore, 0, "signals are handled before the daemon logs anything");
    await waitFor("the reload run", () => reloadsRun(daemon) > 0 || !isRunning(daemon), 30_000);
    assert.ok(isRunning(daemon), `the daemon died of the SIGHUP:\n${daemon.output}`);
    assert.equal(reloadsRun(daemon), 1);
    await assertCleanStop(daemon, 10_000);

    const second = new DaemonProcess(file);
    cleanups.push(() => second.kill());
    await waitFor("SIGTERM handled", () => handlesSignals(second.pid), 10_000);
    await assertCleanStop(second, 10_000);
  });

  test("SIGHUPs right after READY=1 and 0.2 s later, OPC UA on: both reloads run, the daemon keeps running", async () => {
    const notify = await NotifySocket.open(path.join(work, "notify.sock"));
    cleanups.push(() => notify.close());
    const { file } = await writeConfig("hup-ready", { opcua: true });
    const daemon = new DaemonProcess(file, { NOTIFY_SOCKET: notify.path });
    cleanups.push(() => daemon.kill());
    await waitFor("READY=1", () => notify.messages.some((m) => m.text.includes("READY=1")), 30_000);
    daemon.child.kill("SIGHUP");
    await sleep(200);
    assert.ok(isRunning(daemon), `the daemon died of the SIGHUP after READY=1:\n${daemon.output}`);
    // the second one while the first reload may still run: it queues one more behind it
    daemon.child.kill("SIGHUP");
    await waitFor("two reloads run", () => reloadsRun(daemon) >= 2 || !isRunning(daemon), 15_000);
    assert.ok(isRunning(daemon), `the daemon died of a SIGHUP:\n${daemon.output}`);
    await assertCleanStop(daemon, 10_000);
  });

  const moments = {
    "with its first log line": (daemon: DaemonProcess) => daemon.logs().length > 0,
    // the OPC UA sink starts last and creates its PKI folder first, then the server's certificate in it
    "while OPC UA creates its certificate": (_daemon: DaemonProcess, pki: string) => existsSync(pki),
  };
  for (const [when, reached] of Object.entries(moments)) {
    test(`a SIGTERM ${when}, OPC UA on: it stops what was started and exits 0 within seconds`, async (t) => {
      const name = `term-${configs}`;
      const { file } = await writeConfig(name, { opcua: true });
      const daemon = new DaemonProcess(file);
      cleanups.push(() => daemon.kill());
      await waitFor(when, () => reached(daemon, path.join(work, `${name}-pki`)), 30_000);
      t.diagnostic(`exited ${await assertCleanStop(daemon, 10_000)} ms after the SIGTERM`);
      assert.ok(daemon.hasLog(/^stop asked for during start-up/), "the SIGTERM came during start-up");
      assert.ok(!daemon.hasLog(/first frame inspected/), "no camera was started");
    });
  }
});
