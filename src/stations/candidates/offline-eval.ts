import { readdir } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../core/durable-fs.js";
import type { Logger } from "../../core/log.js";
import { listImages } from "../../data/images.js";
import type { TestSample } from "../../data/mvtec.js";
import { scoreSamples } from "../../eval/evaluate.js";
import { judge } from "../../pipeline/inspector.js";
import type { OfflineEval } from "../../publish/candidates.js";
import { tempName } from "./store.js";

/**
 * The camera's labelled images (`<dir>/test/good/` confirmed normals, `test/<defect type>/` confirmed defects);
 * empty when the folder or its test/ is missing. Masks are not needed: the comparison counts parts, not pixels.
 */
export async function labelledSamples(dir: string): Promise<TestSample[]> {
  const testDir = path.join(dir, "test");
  let kinds: string[];
  try {
    kinds = (await readdir(testDir, { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
  const samples: TestSample[] = [];
  for (const kind of kinds) {
    const files = await listImages(path.join(testDir, kind), `test/${kind} folder`).catch(() => []);
    for (const file of files)
      samples.push({ file, kind, label: kind === "good" ? 0 : 1, maskFile: undefined });
  }
  return samples;
}

/**
 * Scores the labelled set with the live bundle and the candidate, each at its own threshold, and writes the counts
 * to `file` atomically. Returns undefined (nothing written) when the set has no images.
 */
export async function writeOfflineEval(
  file: string,
  dataDir: string,
  liveDir: string,
  candidateDir: string,
  logger: Logger,
): Promise<OfflineEval | undefined> {
  const samples = await labelledSamples(dataDir);
  if (samples.length === 0) return undefined;
  const count = async (dir: string) => {
    const { manifest, scores } = await scoreSamples(dir, samples, logger);
    let caught = 0;
    let falseAlarms = 0;
    scores.forEach((score, i) => {
      if (judge(score, manifest.threshold) !== "defect") return;
      if (samples[i]!.label === 1) caught += 1;
      else falseAlarms += 1;
    });
    return { caught, false_alarms: falseAlarms };
  };
  const report: OfflineEval = {
    data_dir: dataDir,
    defects: samples.filter((s) => s.label === 1).length,
    normals: samples.filter((s) => s.label === 0).length,
    evaluated_at: new Date().toISOString(),
    live: await count(liveDir),
    candidate: await count(candidateDir),
  };
  // the store's temp name: a write the child did not finish is one CandidateStore.recover knows and removes
  await writeFileAtomic(file, tempName(file), `${JSON.stringify(report, null, 2)}\n`);
  return report;
}
