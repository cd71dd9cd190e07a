import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import mqtt from "mqtt";
import sharp from "sharp";
import { randomTeacher } from "../bundle/random-teacher.js";
import { completeConfig } from "../config/index.js";
import { StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import { Daemon } from "../daemon/daemon.js";
import { encodeModel } from "../onnx/onnx-graph.js";
import { RETRAIN_DEFAULTS, retrain } from "../train/retrain.js";
import { MosquittoBroker } from "./broker.js";
import { type SyntheticPart, synthesizePart } from "./synthetic.js";

export interface DemoOptions {
  teacher: string | undefined;
  workDir: string | undefined;
  trainFrames: number;
  replayFrames: number;
  epochs: number;
  imageSize: number;
  logger: Logger;
  print: (line: string) => void;
}

export interface DemoSummary {
  workDir: string;
  inspected: number;
  defectiveTruth: number;
  flagged: number;
  truePositives: number;
  falsePositives: number;
  defectEventsReceived: number;
  sampleDefectEvent: Record<string, unknown> | undefined;
}

const PREFIX = "stpmd";

async function writePng(file: string, part: SyntheticPart): Promise<void> {
  await sharp(part.rgb, { raw: { width: part.width, height: part.height, channels: 3 } })
    .png()
    .toFile(file);
}

/** Every third replay frame is defective, alternating scratch and blob. */
function replayDefect(i: number): SyntheticPart["defect"] {
  if (i % 3 !== 2) return "none";
  return i % 2 === 0 ? "scratch" : "blob";
}

/**
 * The whole chain on generated data: synthetic parts → retrain → mosquitto on loopback → daemon replaying a folder
 * as a GStreamer camera → MQTT subscriber printing what arrives.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const { print, logger } = opts;
  const work = opts.workDir ?? (await mkdtemp(path.join(os.tmpdir(), "stpmd-demo-")));
  const trainDir = path.join(work, "frames");
  const replayDir = path.join(work, "replay");
  await mkdir(trainDir, { recursive: true });
  await mkdir(replayDir, { recursive: true });
  const fileSize = 256;
  print(`demo: working in ${work}`);
  for (let i = 0; i < opts.trainFrames; i++) {
    await writePng(
      path.join(trainDir, `part_${String(i).padStart(3, "0")}.png`),
      synthesizePart(fileSize, 1000 + i, "none"),
    );
  }
  const truth: SyntheticPart["defect"][] = [];
  for (let i = 0; i < opts.replayFrames; i++) {
    truth.push(replayDefect(i));
    await writePng(
      path.join(replayDir, `${String(i).padStart(3, "0")}.png`),
      synthesizePart(fileSize, 5000 + i, truth[i]!),
    );
  }
  print(
    `demo: generated ${opts.trainFrames} normal training parts and ${opts.replayFrames} replay parts (${truth.filter((t) => t !== "none").length} defective)`,
  );

  let teacherFile = opts.teacher;
  if (!teacherFile) {
    teacherFile = path.join(work, "random-teacher.onnx");
    await writeFile(teacherFile, encodeModel(randomTeacher(1, 16)));
    print(
      "demo: WARNING no --teacher or STPMD_TEACHER given: using a RANDOMLY INITIALISED teacher. " +
        "Detection quality is then NOT representative; pass an ImageNet-trained teacher ONNX for real results.",
    );
  }
  const bundleDir = path.join(work, "model");
  print(
    `demo: retraining a student (${opts.epochs} epochs, ${opts.imageSize}×${opts.imageSize}) on ${teacherFile}`,
  );
  const trained = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: trainDir,
    teacherFile,
    outDir: bundleDir,
    epochs: opts.epochs,
    imageSize: opts.imageSize,
    batchSize: 8,
    logger,
    progress: false,
  });
  print(
    `demo: model ${trained.manifest.model_version}, threshold ${trained.manifest.threshold.toPrecision(4)}, ${trained.wallTimeS.toFixed(1)} s`,
  );

  let broker: MosquittoBroker;
  try {
    broker = await MosquittoBroker.start();
  } catch (err) {
    throw new StpmdError(
      "ERR_INPUT_MISSING",
      `cannot start mosquitto for the demo (install Debian's mosquitto): ${String(err)}`,
    );
  }
  print(
    `demo: mosquitto listening on ${broker.url}; watch with: mosquitto_sub -h 127.0.0.1 -p ${broker.port} -t '${PREFIX}/#' -v`,
  );
  const received: { topic: string; payload: Buffer }[] = [];
  const sub = await mqtt.connectAsync(broker.url, { clientId: "stpmd-demo-subscriber" });
  sub.on("message", (topic, payload) => received.push({ topic, payload }));
  await sub.subscribeAsync(`${PREFIX}/#`, { qos: 1 });

  const config = completeConfig({
    model: { bundle: bundleDir, watch: false },
    inference: { max_batch: 4, queue_size: 64 },
    cameras: [
      {
        id: "demo_line",
        source: `multifilesrc location=${replayDir}/%03d.png index=0 caps=image/png,framerate=8/1 ! pngdec ! identity sync=true`,
        restart_backoff: { max_ms: 5000 },
      },
    ],
    mqtt: {
      url: broker.url,
      client_id: "stpmd-demo",
      prefix: PREFIX,
      reconnect_period_ms: 500,
      status_interval_s: 2,
      outbox: { dir: path.join(work, "outbox"), max_messages: 1000, max_bytes: 64 * 1024 * 1024 },
    },
    collection: { dir: path.join(work, "collected") },
    log: { level: "warn" },
    health: { watchdog: false },
  });
  const firstPass: InspectionResult[] = [];
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  const daemon = new Daemon(config, logger, {
    hooks: {
      onResult: (r) => {
        if (r.frame.seq < opts.replayFrames) firstPass.push(r);
        if (firstPass.length >= opts.replayFrames) resolveDone();
      },
    },
  });
  await daemon.start();
  const timeout = setTimeout(resolveDone, 120_000);
  await done;
  clearTimeout(timeout);
  await daemon.stop();
  await new Promise((r) => setTimeout(r, 300));
  await sub.endAsync();
  await broker.close();

  print("");
  print(" seq | truth   | score      | verdict   | regions");
  let tp = 0;
  let fp = 0;
  for (const r of firstPass.sort((a, b) => a.frame.seq - b.frame.seq)) {
    const t = truth[r.frame.seq] ?? "none";
    if (r.verdict === "defect" && t !== "none") tp += 1;
    if (r.verdict === "defect" && t === "none") fp += 1;
    print(
      ` ${String(r.frame.seq).padStart(3)} | ${t.padEnd(7)} | ${r.score.toExponential(3).padStart(10)} | ${(r.verdict === "ok" ? "ok" : r.verdict.toUpperCase()).padEnd(9)} | ${r.regions.length}`,
    );
  }
  const defects = received.filter((m) => m.topic.endsWith("/defect"));
  const sample = defects[0]
    ? (JSON.parse(defects[0].payload.toString()) as Record<string, unknown>)
    : undefined;
  const topics = [...new Set(received.map((m) => m.topic))].sort();
  print("");
  print(`demo: MQTT topics seen: ${topics.join(", ")}`);
  const firstOn = (suffix: string) => received.find((m) => m.topic.endsWith(suffix));
  const result = firstOn("/result");
  if (result) print(`demo: example ${result.topic}: ${result.payload.toString()}`);
  // the last status before `stopped` shows the running figures
  const status = received.filter((m) => m.topic.endsWith("/status") && m.payload.includes('"online"')).at(-1);
  if (status) print(`demo: example ${status.topic}: ${status.payload.toString()}`);
  if (sample) print(`demo: example ${defects[0]!.topic}: ${JSON.stringify(sample)}`);
  const snap = firstOn("/snapshot");
  if (snap) print(`demo: example ${snap.topic}: <JPEG, ${snap.payload.length} bytes, retained>`);
  const defectiveTruth = truth.filter((t) => t !== "none").length;
  print(
    `demo: ${firstPass.length} frames inspected, ${firstPass.filter((r) => r.verdict === "defect").length} flagged ` +
      `(${tp}/${defectiveTruth} defective parts caught, ${fp} false alarms), ${defects.length} defect events received`,
  );
  return {
    workDir: work,
    inspected: firstPass.length,
    defectiveTruth,
    flagged: firstPass.filter((r) => r.verdict === "defect").length,
    truePositives: tp,
    falsePositives: fp,
    defectEventsReceived: defects.length,
    sampleDefectEvent: sample,
  };
}
