import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { tempDir } from "../helpers/tiny-data.js";

const run = promisify(execFile);

interface Row {
  provider: string;
  works: boolean;
  error?: string;
  max_rel_score_delta?: number;
  timing?: Record<string, { ms: number; frames_per_s: number }>;
}

test("the GPU proof runs the Scorer per provider: the CPU timed, a provider without a session reported, not replaced", async () => {
  const out = await tempDir("stpmd-gpu-ort-");
  await run(process.execPath, [
    "dist/benchmarks/gpu-ort.js",
    "--out",
    out,
    "--providers",
    "cpu,cuda",
    "--batches",
    "1,2",
    "--seconds",
    "0.05",
  ]);
  const report = JSON.parse(await readFile(path.join(out, "gpu-ort.json"), "utf8")) as {
    models: Record<string, Row[]>;
  };
  const rows = report.models["resnet18 (seeded)"]!;
  assert.deepEqual(
    rows.map((r) => r.provider),
    ["cpu", "cuda"],
  );
  const [cpu, cuda] = rows as [Row, Row];
  assert.equal(cpu.works, true);
  assert.ok(cpu.timing!["1"]!.ms > 0 && cpu.timing!["2"]!.frames_per_s > 0);
  // this build machine has no CUDA provider: its session fails and says why; with one, it is compared to the CPU
  if (cuda.works) assert.ok(cuda.max_rel_score_delta! < 1e-2);
  else assert.match(cuda.error!, /\S/);
  assert.match(await readFile(path.join(out, "gpu-ort.md"), "utf8"), /\| resnet18 \(seeded\) \| cpu \|/);
});
