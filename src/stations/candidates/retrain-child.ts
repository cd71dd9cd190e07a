/**
 * A retrain job's child process (forked by jobs.ts): runs the retrain the parent sends over IPC, reports every
 * epoch, then compares candidate and live bundle on the camera's labelled set. Exits 0 when done,
 * {@link CHILD_FAILED_EXIT} after reporting a failure; it exits too when its parent goes (the IPC channel closes),
 * so a killed daemon never leaves a retrain eating the box.
 */
import { performance } from "node:perf_hooks";
import { errorMessage } from "../../core/errors.js";
import { createLogger } from "../../core/log.js";
import { retrain } from "../../train/retrain.js";
import { writeOfflineEval } from "./offline-eval.js";
import { CHILD_FAILED_EXIT, type ChildJob, type ChildMessage } from "./retrain-protocol.js";

const logger = createLogger((process.env.STPMD_LOG_LEVEL as "info" | undefined) ?? "warn");

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** One line for a failure; a full disk names what was being written (the candidate, or the offline evaluation). */
export function failureLine(err: unknown, writing: string): string {
  if ((err as NodeJS.ErrnoException | undefined)?.code === "ENOSPC") return `disk full writing ${writing}`;
  return errorMessage(err).split("\n")[0]!;
}

async function run(job: ChildJob): Promise<void> {
  const started = performance.now();
  const { retrain: opts } = job;
  let writing = opts.outDir;
  try {
    const summary = await retrain({
      ...opts,
      logger,
      progress: false,
      onEpoch: async (e) => {
        const elapsed = (performance.now() - started) / 1000;
        const left = (elapsed / e.epoch) * (opts.epochs - e.epoch);
        const budgetLeft =
          opts.timeBudgetMin === undefined ? Number.POSITIVE_INFINITY : opts.timeBudgetMin * 60 - elapsed;
        await send({
          type: "progress",
          epoch: e.epoch,
          epochs: opts.epochs,
          loss: e.loss,
          val_score: e.valMeanScore,
          eta_s: Math.max(0, Math.round(Math.min(left, budgetLeft))),
        });
      },
    });
    const frames = summary.trainImages + summary.valImages;
    const version = summary.manifest.model_version;
    await send({ type: "trained", model_version: version, frames });
    writing = job.offlineEvalFile;
    const evaluated = await writeOfflineEval(
      job.offlineEvalFile,
      job.labelledDir,
      job.liveDir,
      opts.outDir,
      logger,
    );
    await send({ type: "done", model_version: version, frames, offline_eval: evaluated !== undefined });
    process.exit(0);
  } catch (err) {
    await send({ type: "failed", message: failureLine(err, writing) });
    process.exit(CHILD_FAILED_EXIT);
  }
}

process.once("message", (message: ChildJob) => {
  run(message).catch(() => process.exit(CHILD_FAILED_EXIT));
});
process.on("disconnect", () => process.exit(CHILD_FAILED_EXIT));
