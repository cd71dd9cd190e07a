/**
 * `stpmd retrain --candidate --camera ID --config FILE`: the daemon's retrain job in the foreground (over SSH):
 * the same store, the same node-wide lock (so a job the daemon runs refuses this one and the other way round), the
 * same child process at the configured priority and threads, progress on the terminal; Ctrl-C cancels cleanly.
 */
import os from "node:os";
import { loadConfig } from "../config/index.js";
import { StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { JobView } from "../publish/candidates.js";
import { jobSettings, RetrainJobs } from "../stations/candidates/jobs.js";
import { ownBundle } from "../stations/candidates/promotion.js";
import { CandidateError, CandidateStore } from "../stations/candidates/store.js";
import { stationBundle } from "../stations/station.js";

/** Runs the job; resolves with its end (the exit code is the caller's: 0 only when done). */
export async function retrainCandidate(configFile: string, camera: string, logger: Logger): Promise<JobView> {
  const config = loadConfig(configFile);
  const cam = config.cameras.find((c) => c.id === camera);
  if (!cam) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `--camera ${camera}: ${configFile} has no such camera (cameras: ${config.cameras.map((c) => c.id).join(", ")})`,
    );
  }
  let live: string;
  try {
    live = ownBundle(
      camera,
      config.cameras.map((c) => ({ id: c.id, bundle: stationBundle(c, config) })),
    );
  } catch (err) {
    if (err instanceof CandidateError)
      throw new StpmdError("ERR_OPTION_INVALID", `--camera ${camera}: ${err.message}`);
    throw err;
  }
  const store = new CandidateStore(config.candidates.dir);
  await store.recover(camera, logger);
  const jobs = new RetrainJobs(store, jobSettings(config), logger, { changed: (job) => progress(job) });
  await jobs.recover([camera]);
  let job: JobView;
  try {
    job = await jobs.start(camera, live, `cli:${os.userInfo().username}`);
  } catch (err) {
    if (err instanceof CandidateError) throw new StpmdError("ERR_OPTION_INVALID", err.message);
    throw err;
  }
  console.log(
    `retrain job of camera ${camera}: ${job.frames} frames, at most ${job.epochs} epochs, into ${store.paths(camera).candidate} (Ctrl-C cancels)`,
  );
  const cancel = (): void => {
    console.log("cancelling…");
    void jobs.cancel(camera, `cli:${os.userInfo().username}`).catch(() => undefined);
  };
  process.on("SIGINT", cancel);
  process.on("SIGTERM", cancel);
  try {
    return (await jobs.finished()) ?? job;
  } finally {
    process.off("SIGINT", cancel);
    process.off("SIGTERM", cancel);
  }
}

function progress(job: JobView): void {
  if (job.state !== "running" || job.epoch === 0) return;
  const eta = job.eta_s === null ? "" : `, about ${Math.round(job.eta_s)} s left at most`;
  console.log(
    `epoch ${job.epoch}/${job.epochs}: loss ${job.loss?.toPrecision(4)}, validation score ${job.val_score?.toPrecision(4)}${eta}`,
  );
}

/** The one line that ends the run. */
export function describeJobEnd(job: JobView, candidateDir: string): string {
  if (job.state === "done") {
    return `candidate ${job.candidate_model_version} written to ${candidateDir}${job.message ? ` (${job.message})` : ""}; promote it with the daemon's promote command (docs/candidates.md)`;
  }
  return `retrain job ${job.state}: ${job.message ?? ""}`;
}
