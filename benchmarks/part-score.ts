/**
 * The part's score from its anomaly map (issue 19, item 2), measured on trained bundles: for each aggregation of
 * src/stpm/part-score.ts, the image AUROC on the test split, the parts caught and false alarms at a threshold made
 * from that aggregation's own validation scores (the bundle's rule, mean + 3·std, and the largest validation score),
 * the predicted false-alarm rate of that threshold, and the per-frame cost of the aggregation (median over the
 * bundle's test maps, and on a stitched 1920×1080 tile-mode map).
 *
 *   node dist/benchmarks/part-score.js --case bottle=out/models/bottle:../shared/data/mvtec_ad/bottle \
 *     [--case NAME=BUNDLE:DATA …] [--out part-score]
 *
 * Every case re-splits the bundle's own frames folder with its seed and val_fraction (src/stpm/split.ts), so the
 * validation images are exactly the ones retrain held out. Maps are computed once per image (the graph's output);
 * aggregations are applied to the same maps, so the differences are the aggregation's alone.
 * Writes benchmarks/results/<out>.json and .md.
 */
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { bundleGeometry, loadBundle, scoringOptions } from "../src/bundle/bundle.js";
import { createLogger } from "../src/core/log.js";
import { listImages, loadRgb } from "../src/data/images.js";
import { listMvtecTest } from "../src/data/mvtec.js";
import { auroc } from "../src/eval/metrics.js";
import type { Geometry } from "../src/stpm/geometry.js";
import { scoreImages } from "../src/stpm/image-scoring.js";
import { describePartScore, type PartScore, partScore } from "../src/stpm/part-score.js";
import { Scorer } from "../src/stpm/scorer.js";
import { splitTrainVal } from "../src/stpm/split.js";
import { scoreStats } from "../src/stpm/statistics.js";
import { predictedFalseAlarmRate } from "../src/stpm/threshold.js";
import { loadImages } from "../src/train/retrain-data.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

const VARIANTS: PartScore[] = [
  { aggregation: "max" },
  { aggregation: "smoothed_max", sigma: 4 },
  { aggregation: "top_k_mean", k: 0.001 },
  { aggregation: "top_k_mean", k: 0.005 },
  { aggregation: "top_k_mean", k: 0.01 },
  { aggregation: "top_k_mean", k: 0.02 },
  { aggregation: "top_k_mean", k: 0.05 },
];

interface AtThreshold {
  threshold: number;
  caught: number;
  false_alarms: number;
  predicted_rate: number | null;
  predicted_upper95: number | null;
}

interface VariantResult {
  aggregation: string;
  image_auroc: number;
  /** threshold = mean + 3·std of this aggregation's validation scores (retrain's default rule). */
  at_mean_3std: AtThreshold;
  /** threshold = the largest validation score (false_alarm_rate below 1/n). */
  at_val_max: AtThreshold;
  /** Defective parts caught with no false alarm on the test normals (threshold = their largest score). */
  caught_at_zero_test_false_alarms: number;
  cost_ms_median: number;
}

interface CaseResult {
  name: string;
  bundle: string;
  data: string;
  geometry: string;
  map: { width: number; height: number };
  val_images: number;
  test_good: number;
  test_defective: number;
  variants: VariantResult[];
}

async function scoreMaps(scorer: Scorer, images: Uint8Array[], geometry: Geometry): Promise<Float32Array[]> {
  // the maps are views of batch outputs; copy so they outlive them cleanly
  const r = await scoreImages((p, n) => scorer.score(p, n), images, geometry, 8);
  return r.maps.map((m) => Float32Array.from(m));
}

function atThreshold(threshold: number, test: number[], labels: number[], val: number[]): AtThreshold {
  let caught = 0;
  let falseAlarms = 0;
  test.forEach((s, i) => {
    if (!(s > threshold)) return;
    if (labels[i] === 1) caught += 1;
    else falseAlarms += 1;
  });
  const p = predictedFalseAlarmRate(threshold, val);
  return {
    threshold,
    caught,
    false_alarms: falseAlarms,
    predicted_rate: p.rate,
    predicted_upper95: p.upper95,
  };
}

async function runCase(name: string, bundleDir: string, dataDir: string): Promise<CaseResult> {
  const logger = createLogger("silent");
  const bundle = await loadBundle(bundleDir);
  const m = bundle.manifest;
  const geometry = bundleGeometry(m);
  const { width, height } = geometry.capture;
  const training = m.training as { frames_dir: string; seed: number; val_fraction: number };
  const files = await listImages(training.frames_dir);
  const { images } = await loadImages(files, geometry.capture, logger, geometry.roi ?? undefined);
  const { val } = splitTrainVal(images, training.val_fraction, training.seed);
  const samples = await listMvtecTest(dataDir);
  const test = await Promise.all(
    samples.map((s) => loadRgb(s.file, width, height, geometry.roi ?? undefined)),
  );
  const labels = samples.map((s) => s.label);
  const scorer = await Scorer.create(bundle.teacher, bundle.student, scoringOptions(m));
  const valMaps = await scoreMaps(
    scorer,
    val.map((v) => v.rgb),
    geometry,
  );
  const testMaps = await scoreMaps(
    scorer,
    test.map((t) => t.rgb),
    geometry,
  );
  await scorer.release();
  const variants: VariantResult[] = [];
  for (const spec of VARIANTS) {
    const valScores = valMaps.map((map) => partScore(map, width, height, spec));
    const costs: number[] = [];
    const testScores = testMaps.map((map) => {
      const t0 = performance.now();
      const s = partScore(map, width, height, spec);
      costs.push(performance.now() - t0);
      return s;
    });
    const stats = scoreStats(valScores);
    const goodMax = Math.max(...testScores.filter((_, i) => labels[i] === 0));
    variants.push({
      aggregation: describePartScore(spec),
      image_auroc: auroc(testScores, labels),
      at_mean_3std: atThreshold(stats.mean + 3 * stats.std, testScores, labels, valScores),
      at_val_max: atThreshold(stats.max, testScores, labels, valScores),
      caught_at_zero_test_false_alarms: testScores.filter((s, i) => labels[i] === 1 && s > goodMax).length,
      cost_ms_median: median(costs),
    });
    process.stderr.write(`[part-score] ${name} ${describePartScore(spec)} done\n`);
  }
  return {
    name,
    bundle: bundleDir,
    data: dataDir,
    geometry: String(m.training.geometry ?? geometry.mode),
    map: { width, height },
    val_images: val.length,
    test_good: labels.filter((l) => l === 0).length,
    test_defective: labels.filter((l) => l === 1).length,
    variants,
  };
}

/** Per-frame cost on a tile-mode stitched map (1920×1080), where a blur's cost grows with the area. */
function stitchedCost(): { map: string; variants: { aggregation: string; cost_ms_median: number }[] } {
  const width = 1920;
  const height = 1080;
  const map = new Float32Array(width * height);
  for (let i = 0; i < map.length; i++) map[i] = ((i * 2654435761) % 1000) / 1000;
  return {
    map: `${width}×${height}`,
    variants: VARIANTS.map((spec) => {
      const costs: number[] = [];
      for (let r = 0; r < 7; r++) {
        const t0 = performance.now();
        partScore(map, width, height, spec);
        costs.push(performance.now() - t0);
      }
      return { aggregation: describePartScore(spec), cost_ms_median: median(costs) };
    }),
  };
}

function markdown(cases: CaseResult[], stitched: ReturnType<typeof stitchedCost>, state: unknown): string {
  const lines = [
    "# Part score from the anomaly map (issue 19)",
    "",
    "Thresholds from each aggregation's own validation scores (the bundle's held-out normals). Cost: median ms",
    "per frame of the aggregation alone (the graph's maximum comes free with the map), on this machine's shared",
    `cores (machine state before: \`${JSON.stringify(state)}\`).`,
    "",
  ];
  for (const c of cases) {
    lines.push(
      `## ${c.name}: ${c.geometry}, map ${c.map.width}×${c.map.height}, ${c.val_images} validation normals, test ${c.test_good} good / ${c.test_defective} defective`,
      "",
      "| aggregation | image AUROC | caught / false alarms at mean+3σ | predicted FA rate (95 % bound) | caught / false alarms at val max | caught at 0 test FA | cost ms/frame |",
      "|---|---:|---:|---:|---:|---:|---:|",
    );
    for (const v of c.variants) {
      const a = v.at_mean_3std;
      const b = v.at_val_max;
      lines.push(
        `| ${v.aggregation} | ${fmt(v.image_auroc, 3)} | ${a.caught}/${c.test_defective} · ${a.false_alarms}/${c.test_good} | ${fmt((a.predicted_rate ?? Number.NaN) * 100, 1)} % (≤ ${fmt((a.predicted_upper95 ?? Number.NaN) * 100, 1)} %) | ${b.caught}/${c.test_defective} · ${b.false_alarms}/${c.test_good} | ${v.caught_at_zero_test_false_alarms} | ${fmt(v.cost_ms_median, 2)} |`,
      );
    }
    lines.push("");
  }
  lines.push(
    `## Cost on a stitched ${stitched.map} map (tile mode)`,
    "",
    "| aggregation | ms/frame |",
    "|---|---:|",
  );
  for (const v of stitched.variants) lines.push(`| ${v.aggregation} | ${fmt(v.cost_ms_median, 1)} |`);
  return lines.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { case: { type: "string", multiple: true }, out: { type: "string", default: "part-score" } },
  });
  const state = await machineState();
  const cases: CaseResult[] = [];
  for (const spec of values.case ?? []) {
    const match = /^([^=]+)=([^:]+):(.+)$/.exec(spec);
    if (!match) throw new Error(`--case ${spec}: expected NAME=BUNDLE:DATA`);
    cases.push(await runCase(match[1]!, match[2]!, match[3]!));
  }
  const stitched = stitchedCost();
  const report = { machine: machineInfo(), before: state, after: await machineState(), cases, stitched };
  const json = await writeResults(values.out, report, markdown(cases, stitched, state));
  process.stderr.write(`[part-score] wrote ${json}\n`);
}

await main();
