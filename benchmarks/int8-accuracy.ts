/**
 * Accuracy of the int8 bundle against its float original on MVTec bottle: `stpmd quantize`'s implementation
 * (quantizeBundle) writes int8 bundles with min/max and percentile calibration, then `stpmd eval` scores each.
 *
 *   node dist/benchmarks/int8-accuracy.js [--model out/models/bottle]
 *
 * Writes benchmarks/results/int8-accuracy.json and .md; the int8 bundles go next to the float one
 * (<model>-int8, <model>-int8-p9999).
 */
import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { createLogger } from "../src/core/log.js";
import type { EvalReport } from "../src/eval/evaluate.js";
import { CALIBRATION_DEFAULTS, quantizeBundle } from "../src/train/quantize.js";
import { fmt, machineInfo, machineState, writeResults } from "./common.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");
const BOTTLE = path.join(SHARED, "data/mvtec_ad/bottle");

async function evaluateWithCli(model: string): Promise<EvalReport> {
  const json = path.join(os.tmpdir(), `stpmd-eval-${process.pid}-${path.basename(model)}.json`);
  await promisify(execFile)(
    process.execPath,
    [path.join(REPO, "dist/src/main.cjs"), "eval", "--model", model, "--data", BOTTLE, "--json", json],
    {
      env: { ...process.env, STPMD_LOG_LEVEL: "warn" },
    },
  );
  try {
    return JSON.parse(await readFile(json, "utf8")) as EvalReport;
  } finally {
    await rm(json, { force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { model: { type: "string", default: path.join(REPO, "out/models/bottle") } },
  });
  const fp32 = path.resolve(values.model);
  const logger = createLogger("warn");
  const before = await machineState();
  const variants = [
    { name: "int8 min/max", dir: `${fp32}-int8`, calibration: CALIBRATION_DEFAULTS },
    {
      name: "int8 percentile 99.99",
      dir: `${fp32}-int8-p9999`,
      calibration: { ...CALIBRATION_DEFAULTS, method: "percentile" as const },
    },
  ];
  const rows: Record<string, unknown>[] = [{ name: "fp32", dir: fp32, eval: await evaluateWithCli(fp32) }];
  for (const v of variants) {
    process.stderr.write(`[bench] quantizing ${v.name}\n`);
    const s = await quantizeBundle({
      modelDir: fp32,
      framesDir: path.join(BOTTLE, "train/good"),
      outDir: v.dir,
      calibrationImages: 32,
      calibration: v.calibration,
      outputs: "quantized",
      logger,
    });
    process.stderr.write(`[bench] evaluating ${v.name}\n`);
    rows.push({
      name: v.name,
      dir: v.dir,
      threshold_source: s.thresholdSource,
      quantize_seconds: s.seconds,
      teacher_ops: s.teacherOps,
      eval: await evaluateWithCli(v.dir),
    });
  }
  const report = {
    benchmark: "int8 vs fp32 accuracy, MVTec AD bottle",
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
    rows,
  };
  const lines = [
    "# int8 vs fp32 on MVTec AD bottle",
    "",
    "Calibration: 32 images from bottle train/good; threshold of each int8 bundle re-derived from int8 scores of the float bundle's held-out images (same mean + k·std rule).",
    "",
    "| bundle | image AUROC | pixel AUROC | AUPRO | image F1-max | FP / FN at own threshold | eval s |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...rows.map((r) => {
      const e = r.eval as EvalReport;
      return `| ${r.name} | ${fmt(e.image_auroc, 4)} | ${fmt(e.pixel_auroc, 4)} | ${fmt(e.aupro, 4)} | ${fmt(e.image_f1_max, 4)} | ${e.at_threshold.false_positive} / ${e.at_threshold.false_negative} | ${fmt(e.seconds, 1)} |`;
    }),
    "",
    `Load before: \`${before.uptime}\`, after: \`${report.load_after.uptime}\`.`,
    "",
  ];
  await writeResults("int8-accuracy", report, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
