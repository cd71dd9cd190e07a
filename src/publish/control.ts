/**
 * The contract between the daemon and its outputs (OPC UA to the PLC, Sparkplug B to SCADA, commands over MQTT,
 * Prometheus and the console over HTTP). The daemon implements {@link LineControl}; every sink reads state through
 * `snapshot()`, hears each batch through `deliver`, and changes state only through the control's methods, so a
 * threshold, an enable or a reload goes down one code path whichever interface asked, and is logged there with
 * who asked and the old and new values.
 */
import type { ThresholdRule } from "../config/index.js";
import type { CameraState } from "../core/frame.js";
import type { LastResult, Verdict } from "../core/result.js";
import { jsonTime } from "../core/time.js";
import type { PredictedFalseAlarms } from "../stpm/threshold.js";
import type { AuditHealth } from "./audit.js";
import type { BundleSummary, CandidateView, EvidenceReport, JobView, ShadowView } from "./candidates.js";
import type { SinkHealth } from "./sink.js";

/** The interfaces a change can come from. */
export const CHANGE_SOURCES = [
  "config",
  "sighup",
  "file-watch",
  "mqtt",
  "opcua",
  "sparkplug",
  "http",
] as const;
export type ChangeSource = (typeof CHANGE_SOURCES)[number];

/** Who asked for a change: logged with it. `user` where the interface authenticates (OPC UA user, MQTT client). */
export interface Requester {
  via: ChangeSource;
  user?: string;
}

/** A refused request: the message names the camera, key or value and the problem (sent back to the client). */
export class ControlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ControlError";
  }
}

export interface CameraSnapshot {
  id: string;
  enabled: boolean;
  /** `disabled` when the camera is in the config but not running. */
  state: CameraState | "disabled";
  fps: number;
  /** Frames inspected since start. */
  inspected: number;
  /** Defective frames since start. */
  defects: number;
  /** Frames since start that could not be judged (verdict `error`: the model's score was not a finite number). */
  errors: number;
  restarts: number;
  bad_frames: number;
  /** This camera's frames dropped because its bundle's inference queue was full. */
  dropped_frames: number;
  /** Bundle directory this camera's model comes from. */
  bundle: string;
  /** The recipe this camera's settings come from now (null: its own); its last frame's is `last.recipe`. */
  recipe: string | null;
  model_version: string | null;
  /** The image-score threshold in force, from `threshold_rule` and the bundle's validation scores. */
  threshold: number | null;
  threshold_rule: ThresholdRule | "bundle";
  /** How the camera's maps become part scores ("max", "smoothed_max (σ = 4 px)", …); null without a model. */
  part_score: string | null;
  /** The threshold's false-alarm rate predicted by the bundle's validation normals (k/n, 95 % upper bound). */
  predicted_false_alarms: PredictedFalseAlarms | null;
  /** The camera's last judged frame; absent before its first. */
  last?: LastResultSnapshot;
  /** Frames of this camera labelled in the review console now; absent when no labels are served. */
  review?: ReviewSnapshot;
  /** Its candidate model's lifecycle (job, candidate, shadow, previous); absent where the node runs no candidates. */
  candidate?: Omit<CandidateView, "camera">;
}

/** A camera's last judged frame as the snapshot shows it: snake_case keys and the JSON interfaces' time format. */
export interface LastResultSnapshot {
  seq: number;
  /** Capture time, ISO 8601 UTC with milliseconds ({@link jsonTime}). */
  capture_ts: string;
  /** Null when the score was not a finite number (verdict `error`). */
  score: number | null;
  threshold: number;
  verdict: Verdict;
  /** The defect event's id (`event_id` on MQTT), when the verdict was `defect`. */
  event_id?: string;
  /** The part id of the PLC trigger that tagged the frame. */
  part_id?: string;
  regions: number;
  /** The recipe the frame was judged under; absent: the camera's own settings. */
  recipe?: string;
}

export function lastResultSnapshot(last: LastResult): LastResultSnapshot {
  return {
    seq: last.seq,
    capture_ts: jsonTime(last.captureTs),
    score: Number.isFinite(last.score) ? last.score : null,
    threshold: last.threshold,
    verdict: last.verdict,
    ...(last.eventId !== undefined ? { event_id: last.eventId } : {}),
    ...(last.partId !== undefined ? { part_id: last.partId } : {}),
    regions: last.regions,
    ...(last.recipe !== undefined ? { recipe: last.recipe } : {}),
  };
}

/** A camera's review labels in force (undone ones not counted). */
export interface ReviewSnapshot {
  false_alarms: number;
  confirmed_defects: number;
}

/** What the collector did since start, for the node's snapshot and /metrics. */
export interface CollectionStats {
  saved: number;
  /** Saves that failed (a full or read-only disk, a deleted folder); nothing of them is left on disk. */
  failed: number;
  /** Frames that qualified while too many saves were still being written, so not saved. */
  dropped: number;
  /** Old frames deleted to keep within max_frames_per_camera and max_bytes. */
  deleted: number;
}

/** One output's health in the node's snapshot. */
export interface SinkStatus extends SinkHealth {
  name: string;
  durable: boolean;
  /** Batches this sink failed on since start (each cost only its delivery to this sink). */
  failed_batches: number;
}

/**
 * The node's links to the line's systems now, read from its outputs' health; null where that output is not running
 * (not enabled in the configuration), so an alert on "0" never fires for something the node does not have.
 */
export interface ConnectionsSnapshot {
  /** The MQTT output's session with the broker (results, defect events, status, commands). */
  broker: boolean | null;
  /** The Sparkplug edge node's MQTT session, and whether its NBIRTH went out in that session. */
  sparkplug: { connected: boolean; born: boolean } | null;
  /** OPC UA client sessions open now (the PLC's, and any other client's). */
  opcua_sessions: number | null;
}

/** The {@link ConnectionsSnapshot} from the `connection` of the `mqtt`, `sparkplug` and `opcua` outputs' health. */
export function connectionsOf(sinks: readonly SinkStatus[]): ConnectionsSnapshot {
  const running = (name: string) => sinks.find((sink) => sink.name === name);
  const mqtt = running("mqtt");
  const sparkplug = running("sparkplug");
  const opcua = running("opcua");
  return {
    broker: mqtt === undefined ? null : mqtt.connection?.connected === true,
    sparkplug:
      sparkplug === undefined
        ? null
        : {
            connected: sparkplug.connection?.connected === true,
            born: sparkplug.connection?.born === true,
          },
    opcua_sessions: opcua === undefined ? null : (opcua.connection?.sessions ?? 0),
  };
}

export interface ModelSnapshot {
  bundle: string;
  model_version: string;
  /** sha256 of the student ONNX. */
  student_sha256: string;
}

export interface NodeSnapshot {
  uptime_s: number;
  fps: number;
  inspected: number;
  dropped_frames: number;
  /** Model loaded and frames flowing: the rule the systemd watchdog uses. */
  ready: boolean;
  models: ModelSnapshot[];
  /** The recipe in force (null: every camera's own settings), and the recipes the config offers. */
  recipe: string | null;
  recipes: string[];
  outbox: { queued: number; overflowed: number; lost: number };
  /** The switch, and what the collector did since start (all 0 when collection is off in the config file). */
  collection: { enabled: boolean } & CollectionStats;
  /** The audit log: its file, entries written and failed since start, and the last failure while failing. */
  audit: AuditHealth;
  cameras: CameraSnapshot[];
  /** Every output, in registration order. */
  sinks: SinkStatus[];
  /** The broker, Sparkplug and PLC sessions now (from `sinks`). */
  connections: ConnectionsSnapshot;
}

export interface ReloadOutcome {
  /** Whether the configuration file was re-read and applied (false: it was invalid; the running one is kept). */
  configApplied: boolean;
  /** Problems of a rejected configuration, one line each. */
  problems: string[];
  /** Bundles whose model changed. */
  swapped: string[];
  /** Bundles whose new model failed to load (their old model is kept). */
  failed: string[];
}

/** What a promotion, rollback or discard changed: the camera's bundle before and after (null: none). */
export interface ModelChangeOutcome {
  camera: string;
  before: BundleSummary | null;
  after: BundleSummary | null;
}

export interface LineControl {
  snapshot(): NodeSnapshot;
  /** Sets a camera's threshold rule at run time; returns the threshold before and after. */
  setThreshold(
    camera: string,
    rule: ThresholdRule,
    by: Requester,
  ): { old: number | null; new: number | null };
  enableCamera(camera: string, enabled: boolean, by: Requester): Promise<void>;
  /** SIGHUP's path: re-read the configuration and reload changed bundles. */
  reload(by: Requester): Promise<ReloadOutcome>;
  setCollection(enabled: boolean, by: Requester): void;
  /**
   * Switches the line to recipe `name` (null: every camera's own settings): resolves once every bundle it needs is
   * loaded and each camera's next frame is judged under it; refused (ControlError with the reason, nothing changed)
   * when the recipe is unknown or one of its bundles or masks does not load. Returns the recipe before and after.
   */
  selectRecipe(name: string | null, by: Requester): Promise<{ old: string | null; new: string | null }>;
  /**
   * Tags the next frame this camera delivers with `partId` (a PLC trigger). Several triggers queue (bounded) and
   * tag frames in order; each tagged frame's result carries `partId`. A trigger still waiting for its frame after
   * `expiresInMs` is dropped (logged), so a late frame never carries the part id of a trigger given up on.
   */
  trigger(camera: string, partId: string, by: Requester, expiresInMs?: number): void;
  /**
   * Candidate models (issue 22, docs/candidates.md). Each is refused (ControlError with one line) for an unknown
   * camera, a job already running (naming its camera), no candidate, a broken candidate or a failing enforced gate.
   * Starts a retrain job for the camera: resolves once it runs, with its first view.
   */
  startRetrain(camera: string, by: Requester): Promise<JobView>;
  /** Cancels the camera's running job; resolves once it has ended. */
  cancelRetrain(camera: string, by: Requester): Promise<JobView>;
  /** Starts or stops the camera's shadow run. */
  setShadow(camera: string, enabled: boolean, by: Requester): Promise<ShadowView | null>;
  /** Puts the camera's candidate in service (at a batch boundary), keeping the replaced bundle for a rollback. */
  promote(camera: string, by: Requester, force?: boolean): Promise<ModelChangeOutcome>;
  /** Swaps the camera's previous bundle and the live one. */
  rollback(camera: string, by: Requester): Promise<ModelChangeOutcome>;
  /** Deletes the camera's candidate, its shadow records and offline evaluation. */
  discardCandidate(camera: string, by: Requester): Promise<ModelChangeOutcome>;
  /** Every camera's candidate view, in config order (empty where the node runs no candidates). */
  candidates(): CandidateView[];
  /** The comparison of the camera's live model and candidate. */
  evidence(camera: string): Promise<EvidenceReport>;
  /**
   * The file of an image the camera's shadow kept, named as the evidence's image URLs end; null when it kept none
   * by that name. Refused naming the camera when there is no such camera or the node runs no candidates.
   */
  shadowImage(camera: string, name: string): string | null;
}
