#!/usr/bin/env node
import { createWriteStream } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { configProblemsError, formatConfigSummary, loadConfig } from "../config/index.js";
import { errorMessage, isStpmdError, StpmdError } from "../core/errors.js";
import { createLogger, type Logger } from "../core/log.js";
import { type NumberRule, numberProblem } from "../core/number-rule.js";
import { Daemon } from "../daemon/daemon.js";
import { runDoctor } from "../daemon/doctor.js";
import { handleSignals } from "../daemon/signals.js";
import { startupProblems } from "../daemon/startup-checks.js";
import { runDemo } from "../demo/demo.js";
import { evaluate } from "../eval/evaluate.js";
import { REPORT_DEFAULTS } from "../eval/report.js";
import { formatEvalSummary } from "../eval/summary.js";
import { openRecordsDb, RECORDS_DB } from "../publish/record-store.js";
import { type ExportFormat, exportRecords, pointInTime } from "../publish/records-export-format.js";
import { parseImageSize, parseRoi } from "../stpm/geometry.js";
import { DEFAULT_PART_SCORE, describePartScore, PART_SCORE_AGGREGATIONS } from "../stpm/part-score.js";
import { describeFalseAlarms } from "../stpm/threshold.js";
import { CALIBRATION_DEFAULTS, formatQuantizeSummary, quantizeBundle } from "../train/quantize.js";
import { RETRAIN_DEFAULTS, RETRAIN_RULES, retrain } from "../train/retrain.js";
import { exportAudit } from "./audit-export.js";
import { describeJobEnd, retrainCandidate } from "./retrain-candidate.js";

/** How long `stpmd run` waits for a clean shutdown before it exits anyway (systemd kills at 20 s). */
const STOP_DEADLINE_MS = 15_000;

/** A parser for a numeric option that refuses, in the rule's words, what `rule` refuses. */
function ruleOption(rule: NumberRule): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    const problem = numberProblem(rule, n);
    if (problem) throw new InvalidArgumentError(`${rule.flag} ${problem}`);
    return n;
  };
}

function intOption(flag: string, min: number): (v: string) => number {
  return ruleOption({ flag, integer: true, min });
}

/** Wraps a parser that throws StpmdError so that commander reports its message as the option's error. */
function parsed<T>(parse: (v: string) => T): (v: string) => T {
  return (v: string) => {
    try {
      return parse(v);
    } catch (err) {
      throw new InvalidArgumentError(errorMessage(err));
    }
  };
}

function numberOption(flag: string, min: number): (v: string) => number {
  return ruleOption({ flag, min });
}

const program = new Command()
  .name("stpmd")
  .description(
    "Always-on STPM visual inspection: GStreamer cameras → ONNX Runtime teacher–student anomaly maps → MQTT defect events.",
  )
  .showHelpAfterError("(run with --help for usage)");

program
  .command("retrain")
  .description(
    "Distil a new student from normal (defect-free) images and write a model bundle (teacher + student ONNX + manifest). " +
      "20% of the images are held out (seeded) to pick the best epoch and set the threshold.",
  )
  .option(
    "--frames <dir>",
    "folder of normal images (png, jpg, tif, webp); unreadable files are skipped and counted (required without --candidate)",
  )
  .option(
    "--teacher <file.onnx>",
    "ImageNet-pretrained pyramid teacher ONNX (one N×3×H×W input, three feature outputs) (required without --candidate)",
  )
  .option(
    "--out <dir>",
    "bundle directory to write; replaced atomically, an interrupted run leaves the old one intact (required without --candidate)",
  )
  .option(
    "--candidate",
    "run the daemon's retrain job for --camera of --config in the foreground: its collected frames, its live bundle's geometry and teacher, candidates.retrain's settings, written to its candidate folder (docs/candidates.md)",
  )
  .option("--camera <id>", "with --candidate: the camera whose candidate to train")
  .option("-c, --config <file>", "with --candidate: the daemon's config file")
  .option(
    "--epochs <n>",
    "most training epochs (the ceiling; convergence normally ends a run sooner)",
    ruleOption(RETRAIN_RULES.epochs),
    RETRAIN_DEFAULTS.epochs,
  )
  .option(
    "--patience <n>",
    "window (epochs) over which convergence is judged; 0 = no early stop, run to --epochs or --time-budget",
    ruleOption(RETRAIN_RULES.patience),
    RETRAIN_DEFAULTS.patience,
  )
  .option(
    "--min-delta <x>",
    "stop once the best mean validation score improves by less than this per epoch over the window (0.05 = 5%)",
    ruleOption(RETRAIN_RULES.minDelta),
    RETRAIN_DEFAULTS.minDelta,
  )
  .option(
    "--min-epochs <n>",
    "never stop early before this epoch",
    ruleOption(RETRAIN_RULES.minEpochs),
    RETRAIN_DEFAULTS.minEpochs,
  )
  .option(
    "--time-budget <minutes>",
    "most minutes the whole retrain may take (no epoch starts that would end past it); default: none",
    ruleOption(RETRAIN_RULES.timeBudgetMin),
  )
  .option(
    "--low-memory",
    "return the training step's memory after every step (same student; 256x640: ~0.9 GB lower peak, ~28% more CPU per step)",
  )
  .option(
    "--batch-size <n>",
    "images per SGD step",
    ruleOption(RETRAIN_RULES.batchSize),
    RETRAIN_DEFAULTS.batchSize,
  )
  .option("--lr <x>", "SGD learning rate", ruleOption(RETRAIN_RULES.lr), RETRAIN_DEFAULTS.lr)
  .option("--momentum <x>", "SGD momentum", ruleOption(RETRAIN_RULES.momentum), RETRAIN_DEFAULTS.momentum)
  .option(
    "--weight-decay <x>",
    "SGD L2 weight decay",
    ruleOption(RETRAIN_RULES.weightDecay),
    RETRAIN_DEFAULTS.weightDecay,
  )
  .addOption(
    new Option(
      "--image-size <n|WxH>",
      "model input: N for N×N or WIDTHxHEIGHT (e.g. 256x640, to keep a frame's aspect), multiples of 16",
    )
      .argParser(parsed((v) => parseImageSize(v)))
      // shown as the user writes it, not as the parsed {width, height}
      .default(parseImageSize(String(RETRAIN_DEFAULTS.imageSize)), String(RETRAIN_DEFAULTS.imageSize)),
  )
  .option(
    "--roi <x,y,w,h>",
    "crop every image to this rectangle (source pixels) first",
    parsed((v) => parseRoi(v)),
  )
  .option(
    "--tile <n>",
    "tile mode: cut the (ROI of the) image, resized by --scale, into N×N tiles; the student learns the tiles",
    ruleOption(RETRAIN_RULES.tile),
  )
  .option(
    "--tile-overlap <px>",
    "overlap of neighbouring tiles in pixels (tile mode)",
    ruleOption(RETRAIN_RULES.tileOverlap),
    RETRAIN_DEFAULTS.tileOverlap,
  )
  .option(
    "--scale <f>",
    "tile mode: resize factor before tiling (1 = native resolution)",
    ruleOption(RETRAIN_RULES.scale),
    RETRAIN_DEFAULTS.scale,
  )
  .option(
    "--margin <px>",
    "context margin: model-input pixels fed around the inspected area (reflected at the frame's edge, a tile's neighbours at seams) and cropped from the map; a multiple of 8",
    ruleOption(RETRAIN_RULES.margin),
    RETRAIN_DEFAULTS.margin,
  )
  .option(
    "--seed <n>",
    "seed for initialisation, split and batch order",
    ruleOption(RETRAIN_RULES.seed),
    RETRAIN_DEFAULTS.seed,
  )
  .option(
    "--val-fraction <x>",
    "share of images held out for validation",
    ruleOption(RETRAIN_RULES.valFraction),
    RETRAIN_DEFAULTS.valFraction,
  )
  .option(
    "--threshold-sigma <x>",
    "threshold = mean + k·std of validation image scores",
    ruleOption(RETRAIN_RULES.thresholdSigma),
    RETRAIN_DEFAULTS.thresholdSigma,
  )
  .addOption(
    new Option(
      "--part-score <aggregation>",
      "how an image's anomaly map becomes its score: max, smoothed_max (max after a σ = 4 px Gaussian blur) or top_k_mean (mean of the largest 1 % of the map)",
    )
      .choices(PART_SCORE_AGGREGATIONS)
      .default(DEFAULT_PART_SCORE),
  )
  .option(
    "--threads <n>",
    "ONNX Runtime threads of every session the retrain runs; default: one per core (1 leaves the other cores to a running daemon)",
    ruleOption(RETRAIN_RULES.threads),
  )
  .option("--no-progress", "no progress bar (per-epoch log lines still go to stderr)")
  .action(async (o, command: Command) => {
    const logger = createLogger();
    if (o.candidate) {
      if (o.camera === undefined || o.config === undefined) {
        command.error("error: --candidate needs --camera <id> and --config <file>");
      }
      const end = await retrainCandidate(o.config, o.camera, logger);
      const dir = path.join(loadConfig(o.config).candidates.dir, o.camera, "candidate");
      console.log(describeJobEnd(end, dir));
      if (end.state !== "done") process.exitCode = 1;
      return;
    }
    for (const [key, flag] of [
      ["frames", "--frames <dir>"],
      ["teacher", "--teacher <file.onnx>"],
      ["out", "--out <dir>"],
    ] as const) {
      if (o[key] === undefined) command.error(`error: required option '${flag}' not specified`);
    }
    const s = await retrain({
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      partScore: o.partScore,
      framesDir: o.frames,
      teacherFile: o.teacher,
      outDir: o.out,
      epochs: o.epochs,
      batchSize: o.batchSize,
      lr: o.lr,
      momentum: o.momentum,
      weightDecay: o.weightDecay,
      imageSize: o.imageSize,
      ...(o.roi ? { roi: o.roi } : {}),
      ...(o.tile ? { tile: { size: o.tile, overlap: o.tileOverlap, scale: o.scale } } : {}),
      margin: o.margin,
      seed: o.seed,
      valFraction: o.valFraction,
      thresholdSigma: o.thresholdSigma,
      patience: o.patience,
      minDelta: o.minDelta,
      minEpochs: o.minEpochs,
      ...(o.timeBudget !== undefined ? { timeBudgetMin: o.timeBudget } : {}),
      ...(o.lowMemory ? { lowMemory: true } : {}),
      logger,
      progress: o.progress,
    });
    console.log(
      `retrain done: bundle ${o.out} (model ${s.manifest.model_version}), ${s.trainImages} train / ${s.valImages} val images, ` +
        `${s.skippedFiles.length} skipped, ${s.epochsRun} epochs (${s.stoppedReason}), best epoch ${s.bestEpoch}, threshold ${s.manifest.threshold.toPrecision(4)} ` +
        `on ${describePartScore(s.manifest.score ?? { aggregation: "max" })} ` +
        `(${describeFalseAlarms(s.predictedFalseAlarms)}), ` +
        `${s.wallTimeS.toFixed(0)} s (${s.secondsPerEpoch.toFixed(1)} s/epoch)`,
    );
    // a ceiling or budget that cut a still-falling curve: the user can give it more
    if (s.stop.note) {
      const more = s.stop.cause === "time budget" ? "raise --time-budget" : "raise --epochs";
      console.log(`${s.stop.note} (stopped on the ${s.stop.cause}: ${more})`);
    }
  });

program
  .command("eval")
  .description(
    "Evaluate a bundle on an MVTec AD test split: image AUROC, pixel AUROC, AUPRO (FPR ≤ 0.3), image F1-max; parts " +
      "caught and false alarms at the bundle's threshold and at 1 % and 0.1 % false alarms, with bootstrap intervals; " +
      "a per-defect-type breakdown; optionally an HTML report.",
  )
  .requiredOption("--model <dir>", "model bundle directory")
  .requiredOption("--data <dir>", "MVTec AD category folder (with test/ and ground_truth/)")
  .option(
    "--roi <x,y,w,h>",
    "crop images and masks to this rectangle (source pixels); default: the ROI the bundle was trained on",
    parsed((v) => parseRoi(v)),
  )
  .option(
    "--threshold <x>",
    "judge parts at this image-score threshold instead of the bundle's own",
    (v: string) => {
      const n = Number(v);
      if (!(n > 0 && Number.isFinite(n))) throw new InvalidArgumentError("--threshold must be a number > 0");
      return n;
    },
  )
  .option("--json <file>", "also write the report as JSON to this file ('-' for stdout)")
  .option(
    "--report <dir>",
    "write an HTML report (histogram, worst false alarms and misses with their heatmaps) to this folder; replaced whole",
  )
  .option(
    "--report-images <n>",
    "most parts shown in each of the report's two galleries",
    intOption("--report-images", 1),
    REPORT_DEFAULTS.images,
  )
  .action(async (o) => {
    const logger = createLogger();
    const r = await evaluate(o.model, o.data, logger, {
      ...(o.roi ? { roi: o.roi } : {}),
      ...(o.threshold !== undefined ? { threshold: o.threshold } : {}),
      ...(o.report ? { report: { dir: o.report, images: o.reportImages } } : {}),
    });
    const json = `${JSON.stringify(r, null, 2)}\n`;
    if (o.json === "-") process.stdout.write(json);
    else if (o.json) await writeFile(o.json, json);
    if (o.json !== "-") console.log(formatEvalSummary(r).join("\n"));
  });

program
  .command("quantize")
  .description(
    "Write an int8 copy of a model bundle: static QDQ quantization calibrated on normal frames, run by ONNX Runtime " +
      "with integer kernels. The threshold is re-derived from int8 scores of the bundle's held-out images.",
  )
  .requiredOption("--model <dir>", "float model bundle to quantize")
  .requiredOption("--frames <dir>", "folder of normal images to calibrate the activation ranges on")
  .requiredOption("--out <dir>", "int8 bundle directory to write; replaced atomically")
  .option(
    "--calibration-images <n>",
    "calibration images, spread evenly over the folder",
    intOption("--calibration-images", 1),
    32,
  )
  .addOption(
    new Option("--calibration <method>", "activation ranges: exact min/max or a percentile")
      .choices(["minmax", "percentile"])
      .default("minmax"),
  )
  .option(
    "--percentile <p>",
    "upper percentile kept with --calibration percentile",
    numberOption("--percentile", 50),
    99.99,
  )
  .option("--float-outputs", "keep the three feature outputs in float (marginally more exact, slower)")
  .action(async (o) => {
    const logger = createLogger();
    const s = await quantizeBundle({
      modelDir: o.model,
      framesDir: o.frames,
      outDir: o.out,
      calibrationImages: o.calibrationImages,
      calibration: { ...CALIBRATION_DEFAULTS, method: o.calibration, percentile: o.percentile },
      outputs: o.floatOutputs ? "float" : "quantized",
      logger,
    });
    console.log(formatQuantizeSummary(s, o.out));
  });

program
  .command("check-config")
  .description(
    "Validate a daemon config file as `run` would at start (the file, its state directories, the model bundle, " +
      "each camera's GStreamer description) and print a summary; lists every problem with its key and line.",
  )
  .argument("<file>", "YAML or JSON config file")
  .action(async (file: string) => {
    const config = loadConfig(file);
    const problems = await startupProblems(config);
    if (problems.length > 0) throw configProblemsError(config, problems);
    console.log(formatConfigSummary(config));
  });

program
  .command("run")
  .description(
    "Run the inspection daemon: cameras → batched inference → MQTT. SIGTERM drains and exits 0; SIGHUP re-reads the config file and reloads changed models.",
  )
  .requiredOption("-c, --config <file>", "YAML or JSON config file (see config/example.yaml)")
  .action(async (o) => {
    const config = loadConfig(o.config);
    const logger = createLogger(config.log.level);
    const daemon = new Daemon(config, logger, { configPath: o.config });
    // Signals are handled from before start-up, so before anything is announced (READY=1, an output): without a
    // handler a SIGHUP or SIGTERM ends the process at once (status 129 or 143), and systemd sends either whenever
    // it is asked to (those that came while the modules loaded were held: daemon/signals.ts). A reload asked for
    // during start-up runs once started; a stop ends start-up after its step in progress and stops what was
    // started.
    const stopped = handleDaemonSignals(daemon, logger);
    await daemon.start();
    await stopped;
    process.exit();
  });

/**
 * Reloads on SIGHUP; stops the daemon on the first SIGTERM or SIGINT (a second one must not start a second
 * shutdown) and resolves once stopped, or after {@link STOP_DEADLINE_MS} with exit code 1.
 */
function handleDaemonSignals(daemon: Daemon, logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping");
      // Within systemd's TimeoutStopSec (20 s in deploy/): exiting on its own, the daemon can still say where it
      // was stuck; what the outbox holds is on disk for the next start either way.
      const deadline = setTimeout(() => {
        logger.error(
          { step: daemon.stopStep },
          `shutdown did not finish within ${STOP_DEADLINE_MS / 1000} s (still ${daemon.stopStep}); exiting anyway, undelivered events stay in the outbox`,
        );
        process.exitCode = 1;
        resolve();
      }, STOP_DEADLINE_MS);
      daemon
        .stop()
        .catch((err) => {
          logger.error({ err }, "error while stopping");
          process.exitCode = 1;
        })
        .finally(() => {
          clearTimeout(deadline);
          resolve();
        });
    };
    handleSignals({
      SIGTERM: () => stop("SIGTERM"),
      SIGINT: () => stop("SIGINT"),
      SIGHUP: () => {
        daemon.reload({ via: "sighup" }).catch(() => undefined);
      },
    });
  });
}

program
  .command("demo")
  .description(
    "See it work in minutes: generates parts (some defective), retrains a student, starts mosquitto on loopback, " +
      "replays the parts as a GStreamer camera through the daemon and prints the MQTT events received.",
  )
  .option(
    "--teacher <file.onnx>",
    "teacher ONNX (default: $STPMD_TEACHER; without one a random teacher is used)",
  )
  .option(
    "--work-dir <dir>",
    "where to put generated frames, the bundle and the outbox (default: a new temp dir)",
  )
  .option("--train-frames <n>", "normal parts to train on", intOption("--train-frames", 4), 40)
  .option("--replay-frames <n>", "parts replayed through the camera", intOption("--replay-frames", 3), 12)
  .option("--epochs <n>", "retrain epochs", intOption("--epochs", 1), 15)
  .option("--image-size <n>", "model input size", intOption("--image-size", 32), 128)
  .action(async (o) => {
    const logger = createLogger("warn");
    await runDemo({
      teacher: o.teacher ?? process.env.STPMD_TEACHER,
      workDir: o.workDir,
      trainFrames: o.trainFrames,
      replayFrames: o.replayFrames,
      epochs: o.epochs,
      imageSize: o.imageSize,
      logger,
      print: (line) => console.log(line),
    });
    process.exit();
  });

program
  .command("doctor")
  .description(
    "Report the ONNX Runtime install and, for cpu, cuda, tensorrt and webgpu, whether a session can be created (and why not); " +
      "with --config also time the configured bundle on each working provider. Exit code 0 iff the first configured " +
      "provider works (without --config: iff the CPU works), else 1.",
  )
  .option("--config <file>", "config file (YAML or JSON) whose providers and bundle to check")
  .option("--seconds <x>", "seconds each timed batch size runs for", numberOption("--seconds", 0.1), 1)
  .action(async (o) => {
    const report = await runDoctor({ configFile: o.config, benchSeconds: o.seconds });
    for (const line of report.lines) console.log(line);
    process.exitCode = report.exitCode;
  });

const records = program
  .command("records")
  .description("The part record: every inspected frame (docs/records.md).");

records
  .command("export")
  .description(
    "Write the part record of a time range as CSV or JSON lines, oldest first, to stdout or --out. Reads the " +
      "database read-only: safe while the daemon runs (over SSH: `ssh box stpmd records export --since 8h --csv > shift.csv`).",
  )
  .requiredOption(
    "--since <time>",
    "start: ISO 8601 (2026-12-06T06:00:00Z) or a duration back from now (30m, 8h, 7d)",
  )
  .option("--until <time>", "end (exclusive), as --since; default now")
  .option("--camera <id>", "only this camera")
  .option("--csv", "CSV with a header row (regions as JSON in one column)")
  .option("--jsonl", "one JSON object per line")
  .option("-c, --config <file>", "the daemon's config file, for records.dir")
  .option("--dir <dir>", "the records directory (instead of --config)")
  .option("--out <file>", "write here instead of stdout")
  .action(async (o) => {
    if (Boolean(o.csv) === Boolean(o.jsonl)) {
      throw new StpmdError("ERR_OPTION_INVALID", "records export: give exactly one of --csv and --jsonl");
    }
    if ((o.config === undefined) === (o.dir === undefined)) {
      throw new StpmdError("ERR_OPTION_INVALID", "records export: give exactly one of --config and --dir");
    }
    const dir: string = o.dir ?? loadConfig(o.config).records.dir;
    const from = pointInTime("--since", o.since);
    const to = o.until !== undefined ? pointInTime("--until", o.until) : undefined;
    const file = path.join(dir, RECORDS_DB);
    let db: ReturnType<typeof openRecordsDb>;
    try {
      db = openRecordsDb(file, { readonly: true });
    } catch (err) {
      throw new StpmdError("ERR_INPUT_MISSING", `records export: cannot read ${file}: ${errorMessage(err)}`);
    }
    const out = o.out !== undefined ? createWriteStream(o.out) : process.stdout;
    const format: ExportFormat = o.csv ? "csv" : "jsonl";
    const count = await exportRecords(
      db,
      { from, ...(to !== undefined ? { to } : {}), camera: o.camera },
      format,
      out,
    );
    db.close();
    if (o.out !== undefined) {
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
    }
    process.stderr.write(`stpmd: exported ${count} records${o.out !== undefined ? ` to ${o.out}` : ""}\n`);
  });

const audit = program
  .command("audit")
  .description("The audit log: every state change, who asked and how (docs/audit.md).");

audit
  .command("export")
  .description(
    "Write the audit log of a time range as CSV or JSON lines, oldest first, read across its rotated files, to " +
      "stdout or --out. Only reads: safe while the daemon runs (`ssh box stpmd audit export --since 7d --csv > audit.csv`).",
  )
  .requiredOption(
    "--since <time>",
    "start: ISO 8601 (2026-12-06T06:00:00Z) or a duration back from now (30m, 8h, 7d)",
  )
  .option("--until <time>", "end (exclusive), as --since; default now")
  .option("--user <name>", "only changes asked for by this user")
  .option("--action <action>", "only this action (set_threshold, enable_camera, reload, label, …)")
  .option("--camera <id>", "only this camera")
  .option("--csv", "CSV with a header row (before and after as JSON)")
  .option("--jsonl", "one JSON object per line, as the log stores it")
  .option("-c, --config <file>", "the daemon's config file, for audit.file and audit.keep")
  .option("--file <file>", "the audit log (instead of --config); its rotated files <file>.1 … are read too")
  .option("--out <file>", "write here instead of stdout")
  .action(async (o) => {
    if (Boolean(o.csv) === Boolean(o.jsonl)) {
      throw new StpmdError("ERR_OPTION_INVALID", "audit export: give exactly one of --csv and --jsonl");
    }
    if ((o.config === undefined) === (o.file === undefined)) {
      throw new StpmdError("ERR_OPTION_INVALID", "audit export: give exactly one of --config and --file");
    }
    // without the config, every rotated file there may be is read (a missing one is no entry)
    const log =
      o.file !== undefined
        ? { file: o.file as string, keep: 99 }
        : (({ file, keep }) => ({ file, keep }))(loadConfig(o.config).audit);
    const since = pointInTime("--since", o.since);
    const until = o.until !== undefined ? pointInTime("--until", o.until) : undefined;
    const out = o.out !== undefined ? createWriteStream(o.out) : process.stdout;
    let result: Awaited<ReturnType<typeof exportAudit>>;
    try {
      result = await exportAudit(
        log,
        {
          since,
          ...(until !== undefined ? { until } : {}),
          ...(o.user !== undefined ? { user: o.user } : {}),
          ...(o.action !== undefined ? { action: o.action } : {}),
          ...(o.camera !== undefined ? { camera: o.camera } : {}),
        },
        o.csv ? "csv" : "jsonl",
        out,
      );
    } catch (err) {
      throw new StpmdError("ERR_INPUT_MISSING", `audit export: ${errorMessage(err)}`);
    }
    if (o.out !== undefined) {
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
    }
    for (const { file, line } of result.skipped) {
      process.stderr.write(
        `stpmd: warning: audit log ${file}: line ${line} is not an entry (torn by a power cut or corrupted); skipped\n`,
      );
    }
    process.stderr.write(
      `stpmd: exported ${result.count} audit entries${o.out !== undefined ? ` to ${o.out}` : ""}\n`,
    );
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // user errors: one line, no stack; anything else: one line plus how to see the stack
  if (isStpmdError(err)) {
    process.stderr.write(`stpmd: ${err.message} [${err.code}]\n`);
  } else {
    process.stderr.write(`stpmd: unexpected error: ${errorMessage(err)}\n`);
    if (process.env.STPMD_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
  }
  // Exit now rather than when the event loop empties: a failure after start-up began (an inference thread, a
  // GStreamer pipeline, timers) would otherwise keep the process alive without serving anything.
  process.exit(1);
}
