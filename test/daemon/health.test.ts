import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { PartialConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/core/log.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { MosquittoBroker } from "../helpers/mosquitto.js";
import { freePort, Plc } from "../helpers/opcua.js";
import { waitFor } from "../helpers/wait.js";

/**
 * Health you can alert on (issue 23): `/readyz` and the connection gauges of `/metrics`, read over HTTP from real
 * daemons in real states — a real broker killed and restarted, a real node-opcua client session, cameras disabled
 * through the control, a camera whose source never starts, a model that does not load.
 */

interface Ready {
  status: number;
  body: string;
}

async function readyz(port: number): Promise<Ready> {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: res.status, body: await res.text() };
}

/** The value of an unlabelled series in /metrics, or undefined when it has no sample. */
async function gauge(port: number, name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/** Waits until /readyz answers `status` with a body matching `body`; returns it. */
function readyzBecomes(port: number, status: number, body: RegExp, timeoutMs = 20_000): Promise<Ready> {
  let last: Ready | undefined;
  const poll = async (): Promise<Ready> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      last = await readyz(port);
      if (last.status === status && body.test(last.body)) return last;
      if (Date.now() > deadline) {
        throw new Error(`/readyz is ${last.status} ${JSON.stringify(last.body)}, not ${status} ${body}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return poll();
}

/** Waits until the unlabelled series `name` reads `value` (undefined: no sample). */
async function gaugeBecomes(port: number, name: string, value: number | undefined): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const now = await gauge(port, name);
    if (now === value) return;
    if (Date.now() > deadline) throw new Error(`${name} is ${now}, not ${value}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("health you can alert on: /readyz and the connection gauges of a real daemon", () => {
  let broker: MosquittoBroker;
  let station: { work: string; bundle: string; noise: string };

  before(async () => {
    broker = await MosquittoBroker.start();
    station = await tinyStation("stpmd-health-");
  });

  after(async () => {
    await broker?.close();
  });

  /** A daemon with HTTP on a free port, MQTT to the test broker, the tiny station's bundle and `cameras`. */
  async function daemonWith(
    name: string,
    cameras: NonNullable<PartialConfig["cameras"]>,
    extra: PartialConfig = {},
  ): Promise<{ daemon: Daemon; http: number; configFile: string; partial: PartialConfig }> {
    const http = await freePort();
    const dir = path.join(station.work, name);
    const partial: PartialConfig = {
      model: { bundle: station.bundle, watch: false },
      inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
      cameras,
      mqtt: {
        url: broker.url,
        prefix: name,
        client_id: `stpmd-${name}`,
        reconnect_period_ms: 100,
        outbox: { dir: path.join(dir, "outbox") },
      },
      http: { enabled: true, port: http, console: { enabled: false } },
      health: { watchdog: false },
      ...extra,
    };
    const configFile = path.join(station.work, `${name}.json`);
    await writeFile(configFile, JSON.stringify(partial));
    const daemon = new Daemon(testConfig(partial), createLogger("silent"), { configPath: configFile });
    await daemon.start();
    return { daemon, http, configFile, partial };
  }

  test("a running line: ready, the broker and Sparkplug gauges follow a killed and restarted mosquitto, PLC sessions are counted; then disabled cameras and a missing model", async () => {
    const opcuaPort = await freePort();
    const { daemon, http, configFile, partial } = await daemonWith(
      "line",
      [{ id: "cam", source: replaySource(station.noise, 20) }],
      {
        sparkplug: {
          enabled: true,
          group_id: "plant",
          edge_node_id: "health",
          bdseq_file: path.join(station.work, "line-bdseq"),
          history: { dir: path.join(station.work, "line-history") },
        },
        opcua: {
          enabled: true,
          port: opcuaPort,
          bind: "127.0.0.1",
          hostname: "localhost",
          allow_anonymous: true,
          security: { policies: ["None"], modes: ["None"] },
          pki_dir: path.join(station.work, "line-pki"),
        },
      },
    );
    try {
      // State by state: what is done to the line, then what /readyz and the gauges must say.
      const states: {
        state: string;
        act: () => Promise<void>;
        ready: [number, RegExp];
        gauges: Record<string, number | undefined>;
        connections?: object;
      }[] = [
        {
          state: "inspecting, every link up",
          act: async () => {},
          ready: [200, /^ready\n$/],
          gauges: {
            stpmd_broker_connected: 1,
            stpmd_sparkplug_connected: 1,
            stpmd_sparkplug_born: 1,
            stpmd_opcua_sessions: 0,
          },
          connections: { broker: true, sparkplug: { connected: true, born: true }, opcua_sessions: 0 },
        },
        {
          // the outbox holds defect events through an outage: the station still inspects, so it stays ready
          state: "mosquitto killed",
          act: () => broker.kill(),
          ready: [
            200,
            /^ready; the MQTT broker is not connected \(\d+ defect events wait in the outbox\); the Sparkplug session is down\n$/,
          ],
          gauges: { stpmd_broker_connected: 0, stpmd_sparkplug_connected: 0, stpmd_sparkplug_born: 0 },
          connections: { broker: false, sparkplug: { connected: false, born: false }, opcua_sessions: 0 },
        },
        {
          state: "mosquitto restarted",
          act: () => broker.restart(),
          ready: [200, /^ready\n$/],
          gauges: { stpmd_broker_connected: 1, stpmd_sparkplug_connected: 1, stpmd_sparkplug_born: 1 },
        },
        {
          state: "the only camera disabled",
          act: () => daemon.control.enableCamera("cam", false, { via: "http" }),
          ready: [
            503,
            /^not ready: every camera is disabled \(cam\): nothing is inspected until one is enabled\n$/,
          ],
          gauges: { stpmd_broker_connected: 1 },
        },
        {
          state: "enabled again",
          act: () => daemon.control.enableCamera("cam", true, { via: "http" }),
          ready: [200, /^ready\n$/],
          gauges: {},
        },
      ];
      for (const { state, act, ready, gauges, connections } of states) {
        await act();
        await readyzBecomes(http, ready[0], ready[1]).catch((err: Error) => {
          throw new Error(`${state}: ${err.message}`);
        });
        for (const [name, value] of Object.entries(gauges)) {
          await gaugeBecomes(http, name, value).catch((err: Error) => {
            throw new Error(`${state}: ${err.message}`);
          });
        }
        if (connections !== undefined) assert.deepEqual(daemon.snapshot().connections, connections, state);
      }

      // a PLC's session is counted while open, and no longer once closed
      const plc = await Plc.connect(
        { dir: station.work, endpoint: `opc.tcp://localhost:${opcuaPort}` },
        {
          anonymous: true,
        },
      );
      try {
        await gaugeBecomes(http, "stpmd_opcua_sessions", 1);
        assert.equal(daemon.snapshot().connections.opcua_sessions, 1);
      } finally {
        await plc.close();
      }
      await gaugeBecomes(http, "stpmd_opcua_sessions", 0);

      // the camera replaced (by a reload) with one whose model is missing: no model is loaded any more
      const missing = path.join(station.work, "no-such-bundle");
      const cameras = [{ id: "cam2", source: replaySource(station.noise, 20), model: missing }];
      await writeFile(configFile, JSON.stringify({ ...partial, cameras }));
      const outcome = await daemon.reload({ via: "sighup" });
      assert.deepEqual(outcome.failed, [missing]);
      await readyzBecomes(
        http,
        503,
        new RegExp(
          `^not ready: no model loaded \\(cam2: ${missing}\\); the log says why it does not load\\n$`,
        ),
      );
    } finally {
      await daemon.stop();
    }
  });

  test("every camera disabled in the config file: not ready with that reason (not 'no model loaded'); systemd hears READY and the watchdog pings, also after an operator disables the camera again", async () => {
    // a real sd_notify socket, as systemd's: what the daemon's systemd-notify children send is printed per line
    const socket = path.join(station.work, "notify.sock");
    const notifier = spawn("python3", [
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('listening',flush=True)\nwhile True: print(s.recv(4096).decode().replace('\\n',' '),flush=True)",
      socket,
    ]);
    const notes: { text: string; at: number }[] = [];
    notifier.stdout.on("data", (d: Buffer) => {
      for (const text of d.toString().trim().split("\n")) notes.push({ text, at: Date.now() });
    });
    const pings = (since: number) =>
      notes.filter((n) => n.text.includes("WATCHDOG=1") && n.at >= since).length;
    const saved = { socket: process.env.NOTIFY_SOCKET, usec: process.env.WATCHDOG_USEC };
    let daemon: Daemon | undefined;
    try {
      await waitFor("the notify socket", () => notes.some((n) => n.text === "listening"));
      process.env.NOTIFY_SOCKET = socket;
      process.env.WATCHDOG_USEC = "1000000"; // pings every 0.5 s while due
      const started = await daemonWith(
        "off",
        [
          { id: "a", source: replaySource(station.noise, 20), enabled: false },
          { id: "b", source: replaySource(station.noise, 20), enabled: false },
        ],
        { health: { watchdog: true } },
      );
      daemon = started.daemon;
      const { http } = started;
      assert.deepEqual(await readyz(http), {
        status: 503,
        body: "not ready: every camera is disabled (a, b): nothing is inspected until one is enabled\n",
      });
      // no Sparkplug or OPC UA output runs: their gauges have no sample, so no alert fires for them
      assert.equal(await gauge(http, "stpmd_sparkplug_connected"), undefined);
      assert.equal(await gauge(http, "stpmd_opcua_sessions"), undefined);
      await gaugeBecomes(http, "stpmd_broker_connected", 1);
      // systemd is told the node started (else TimeoutStartSec fails it), and the watchdog is fed: nothing can hang
      await waitFor("READY=1", () => notes.some((n) => n.text.includes("READY=1")));
      const idleFrom = Date.now();
      await waitFor("watchdog pings while every camera is disabled", () => pings(idleFrom) >= 3, 5000);

      // an operator enables a camera and disables it again: the pings go on, so systemd does not restart the
      // node (which would bring back the config file's enables, or here restart it every WatchdogSec)
      await daemon.control.enableCamera("a", true, { via: "http" });
      await readyzBecomes(http, 200, /^ready\n$/);
      await daemon.control.enableCamera("a", false, { via: "http" });
      const disabledAt = Date.now();
      await readyzBecomes(http, 503, /^not ready: every camera is disabled/);
      await waitFor("watchdog pings after the disable", () => pings(disabledAt + 1500) >= 2, 5000);
    } finally {
      await daemon?.stop();
      notifier.kill();
      for (const [key, value] of [
        ["NOTIFY_SOCKET", saved.socket],
        ["WATCHDOG_USEC", saved.usec],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  test("a start that fails on its model releases the OPC UA server prepared meanwhile: its port never opens", async () => {
    const opcuaPort = await freePort();
    const pki = path.join(station.work, "failed-pki");
    const missing = path.join(station.work, "no-bundle-at-start");
    const config = testConfig({
      model: { bundle: missing, watch: false },
      cameras: [{ id: "cam", source: replaySource(station.noise, 20) }],
      mqtt: { url: broker.url, outbox: { dir: path.join(station.work, "failed-outbox") } },
      opcua: { enabled: true, port: opcuaPort, bind: "127.0.0.1", allow_anonymous: true, pki_dir: pki },
      health: { watchdog: false },
    });
    const daemon = new Daemon(config, createLogger("silent"));
    await assert.rejects(daemon.start(), /model\.bundle/);
    // the certificates were made while the model failed to load, and the server was shut down, not left listening
    assert.ok(existsSync(path.join(pki, "own", "certs", "certificate.pem")));
    const connected = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port: opcuaPort, host: "127.0.0.1" });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    assert.equal(connected, false);
    await daemon.stop();
  });

  test("a camera whose source never starts: not ready, no camera is streaming", async () => {
    const { daemon, http } = await daemonWith("unplugged", [
      {
        id: "unplugged",
        source: replaySource(path.join(station.work, "missing"), 20, false),
        restart_backoff: { initial_ms: 100, max_ms: 200, factor: 2 },
      },
    ]);
    try {
      await readyzBecomes(
        http,
        503,
        /^not ready: no camera is streaming \(unplugged: (starting|restarting)\)\n$/,
      );
    } finally {
      await daemon.stop();
    }
  });
});
