/**
 * The messages between a retrain job's parent (the daemon or `stpmd retrain --candidate`) and its child process
 * (retrain-child.ts), over Node's IPC channel: the parent sends one {@link ChildJob}, the child answers with
 * progress after every epoch and one final message before it exits.
 */
import type { RetrainOptions } from "../../train/retrain.js";

/** What the child runs: a retrain (without the parent-side hooks) and the offline evaluation after it. */
export interface ChildJob {
  retrain: Omit<RetrainOptions, "logger" | "progress" | "onEpoch">;
  /** The camera's labelled set (MVTec layout); both bundles are scored on its test images when it has any. */
  labelledDir: string;
  /** The live bundle, the candidate's comparison in offline-eval.json. */
  liveDir: string;
  offlineEvalFile: string;
}

export type ChildMessage =
  | {
      type: "progress";
      epoch: number;
      epochs: number;
      loss: number;
      val_score: number;
      eta_s: number | null;
    }
  | { type: "trained"; model_version: string; frames: number }
  | { type: "done"; model_version: string; frames: number; offline_eval: boolean }
  | { type: "failed"; message: string };

/** Exit code of a child that reported its failure (a message was sent); any other non-zero exit is a crash. */
export const CHILD_FAILED_EXIT = 3;
