import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * benchmarks/verdicts.sh's results as one Markdown table (benchmarks/results/verdicts.md): every run of
 * `verdicts-<name>-s<seed>.json`, beside its "before" — fryum's from benchmarks/geometry.sh's recorded runs
 * (geometry-{squash,aspect,tiled}.json: seed 0, the 12-epoch ceiling, the map's maximum, no margin), bottle's from
 * verdicts-before-bottle.json when present. A seed-matched "before" (the code before issue 19, same options and seed:
 * `verdicts-before-<name>-s<seed>.json`, written like an "after" run with the commit in `code`) goes right above the
 * run of that seed.
 */
const DIR = "benchmarks/results";

interface AtThreshold {
  threshold: number;
  true_positive: number;
  false_positive: number;
  true_negative: number;
  false_negative: number;
}
interface EvalNumbers {
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
  num_good: number;
  num_defective: number;
  at_threshold: AtThreshold;
}
interface Row {
  label: string;
  eval: EvalNumbers;
  wall: number | undefined;
  epochs: string;
  rss: number | undefined;
}

const read = <T>(file: string): T => JSON.parse(readFileSync(join(DIR, file), "utf8")) as T;

function beforeRows(): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const g of ["squash", "aspect", "tiled"]) {
    const file = `geometry-${g}.json`;
    if (!existsSync(join(DIR, file))) continue;
    const r = read<EvalNumbers & { retrain_wall_s: number; epochs_run: number; stopped_reason: string }>(
      file,
    );
    rows.set(`fryum-${g}`, {
      label: `before (${file}, seed 0)`,
      eval: r,
      wall: r.retrain_wall_s,
      epochs: `${r.epochs_run} (${r.stopped_reason})`,
      rss: undefined,
    });
  }
  if (existsSync(join(DIR, "verdicts-before-bottle.json"))) {
    const r = read<{ eval: EvalNumbers; retrain_wall_s: number; epochs: string }>(
      "verdicts-before-bottle.json",
    );
    rows.set("bottle", {
      label: "before",
      eval: r.eval,
      wall: r.retrain_wall_s,
      epochs: r.epochs,
      rss: undefined,
    });
  }
  return rows;
}

interface Run {
  name: string;
  seed: number;
  retrain_wall_s: number;
  retrain_peak_rss_mb: number;
  load_average_before: string;
  training: { history: unknown[]; best_epoch: number; stopped_reason: string; stopped_on?: string };
  eval: EvalNumbers;
}

function line(name: string, r: Row): string {
  const t = r.eval.at_threshold;
  return [
    name,
    r.label,
    r.eval.image_auroc.toFixed(3),
    r.eval.pixel_auroc.toFixed(3),
    r.eval.aupro.toFixed(3),
    `${t.true_positive} of ${r.eval.num_defective}`,
    `${t.false_positive} of ${r.eval.num_good}`,
    r.epochs,
    r.wall === undefined ? "" : `${Math.round(r.wall)} s`,
    r.rss === undefined ? "" : `${r.rss} MB`,
  ].join(" | ");
}

const before = beforeRows();
const byNameAndSeed = (a: Run, b: Run): number => a.name.localeCompare(b.name) || a.seed - b.seed;
const runs = readdirSync(DIR)
  .filter((f) => /^verdicts-.+-s\d+\.json$/.test(f) && !f.startsWith("verdicts-before-"))
  .map((f) => read<Run>(f))
  .sort(byNameAndSeed);
const seededBefores = readdirSync(DIR)
  .filter((f) => /^verdicts-before-.+-s\d+\.json$/.test(f))
  .map((f) => read<Run & { code: string }>(f));
const rowOf = (run: Run, label: string): Row => ({
  label,
  eval: run.eval,
  wall: run.retrain_wall_s,
  epochs: `${run.training.history.length} (${run.training.stopped_on ?? run.training.stopped_reason}, kept ${run.training.best_epoch})`,
  rss: run.retrain_peak_rss_mb,
});
const out = [
  "| run | model | image AUROC | pixel AUROC | AUPRO | caught at the bundle's threshold | false alarms | epochs (stop) | retrain wall | peak RSS |",
  "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
];
let last = "";
for (const run of runs) {
  const b = before.get(run.name);
  if (run.name !== last && b) out.push(`| ${line(run.name, b)} |`);
  last = run.name;
  const seeded = seededBefores.find((x) => x.name === run.name && x.seed === run.seed);
  if (seeded) out.push(`| ${line(run.name, rowOf(seeded, `before, seed ${run.seed} (${seeded.code})`))} |`);
  const label = `after, seed ${run.seed} (load ${run.load_average_before.split(" ")[0]})`;
  out.push(`| ${line(run.name, rowOf(run, label))} |`);
}
writeFileSync(join(DIR, "verdicts.md"), `${out.join("\n")}\n`);
console.log(out.join("\n"));
