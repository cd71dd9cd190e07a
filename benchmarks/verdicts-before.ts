/**
 * A seed-matched "before" for benchmarks/verdicts.sh: a bundle judged as the code before issue 19 judged it — the
 * map's maximum against mean + 3·std of the maxima of its validation images — for a run whose student the old code
 * trains identically (no margin, the same epochs; check that first: `retrain` at the old commit with the run's options
 * and seed must print the same loss and validation score per epoch). The bundle is copied, its manifest's score and
 * threshold rewritten from the validation maxima it stores, and `stpmd eval` run on the copy.
 *
 *   node dist/benchmarks/verdicts-before.js --bundle /tmp/stpmd-verdicts/fryum-tiled-s1 \
 *     --data ../shared/data/visa/fryum --name fryum-tiled --seed 1 --code b3bcd62 --note "…"
 *
 * Writes benchmarks/results/verdicts-before-<name>-s<seed>.json, which verdicts-table.js puts above that seed's run.
 */
import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { Manifest } from "../src/bundle/bundle.js";
import { scoreStats } from "../src/stpm/statistics.js";

const { values } = parseArgs({
  options: {
    bundle: { type: "string" },
    data: { type: "string" },
    name: { type: "string" },
    seed: { type: "string" },
    code: { type: "string", default: "b3bcd62" },
    note: { type: "string", default: "" },
    bin: { type: "string", default: "dist/src/main.cjs" },
  },
});
for (const key of ["bundle", "data", "name", "seed"] as const) {
  if (values[key] === undefined) throw new Error(`verdicts-before: --${key} is required`);
}
/** retrain's threshold rule before (and after) issue 19: mean + 3·std of the validation scores. */
const SIGMA = 3;

const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-verdicts-before-"));
try {
  const bundle = path.join(work, "bundle");
  await cp(values.bundle!, bundle, { recursive: true });
  const file = path.join(bundle, "manifest.json");
  const manifest = JSON.parse(await readFile(file, "utf8")) as Manifest;
  const maxima = manifest.validation_scores_by_aggregation?.max;
  if (maxima === undefined || maxima.length === 0)
    throw new Error(`${values.bundle}: the manifest stores no validation maxima`);
  const stats = scoreStats(maxima);
  const judged: Manifest = {
    ...manifest,
    score: { aggregation: "max" },
    validation_scores: [...maxima].sort((a, b) => a - b),
    score_stats: stats,
    threshold: stats.mean + SIGMA * stats.std,
  };
  await writeFile(file, `${JSON.stringify(judged, null, 2)}\n`);
  const evalFile = path.join(work, "eval.json");
  const run = spawnSync(
    process.execPath,
    [values.bin!, "eval", "--model", bundle, "--data", values.data!, "--json", evalFile],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  if (run.status !== 0) throw new Error(`stpmd eval exited with ${run.status}`);
  const out = {
    name: values.name,
    seed: Number(values.seed),
    code: `${values.code}'s verdict on the same weights`,
    note: values.note,
    training: manifest.training,
    geometry: manifest.geometry,
    score: judged.score,
    threshold: judged.threshold,
    eval: JSON.parse(await readFile(evalFile, "utf8")) as unknown,
  };
  const target = `benchmarks/results/verdicts-before-${values.name}-s${values.seed}.json`;
  await writeFile(target, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`wrote ${target}: threshold ${judged.threshold}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
