import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt, { type MqttClient } from "mqtt";
import sharp from "sharp";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { noiseFrames, STPMD_BIN, sleep, trainTinyBundle, waitFor } from "../helpers/daemon-process.js";
import { MosquittoBroker, TcpGate } from "../helpers/mosquitto.js";
import { SHARED_BOTTLE, tempDir, writePart } from "../helpers/tiny-data.js";

/**
 * The daemon as a user runs it: `stpmd run --config` in its own process, real GStreamer replay cameras, a real
 * mosquitto behind a TCP gate (to cut the daemon off while a subscriber stays connected), a real model bundle, a
 * real sd_notify socket. One daemon serves the whole sequence of checks below, in order.
 */

const SIZE = 64;
const PREFIX = "e2e";

interface Received {
  topic: string;
  payload: Buffer;
  at: number;
}

describe("stpmd run, end to end", () => {
  let work: string;
  let broker: MosquittoBroker;
  let gate: TcpGate;
  let sub: MqttClient;
  let daemon: ChildProcess;
  let notifier: ChildProcess;
  let daemonLog = "";
  const notifications: string[] = [];
  const received: Received[] = [];
  let firstVersion: string;
  const useBottle = existsSync(path.join(SHARED_BOTTLE, "test/broken_large/000.png"));

  const statusOf = (): Record<string, unknown> | undefined => {
    const last = received.filter((m) => m.topic === `${PREFIX}/status`).at(-1);
    return last ? (JSON.parse(last.payload.toString()) as Record<string, unknown>) : undefined;
  };
  const onTopic = (suffix: string): Received[] => received.filter((m) => m.topic === `${PREFIX}/${suffix}`);

  before(async () => {
    work = await tempDir("stpmd-e2e-");
    // half the 10 frames held out: the collection test needs unseen normal parts to score below the largest
    // validation score (score_quantile 1), which the top-1 % part score makes unlikely with 2 validation frames
    firstVersion = await trainTinyBundle(work, path.join(work, "model"), 1, SIZE, 0.5);
    await noiseFrames(path.join(work, "noise"), 6, SIZE);
    const partsDir = path.join(work, "parts");
    await mkdir(partsDir);
    for (let i = 0; i < 4; i++)
      await writePart(
        path.join(partsDir, `${String(i).padStart(3, "0")}.png`),
        synthesizePart(SIZE, 300 + i, "none"),
      );
    broker = await MosquittoBroker.start();
    gate = await TcpGate.start(broker.port);
    sub = await mqtt.connectAsync(broker.url, { clientId: "e2e-sub", reconnectPeriod: 100 });
    sub.on("message", (topic, payload) => received.push({ topic, payload, at: Date.now() }));
    await sub.subscribeAsync(`${PREFIX}/#`, { qos: 1 });

    const paced = "caps=image/png,framerate=10/1 ! pngdec ! identity sync=true";
    const cameras = [
      { id: "noise", source: `multifilesrc location=${work}/noise/%03d.png index=0 loop=true ${paced}` },
      { id: "parts", source: `multifilesrc location=${partsDir}/%03d.png index=0 loop=true ${paced}` },
      // a camera that is unplugged: its source fails at every start
      {
        id: "unplugged",
        source: `multifilesrc location=${work}/missing/%03d.png index=0 ${paced}`,
        restart_backoff: { initial_ms: 200, max_ms: 1000, factor: 2 },
      },
    ];
    if (useBottle) {
      cameras.push({
        id: "bottle",
        source: `multifilesrc location=${SHARED_BOTTLE}/test/broken_large/%03d.png index=0 loop=true ${paced}`,
      });
    }
    const config = {
      model: { bundle: path.join(work, "model"), watch: false },
      inference: { max_batch: 4, max_wait_ms: 20, queue_size: 32 },
      cameras,
      mqtt: {
        url: gate.url,
        client_id: "stpmd-e2e",
        prefix: PREFIX,
        status_interval_s: 1,
        reconnect_period_ms: 200,
        outbox: { dir: path.join(work, "outbox") },
        snapshot: "topic",
      },
      collection: {
        enabled: true,
        dir: path.join(work, "collected"),
        score_quantile: 1,
        min_interval_s: 0.5,
      },
      log: { level: "info" },
    };
    const configFile = path.join(work, "stpmd.json");
    await writeFile(configFile, JSON.stringify(config, null, 2));

    const socket = path.join(work, "notify.sock");
    notifier = spawn("python3", [
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('listening',flush=True)\nwhile True: print(s.recv(4096).decode().replace('\\n',' '),flush=True)",
      socket,
    ]);
    notifier.stdout!.on("data", (d: Buffer) => notifications.push(...d.toString().trim().split("\n")));
    await waitFor("notify socket", () => notifications.includes("listening"));
    daemon = spawn(process.execPath, [STPMD_BIN, "run", "--config", configFile], {
      env: { ...process.env, NOTIFY_SOCKET: socket, WATCHDOG_USEC: "2000000" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    daemon.stdout!.on("data", (d: Buffer) => {
      daemonLog += d.toString();
    });
    daemon.stderr!.on("data", (d: Buffer) => {
      daemonLog += d.toString();
    });
  });

  after(async () => {
    if (daemon.exitCode === null) daemon.kill("SIGKILL");
    notifier.kill();
    await sub.endAsync(true);
    await gate.shutdown();
    await broker.close();
  });

  test("it reports READY to systemd after the first inspected frame, then pings the watchdog only while frames flow", async () => {
    // when each notification reached this process: the daemon can be ready only after loading a model and inspecting
    // a frame, long after its spawn, so nothing it sends is missed here
    assert.ok(
      !notifications.some((n) => n.includes("READY=1")),
      "READY before the daemon could have inspected",
    );
    const timed: { text: string; at: number }[] = [];
    notifier.stdout!.on("data", (d: Buffer) => {
      const at = Date.now();
      for (const text of d.toString().trim().split("\n")) timed.push({ text, at });
    });
    const readyAt = await waitFor("READY=1", () => timed.find((n) => n.text.includes("READY=1"))?.at);
    await waitFor("WATCHDOG=1", () => timed.some((n) => n.text.includes("WATCHDOG=1")));
    const firstOf = (what: string) => timed.findIndex((n) => n.text.includes(what));
    assert.ok(firstOf("READY=1") < firstOf("WATCHDOG=1"), "no watchdog ping before READY");
    // the inspection that READY waited for: the earliest result's inference time (capture + latency, daemon clock)
    const results = () => received.filter((m) => m.topic.endsWith("/result"));
    const inferredAt = (m: Received) => {
      const r = JSON.parse(m.payload.toString()) as { capture_ts: string; latency_ms: number };
      return Date.parse(r.capture_ts) + r.latency_ms;
    };
    await waitFor("a result", () => results().length > 0);
    const firstInferred = Math.min(...results().map(inferredAt));
    assert.ok(readyAt >= firstInferred, `READY at ${readyAt}, first frame inspected at ${firstInferred}`);

    // frames stop (every working camera disabled; the unplugged one keeps failing): the pings must stop within
    // the watchdog interval (2 s), and come back with the frames
    const configFile = path.join(work, "stpmd.json");
    const config = JSON.parse(await readFile(configFile, "utf8")) as {
      cameras: { id: string; enabled?: boolean }[];
    };
    const setWorking = async (enabled: boolean) => {
      for (const c of config.cameras) if (c.id !== "unplugged") c.enabled = enabled;
      await writeFile(configFile, JSON.stringify(config, null, 2));
      daemon.kill("SIGHUP");
    };
    const resultCount = () => results().length;
    await setWorking(false);
    const resumed = await (async () => {
      try {
        let last = resultCount();
        let lastChange = Date.now();
        await waitFor("results to stop", () => {
          if (resultCount() !== last) [last, lastChange] = [resultCount(), Date.now()];
          return Date.now() - lastChange > 1000;
        });
        const quietFrom = lastChange + 3000;
        await sleep(quietFrom + 2500 - Date.now());
        const late = timed.filter((n) => n.text.includes("WATCHDOG=1") && n.at >= quietFrom);
        assert.deepEqual(late, [], "watchdog pinged 3 s after the last frame");
      } finally {
        // the cameras back for the checks that follow, whatever happened above
        await setWorking(true);
      }
      return Date.now();
    })();
    await waitFor("results again", () => results().some((m) => m.at > resumed));
    await waitFor("pings again", () => timed.some((n) => n.text.includes("WATCHDOG=1") && n.at > resumed));
  });

  test("every camera that works publishes one result per frame; defect events carry a JPEG snapshot", async () => {
    await waitFor("results from every working camera", () =>
      ["noise", "parts", ...(useBottle ? ["bottle"] : [])].every((c) => onTopic(`${c}/result`).length >= 5),
    );
    const noiseSeqs = onTopic("noise/result").map((m) => JSON.parse(m.payload.toString()).seq as number);
    // results of one camera arrive in order, one per frame, without gaps while nothing is dropped
    assert.deepEqual(
      noiseSeqs,
      noiseSeqs.map((_, i) => noiseSeqs[0]! + i),
    );
    const defect = await waitFor("a defect event", () => onTopic("noise/defect")[0]);
    const event = JSON.parse(defect.payload.toString());
    assert.equal(event.camera, "noise");
    assert.equal(event.model_version, firstVersion);
    assert.ok(event.score > event.threshold);
    assert.ok(Array.isArray(event.regions) && event.regions.length > 0);
    assert.deepEqual(Object.keys(event.regions[0]).sort(), ["area", "bbox", "bbox_source", "peak"]);
    // no ROI and frames at the size the bundle was trained on: source pixels are the inspected image's
    assert.deepEqual(event.regions[0].bbox_source, event.regions[0].bbox);
    const snapshot = await waitFor("a snapshot", () => onTopic("noise/snapshot")[0]);
    const meta = await sharp(snapshot.payload).metadata();
    assert.equal(meta.format, "jpeg");
    assert.equal(meta.width, SIZE);
  });

  test("a failing camera is restarted while the others keep flowing", async () => {
    const status = await waitFor("status showing the unplugged camera", () => {
      const s = statusOf();
      const cams = s?.cameras as Record<string, { state: string; restarts: number }> | undefined;
      return cams?.unplugged && cams.unplugged.state !== "streaming" && cams.unplugged.restarts > 0
        ? s
        : undefined;
    });
    assert.equal(status.state, "online");
    const before = onTopic("parts/result").length;
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(onTopic("parts/result").length >= before + 5, "the healthy camera kept delivering");
    assert.match(daemonLog, /unplugged/);
  });

  test("while the broker is unreachable defect events are queued on disk and all delivered in order afterwards", async () => {
    gate.close();
    await broker.stop();
    await new Promise((r) => setTimeout(r, 2000));
    const cutAt = Date.now();
    await broker.restart();
    // let the subscriber back in first (the broker kept nothing), then the daemon
    await waitFor("subscriber reconnected", () => sub.connected);
    await sub.subscribeAsync(`${PREFIX}/#`, { qos: 1 });
    gate.open();
    await waitFor("online status on the restarted broker", () =>
      received.some(
        (m) => m.topic === `${PREFIX}/status` && m.at > cutAt && m.payload.toString().includes('"online"'),
      ),
    );
    await new Promise((r) => setTimeout(r, 1500));
    // every noise frame is defective, so the event seqs must be contiguous across the outage
    const seqs = [
      ...new Set(onTopic("noise/defect").map((m) => JSON.parse(m.payload.toString()).seq as number)),
    ].sort((a, b) => a - b);
    const gaps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1]! + 1);
    assert.deepEqual(gaps, [], `defect events lost around the outage: ${seqs.join(",")}`);
    if (seqs.length < 25)
      console.log(
        daemonLog
          .split("\n")
          .filter((l) => !l.includes("result"))
          .slice(-30)
          .join("\n"),
      );
    const noise = onTopic("noise/result").map((m) => JSON.parse(m.payload.toString()));
    assert.ok(
      seqs.length >= 25,
      `expected events from before, during and after the outage, got ${seqs.length}; results ${noise.length}, defective ${noise.filter((r) => r.verdict === "defect").length}, scores ${noise.slice(0, 8).map((r) => `${r.score.toFixed(4)}/${r.threshold.toFixed(4)}`)}`,
    );
  });

  test("SIGHUP swaps in a new model; a broken bundle keeps the running one", async () => {
    const secondVersion = await trainTinyBundle(work, path.join(work, "model"), 2, SIZE, 0.5);
    assert.notEqual(secondVersion, firstVersion);
    daemon.kill("SIGHUP");
    await waitFor("status with the new model", () => statusOf()?.model_version === secondVersion);
    await writeFile(path.join(work, "model", "manifest.json"), "{ broken");
    daemon.kill("SIGHUP");
    await waitFor("reload failure logged", () =>
      /model reload failed; keeping the running model/.test(daemonLog),
    );
    const t = Date.now();
    await waitFor("results still flowing", () => onTopic("parts/result").some((m) => m.at > t + 500));
    assert.equal(statusOf()?.model_version, secondVersion);
  });

  test("collection saved normal frames for retraining: each file is the very frame judged normal", async () => {
    const { readdir } = await import("node:fs/promises");
    const raw = async (file: string) => {
      const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
      return { data, width: info.width, height: info.height, channels: info.channels };
    };
    const partsDir = path.join(work, "parts");
    const parts = await Promise.all((await readdir(partsDir)).sort().map((f) => raw(path.join(partsDir, f))));
    const dir = path.join(work, "collected", "parts");
    const files = (await readdir(dir)).filter((f) => f.endsWith(".png"));
    assert.ok(files.length > 0, "nothing collected");
    const seqOf = (name: string) => Number(/^parts_\d{8}T\d{9}Z_(\d+)\.png$/.exec(name)?.[1]);
    const judgedNow = () =>
      new Map(
        onTopic("parts/result").map((m) => {
          const r = JSON.parse(m.payload.toString()) as {
            seq: number;
            defective: boolean;
            score: number;
            threshold: number;
          };
          return [r.seq, r];
        }),
      );
    // the daemon still runs: a frame saved just now may have its result still on the way to the subscriber
    for (const name of files)
      assert.ok(Number.isInteger(seqOf(name)), `${name}: named <camera>_<capture time>_<seq>.png`);
    const lastSaved = Math.max(...files.map(seqOf));
    await waitFor("results past the last collected frame", () =>
      [...judgedNow().keys()].some((seq) => seq >= lastSaved),
    );
    const judged = judgedNow();
    // results are not kept while the broker is down (only defect events are, in the outbox), so frames collected
    // during the outage test above have none: those are left out, the others checked, and some must remain
    const checked = files.filter((f) => judged.has(seqOf(f)));
    assert.ok(checked.length > 0, `none of the ${files.length} collected frames has a published result`);
    for (const name of checked) {
      const seq = seqOf(name);
      const result = judged.get(seq)!;
      assert.equal(result.defective, false, `${name}: frame ${seq} was judged defective`);
      assert.ok(
        result.score < result.threshold,
        `${name}: score ${result.score} ≥ threshold ${result.threshold}`,
      );
      // the frame as the camera delivered it: the replayed part's size and every pixel, not a resized, converted,
      // blank or other camera's image
      const saved = await raw(path.join(dir, name));
      assert.deepEqual([saved.width, saved.height, saved.channels], [SIZE, SIZE, 3], name);
      assert.ok(
        parts.some((p) => p.data.equals(saved.data)),
        `${name}: its pixels are none of the replayed parts`,
      );
    }
  });

  test("SIGTERM drains, publishes stopped and exits 0", async () => {
    const exited = new Promise<number | null>((resolve) => daemon.once("exit", (code) => resolve(code)));
    daemon.kill("SIGTERM");
    assert.equal(await exited, 0, daemonLog.slice(-2000));
    const stopped = await waitFor("stopped status", () =>
      statusOf()?.state === "stopped" ? statusOf() : undefined,
    );
    // the final word: cameras stopped (not "starting"), and the outbox as it is after the final flush
    const cams = stopped.cameras as Record<string, { state: string }>;
    assert.deepEqual(
      Object.values(cams).map((c) => c.state),
      Object.keys(cams).map(() => "stopped"),
    );
    assert.equal((stopped.outbox as { queued: number }).queued, 0);
    assert.ok(notifications.some((n) => n.includes("STOPPING=1")));
  });
});
