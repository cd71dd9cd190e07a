import assert from "node:assert/strict";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { createLogger } from "../../../src/core/log.js";
import { CandidateStore, tempName } from "../../../src/stations/candidates/store.js";
import { tempDir } from "../../helpers/tiny-data.js";

/** A pid no process has (above Linux's pid_max): a writer that was killed. */
const GONE_PID = 999999999;

test("recover: removes the temp files a stopped writer left (job.json, previous.json, offline-eval.json) and a candidate without a manifest; a live writer's temp file stays", async () => {
  const store = new CandidateStore(await tempDir("stpmd-cand-store-"));
  const p = store.paths("cam1");
  await mkdir(p.candidate, { recursive: true });
  await writeFile(path.join(p.candidate, "student.onnx"), "half a bundle");
  const gone = [p.job, p.previousJson, p.offlineEval].map((file) =>
    tempName(file).replace(`.tmp-${process.pid}-`, `.tmp-${GONE_PID}-`),
  );
  for (const file of gone) await writeFile(file, "{");
  // the name a retrain child gives offline-eval.json's temp file while it writes it (offline-eval.ts)
  const live = tempName(p.offlineEval);
  await writeFile(live, "{");
  await writeFile(p.job, "{}\n");

  await store.recover("cam1", createLogger("silent"));

  assert.deepEqual((await readdir(p.root)).sort(), [path.basename(p.job), path.basename(live)].sort());
});
