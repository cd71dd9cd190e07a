import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { CandidatesConfig } from "../../../src/config/index.js";
import { createLogger } from "../../../src/core/log.js";
import { type JobSettings, RetrainJobs } from "../../../src/stations/candidates/jobs.js";
import { CandidateStore } from "../../../src/stations/candidates/store.js";
import { writeTinyBundle } from "../../helpers/tiny-bundle.js";
import { normalFrames, tempDir } from "../../helpers/tiny-data.js";
import { mvtecCategory } from "../../helpers/tiny-mvtec.js";

export const RETRAIN: CandidatesConfig["retrain"] = {
  epochs: 2,
  time_budget_min: 5,
  threads: 1,
  nice: 10,
  min_frames: 4,
};

/** A node's candidate folders: a live tiny bundle, `frames` collected frames of cam1, a small labelled set. */
export async function candidateWorld(frames = 8, retrain: Partial<CandidatesConfig["retrain"]> = {}) {
  const root = await tempDir("stpmd-cand-");
  const live = path.join(root, "models/cam1");
  await writeTinyBundle(live, "live-v1");
  const collectionDir = path.join(root, "collection");
  await mkdir(collectionDir, { recursive: true });
  if (frames > 0) await normalFrames(frames, 32, path.join(collectionDir, "cam1"));
  const labelledDir = path.join(root, "labelled");
  await mvtecCategory(path.join(labelledDir, "cam1"), { good: 3, blob: 2 });
  const store = new CandidateStore(path.join(root, "candidates"));
  const settings: JobSettings = { retrain: { ...RETRAIN, ...retrain }, collectionDir, labelledDir };
  const logger = createLogger("silent");
  return { root, live, store, settings, logger, jobs: new RetrainJobs(store, settings, logger) };
}
