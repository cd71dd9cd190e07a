import type { CandidatesConfig } from "../../config/index.js";
import type { EvidenceReport, ShadowView } from "../../publish/candidates.js";

/**
 * The shadow runs as the candidate manager uses them (issue 22): the candidate of a camera judging a share of that
 * camera's live frames beside the live model, its verdicts recorded and never published, and the evidence that
 * compares the two. Implemented by the registry's shadow scheduler; the manager starts and stops runs and asks for
 * the evidence before a promotion.
 */
export interface ShadowRuns {
  /**
   * Starts (or, after a daemon restart, resumes) the shadow run of `camera` with the bundle in `candidateDir`,
   * recording into `shadowDir`. Throws an Error with a one-line reason when the candidate does not load.
   */
  start(
    camera: string,
    candidateDir: string,
    shadowDir: string,
    settings: CandidatesConfig["shadow"],
  ): Promise<ShadowView>;
  /** Stops the run of `camera` (a no-op when none runs), recording `reason`. */
  stop(camera: string, reason: string): Promise<void>;
  /** The run of `camera` (running, or the last stopped one found in `shadowDir`); null when it never ran. */
  view(camera: string): ShadowView | null;
  /**
   * The comparison of live and candidate for `camera`: the shadow's frames (if any), the offline evaluation on the
   * labelled set (`offline-eval.json` beside `candidateDir`, if any) and the gates. Undefined without a candidate.
   */
  evidence(camera: string): Promise<EvidenceReport | undefined>;
  /**
   * The file of a disagreement image the run of `camera` kept, named as the evidence's image URLs end; undefined
   * when the name is not one a run writes (no folder part, no `..`) or the file is not there.
   */
  imageFile(camera: string, name: string): string | undefined;
}
