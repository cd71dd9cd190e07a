/**
 * Candidate models as the outputs see them (issue 22): a retrain job's progress, the candidate it wrote, the shadow
 * run that judges live frames with it beside the live model, the evidence that compares the two, and the bundle a
 * promotion replaced. One definition, shared by the control, the commands, the HTTP routes, Sparkplug and the
 * console; the jobs, shadow and promotions themselves live in src/stations/candidates/. JSON keys are snake_case,
 * times ISO 8601 UTC ({@link jsonTime}).
 */

/** A retrain job's state: `interrupted` when the daemon found it running in a process that is gone. */
export type JobState = "running" | "done" | "failed" | "cancelled" | "interrupted";

/** The last retrain job of a camera (its `job.json`). */
export interface JobView {
  camera: string;
  state: JobState;
  started_at: string;
  ended_at?: string;
  /** Who started it: `<interface>:<user>` ("http:alice", "mqtt:scada-1", "cli:root"). */
  by: string;
  epoch: number;
  /** The epoch ceiling; the stopping rule usually ends sooner. */
  epochs: number;
  loss: number | null;
  val_score: number | null;
  /** Seconds left at the pace of the epochs so far, bounded by the time budget; null before the first epoch. */
  eta_s: number | null;
  /** Frames the job trains and validates on. */
  frames: number;
  /** Why it failed or was cancelled, one line. */
  message?: string;
  /** The candidate's model_version, once done. */
  candidate_model_version?: string;
}

/** What identifies a bundle and how it judges. */
export interface BundleSummary {
  model_version: string;
  student_sha256: string;
  created_at: string;
  threshold: number;
  /** The threshold's false-alarm rate predicted by the bundle's validation normals (95 % upper bound). */
  predicted_false_alarm_rate: number | null;
}

export type ShadowState = "running" | "stopped";

/** A camera's shadow run: the candidate judging a share of its live frames, never published. */
export interface ShadowView {
  state: ShadowState;
  started_at: string;
  ended_at?: string;
  share: number;
  /** Frames the candidate judged. */
  frames: number;
  max_frames: number;
  /** When it stops by itself (max_hours after it started). */
  ends_at: string;
  /** Frames offered to the candidate but dropped (its queue full, or the live model busy). */
  dropped: number;
  /** Why it stopped: `max_frames`, `max_hours`, `promoted`, `discarded`, `requested by …`, or an error. */
  stopped_reason?: string;
  live_alarms: number;
  candidate_alarms: number;
  disagreements: number;
}

/** Everything about one camera's model lifecycle, for status, the console and Sparkplug. */
export interface CandidateView {
  camera: string;
  live: BundleSummary | null;
  candidate: BundleSummary | null;
  job: JobView | null;
  shadow: ShadowView | null;
  /** The bundle the last promotion (or rollback) replaced: what a rollback brings back. */
  previous: BundleSummary | null;
}

/** Both models on the camera's labelled set (`<records.labelled_dir>/<camera>`), each at its own threshold. */
export interface OfflineEval {
  data_dir: string;
  /** Confirmed defects (test/<defect type>/). */
  defects: number;
  /** Confirmed normals (test/good/: the false alarms labelled in the review console). */
  normals: number;
  evaluated_at: string;
  live: { caught: number; false_alarms: number };
  candidate: { caught: number; false_alarms: number };
}

/** One promotion gate: `pass` null when it cannot be told yet (no shadow frames, no labelled defects). */
export interface Gate {
  name: string;
  pass: boolean | null;
  detail: string;
}

/** A frame where live and candidate disagree, with URLs of the frame and both anomaly maps. */
export interface Disagreement {
  seq: number;
  capture_ts: string;
  live_score: number;
  candidate_score: number;
  live_verdict: string;
  candidate_verdict: string;
  frame: string;
  live_map: string;
  candidate_map: string;
}

/** The comparison of live and candidate: what the comparison page shows and `GET …/report` answers. */
export interface EvidenceReport {
  camera: string;
  generated_at: string;
  live: BundleSummary;
  candidate: BundleSummary;
  shadow: null | {
    frames: number;
    live_alarms: number;
    candidate_alarms: number;
    live_alarm_rate: number;
    candidate_alarm_rate: number;
    both_alarm: number;
    live_only: number;
    candidate_only: number;
    disagreements_kept: Disagreement[];
    disagreements_not_kept: number;
    /** Scores divided by each model's own threshold (1 = at the threshold), binned on shared edges. */
    histogram: { edges: number[]; live: number[]; candidate: number[] };
  };
  labelled: OfflineEval | null;
  gates: Gate[];
  /** Every enforced gate passes (or none is enforced). */
  promotable: boolean;
}
