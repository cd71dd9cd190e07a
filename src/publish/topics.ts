import { COMMAND_TOPIC_LEVEL } from "../config/rules.js";
import { StpmdError } from "../core/errors.js";
import type { CameraState } from "../core/frame.js";
import { defectiveFlag, type InspectionResult, type Verdict } from "../core/result.js";
import { jsonTime } from "../core/time.js";
import type { PredictedFalseAlarms } from "../stpm/threshold.js";

/**
 * The MQTT API of the daemon: every topic it publishes (or reads) and the payload type on it, in one place so that the
 * publisher, the tests and any consumer written in TypeScript agree on field names.
 *
 * | Topic                              | Payload                         | QoS          | Retained |
 * |------------------------------------|---------------------------------|--------------|----------|
 * | `<prefix>/status`                  | {@link StatusPayload}           | 1            | yes      |
 * | `<prefix>/<camera>/result`         | {@link ResultPayload}           | configurable | no       |
 * | `<prefix>/<camera>/defect`         | {@link DefectPayload}           | 1 or 2       | no       |
 * | `<prefix>/<camera>/snapshot`       | JPEG bytes                      | 1            | yes      |
 * | `<prefix>/command/<name>`          | command request (JSON), read    | client's     | no       |
 * | `<prefix>/command/<name>/response` | {@link CommandResponsePayload}  | 1            | no       |
 *
 * The daemon subscribes to `<prefix>/command/+` (QoS 1) when `mqtt.commands.enabled`; a request is a JSON object
 * with the command's parameters and an optional `transaction` (string or number) echoed in the response, so a
 * client can match answers to its requests; an MQTT 5 request with a Response Topic is answered there instead, with
 * its Correlation Data. Names: `reload`, `set_threshold`, `enable_camera`, `collection`, `select_recipe`,
 * `status`
 * (src/publish/commands.ts). `command` is therefore not a valid camera id while commands are on. Every time in these
 * payloads is ISO 8601 UTC with milliseconds (src/core/time.ts).
 */

export const DEFAULT_TOPIC_PREFIX = "stpmd";

export type Qos = 0 | 1 | 2;

export type DaemonState = "online" | "offline" | "stopped";

/** One camera in `<prefix>/status`. */
export interface CameraStatus {
  state: CameraState;
  /** Frames inspected per second. */
  fps: number;
  /** Restarts since the daemon started (errors, end of stream, stalls). */
  restarts: number;
  /** Frames or replay files skipped as unusable (a bad replay file counts on every loop over it). */
  bad_frames: number;
  /** Frames since start that could not be judged (verdict `error`: the model's score was not a finite number). */
  errors: number;
  /** The camera's model (its station's bundle). */
  model_version: string | null;
  /** The image-score threshold in force for this camera. */
  threshold: number | null;
  /**
   * How often that threshold would flag a normal part, as the bundle's validation normals predict it: the point
   * estimate k/n and the 95 % upper bound (src/stpm/threshold.ts); null without a model.
   */
  predicted_false_alarms: PredictedFalseAlarms | null;
}

/** One output (result sink) in `<prefix>/status`. */
export interface OutputStatus {
  /** Whether it delivers now (its broker connected, its server listening, its disk writable). */
  ok: boolean;
  /** Whether what it is handed survives an outage of its far end and a restart (held on disk). */
  durable: boolean;
  /** Why it does not deliver, in one line. */
  detail?: string;
  /** Inference batches it failed on since start (each cost only its own delivery). */
  failed_batches: number;
}

/** `<prefix>/status`: retained, QoS 1, republished on every (re)connect and on clean shutdown. */
export interface StatusPayload {
  state: DaemonState;
  model_version: string | null;
  fps: number;
  dropped_frames: number;
  cameras: { [cameraId: string]: CameraStatus };
  /** The recipe in force (docs/recipes.md); null: every camera's own settings. */
  recipe: string | null;
  /** The other outputs (Sparkplug, OPC UA, HTTP, collection …) by name; MQTT itself is up when this arrives. */
  outputs: { [name: string]: OutputStatus };
  /**
   * The defect-event outbox, all in events (an event and its snapshot count once): `queued` waiting on disk,
   * `overflowed` refused since start because the outbox was full, `lost` since start because they could not
   * be written (disk full, I/O error) or their stored file vanished. Every event is delivered or in one of these.
   */
  outbox: { queued: number; overflowed: number; lost: number };
  /**
   * Defect events sent without the snapshot they should have had (the renderer was busy or failed), per camera
   * since start; cameras without any are left out.
   */
  defects_without_snapshot: { [cameraId: string]: number };
  uptime_s: number;
  /** When the status was published (ISO 8601 UTC with milliseconds, as every time in the JSON interfaces). */
  ts: string;
}

/** What the daemon knows about itself; the publisher adds state, outbox counters, uptime and time. */
export type StatusReport = Pick<
  StatusPayload,
  "model_version" | "fps" | "dropped_frames" | "cameras" | "outputs" | "recipe"
>;

/** The last will on `<prefix>/status`: all the broker can say once the connection is gone. */
export interface StatusWillPayload {
  state: "offline";
}

/** `<prefix>/<camera>/result`: one compact line per inspected frame (a telemetry stream, never queued). */
export interface ResultPayload {
  seq: number;
  /** Capture time, ISO 8601 UTC with milliseconds ({@link jsonTime}, as every time in the JSON interfaces). */
  capture_ts: string;
  /** The image score; null when it was not a finite number (verdict `error`). */
  score: number | null;
  threshold: number;
  /** `ok`, `defect`, or `error`: the frame could not be judged (its score was not a finite number). */
  verdict: Verdict;
  /** Whether the frame was judged defective; null when it was not judged (verdict `error`), so never an OK. */
  defective: boolean | null;
  /** Why the frame could not be judged; only with verdict `error`. */
  error?: string;
  /** Number of regions above threshold. */
  regions: number;
  /** Capture to end of inference, milliseconds. */
  latency_ms: number;
  /**
   * The model that judged the frame. A promotion or rollback swaps the model at a batch boundary, so a line's
   * SCADA sees in the results themselves from which frame on the new model judges.
   */
  model_version: string;
  /** The part id of the PLC trigger that tagged this frame (OPC UA `PartId`); absent for untriggered frames. */
  part_id?: string;
  /** The recipe the frame was judged under (docs/recipes.md); absent: the camera's own settings. */
  recipe?: string;
}

export interface DefectRegionPayload {
  /** In pixels of the inspected image (`frame_size`: the ROI at the model's capture size; what the snapshot shows). */
  bbox: [x: number, y: number, width: number, height: number];
  /** The same box in the camera's source frame (ROI offset and scale applied), when the station knows them. */
  bbox_source?: [x: number, y: number, width: number, height: number];
  area: number;
  peak: number;
}

/** Where the defect's snapshot went: its own retained topic, inline base64 in this payload, or nowhere. */
export type SnapshotDelivery = "topic" | "inline" | "none";

/** `<prefix>/<camera>/defect`: one event per defective frame, delivered through the durable outbox. */
export interface DefectPayload {
  /** `<camera>-<capture_ts in ms>-<seq>`: stable across redeliveries, so consumers can drop QoS 1 duplicates. */
  event_id: string;
  camera: string;
  seq: number;
  /** Capture time, ISO 8601 UTC with milliseconds. */
  capture_ts: string;
  /** When the verdict was reached, ISO 8601 UTC with milliseconds. */
  inferred_ts: string;
  score: number;
  threshold: number;
  regions: DefectRegionPayload[];
  model_version: string;
  frame_size: [width: number, height: number];
  snapshot: SnapshotDelivery;
  /** Present only when `snapshot` is `"inline"`. */
  snapshot_jpeg_base64?: string;
  /** The part id of the PLC trigger that tagged this frame (OPC UA `PartId`); absent for untriggered frames. */
  part_id?: string;
  /** The recipe the frame was judged under (docs/recipes.md); absent: the camera's own settings. */
  recipe?: string;
}

/** `<prefix>/command/<name>/response`: the answer to one command request. */
export type CommandResponsePayload =
  | { transaction?: string | number; status: "ok"; data: unknown }
  | { transaction?: string | number; status: "error"; error: string; data?: unknown };

/** The typed topic → payload map (keyed by topic kind; {@link Topics} turns a kind into the topic string). */
export interface TopicPayloads {
  status: StatusPayload | StatusWillPayload;
  result: ResultPayload;
  defect: DefectPayload;
  /** Raw JPEG bytes. */
  snapshot: Buffer;
}

export type TopicKind = keyof TopicPayloads;
export type CameraTopicKind = Exclude<TopicKind, "status">;

/** MQTT caps a topic name at 65,535 bytes of UTF-8 (the length prefix is 16 bits). */
const MAX_TOPIC_BYTES = 65_535;

/**
 * Why `segment` cannot be one topic level, or undefined if it can: it must be non-empty and free of the wildcards
 * `+` and `#`, the level separator `/` and NUL. A camera id with a wildcard would make the broker refuse the
 * publish (or turn a subscriber's filter ambiguous), so it is refused here with the id named instead.
 */
function topicLevelProblem(segment: string): string | undefined {
  if (segment.length === 0) return "is empty, but it is used as an MQTT topic level";
  const bad = ["+", "#", "/", "\0"].find((character) => segment.includes(character));
  if (bad === undefined) return undefined;
  return `contains ${JSON.stringify(bad)}, which is not allowed in an MQTT topic level (no '+', '#', '/' or NUL)`;
}

/**
 * Why `topic` cannot be published to, or undefined if it can: MQTT's rule for a topic name (not a filter) is
 * non-empty, no wildcard `+` or `#`, no NUL, at most 65,535 bytes.
 */
export function topicNameProblem(topic: string): string | undefined {
  if (topic.length === 0) return "is empty";
  const bad = ["+", "#", "\0"].find((character) => topic.includes(character));
  if (bad !== undefined)
    return `${JSON.stringify(topic)} contains ${JSON.stringify(bad)}, which a topic name may not`;
  if (Buffer.byteLength(topic, "utf8") > MAX_TOPIC_BYTES) return `is longer than ${MAX_TOPIC_BYTES} bytes`;
  return undefined;
}

/** Throws an `ERR_CONFIG_INVALID` StpmdError naming `what` unless `segment` can be one topic level. */
export function assertTopicSegment(segment: string, what: string): void {
  const problem = topicLevelProblem(segment);
  if (problem !== undefined) {
    throw new StpmdError("ERR_CONFIG_INVALID", `${what} ${JSON.stringify(segment)} ${problem}`);
  }
}

/** Throws unless `prefix` is one or more valid topic levels joined by `/` and does not start with `$`. */
export function assertTopicPrefix(prefix: string): void {
  const where = `MQTT topic prefix ${JSON.stringify(prefix)}`;
  if (prefix.startsWith("$")) {
    throw new StpmdError(
      "ERR_CONFIG_INVALID",
      `${where} starts with '$', which brokers reserve for their own topics`,
    );
  }
  for (const level of prefix.split("/")) {
    const problem = topicLevelProblem(level);
    if (problem !== undefined) {
      throw new StpmdError("ERR_CONFIG_INVALID", `${where}: level ${JSON.stringify(level)} ${problem}`);
    }
  }
}

/** Builds (and validates) the topic strings under one prefix. */
export class Topics {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_TOPIC_PREFIX) {
    assertTopicPrefix(prefix);
    this.prefix = prefix;
  }

  status(): string {
    return `${this.prefix}/status`;
  }

  /** `<prefix>/command/+`: the filter the daemon subscribes to for command requests. */
  commandFilter(): string {
    return `${this.prefix}/${COMMAND_TOPIC_LEVEL}/+`;
  }

  /** The command name of a request topic, or undefined if `topic` is not `<prefix>/command/<name>`. */
  commandName(topic: string): string | undefined {
    const head = `${this.prefix}/${COMMAND_TOPIC_LEVEL}/`;
    if (!topic.startsWith(head)) return undefined;
    const name = topic.slice(head.length);
    return name.length > 0 && !name.includes("/") ? name : undefined;
  }

  /** `<prefix>/command/<name>/response`; `name` comes from a topic the broker matched, so it is one level. */
  commandResponse(name: string): string {
    return `${this.prefix}/${COMMAND_TOPIC_LEVEL}/${name}/response`;
  }

  /**
   * Whether `topic` is one the daemon publishes its own data on or reads requests from (status, a camera's result,
   * defect or snapshot, a command request): a client must not be able to make it answer there.
   */
  isOwn(topic: string): boolean {
    if (topic === this.status() || this.commandName(topic) !== undefined) return true;
    const kinds: readonly CameraTopicKind[] = ["result", "defect", "snapshot"];
    return kinds.some((kind) => topicMatches(`${this.prefix}/+/${kind}`, topic));
  }

  /** `<prefix>/<camera>/<kind>`; throws an `ERR_CONFIG_INVALID` StpmdError for a camera id that is not a level. */
  camera(cameraId: string, kind: CameraTopicKind): string {
    assertTopicSegment(cameraId, "camera id");
    const topic = `${this.prefix}/${cameraId}/${kind}`;
    if (Buffer.byteLength(topic, "utf8") > MAX_TOPIC_BYTES) {
      throw new StpmdError(
        "ERR_CONFIG_INVALID",
        `MQTT topic for camera id ${JSON.stringify(cameraId)} is too long`,
      );
    }
    return topic;
  }
}

/** Whether `topic` matches the subscription filter `filter` (`+` one level, `#` the rest, as MQTT defines). */
export function topicMatches(filter: string, topic: string): boolean {
  const filterLevels = filter.split("/");
  const topicLevels = topic.split("/");
  for (let i = 0; i < filterLevels.length; i++) {
    const level = filterLevels[i]!;
    if (level === "#") return true;
    if (i >= topicLevels.length) return false;
    if (level !== "+" && level !== topicLevels[i]) return false;
  }
  return filterLevels.length === topicLevels.length;
}

/** Serialises a payload for its topic: JSON for the structured topics, the bytes themselves for snapshots. */
export function encodePayload<K extends TopicKind>(kind: K, payload: TopicPayloads[K]): Buffer {
  if (kind === "snapshot") return payload as Buffer;
  return Buffer.from(JSON.stringify(payload), "utf8");
}

export function statusWill(): StatusWillPayload {
  return { state: "offline" };
}

export function buildResultPayload(result: InspectionResult): ResultPayload {
  const { frame } = result;
  return {
    seq: frame.seq,
    capture_ts: jsonTime(frame.captureTs),
    score: Number.isFinite(result.score) ? result.score : null,
    threshold: result.threshold,
    verdict: result.verdict,
    defective: defectiveFlag(result.verdict),
    ...(result.error !== undefined ? { error: result.error } : {}),
    regions: result.regions.length,
    latency_ms: result.inferredTs - frame.captureTs,
    model_version: result.modelVersion,
    ...(frame.partId !== undefined ? { part_id: frame.partId } : {}),
    ...(frame.recipe !== undefined ? { recipe: frame.recipe } : {}),
  };
}

function toSource(
  bbox: readonly [number, number, number, number],
  t: NonNullable<InspectionResult["source"]>,
): [number, number, number, number] {
  return [
    Math.round(t.x + bbox[0] * t.scaleX),
    Math.round(t.y + bbox[1] * t.scaleY),
    Math.round(bbox[2] * t.scaleX),
    Math.round(bbox[3] * t.scaleY),
  ];
}

export function defectEventId(result: InspectionResult): string {
  const { frame } = result;
  return `${frame.cameraId}-${frame.captureTs}-${frame.seq}`;
}

/**
 * The defect event for a result. `snapshot` says how the picture travels; pass the JPEG only for `"inline"`
 * (for `"topic"` the bytes go out as a separate message right after this one).
 */
export function buildDefectPayload(
  result: InspectionResult,
  snapshot: SnapshotDelivery,
  inlineJpeg?: Buffer,
): DefectPayload {
  const { frame } = result;
  const payload: DefectPayload = {
    event_id: defectEventId(result),
    camera: frame.cameraId,
    seq: frame.seq,
    capture_ts: jsonTime(frame.captureTs),
    inferred_ts: jsonTime(result.inferredTs),
    score: result.score,
    threshold: result.threshold,
    regions: result.regions.map((region) => ({
      bbox: [region.bbox[0], region.bbox[1], region.bbox[2], region.bbox[3]],
      ...(result.source ? { bbox_source: toSource(region.bbox, result.source) } : {}),
      area: region.area,
      peak: region.peak,
    })),
    model_version: result.modelVersion,
    frame_size: [frame.width, frame.height],
    snapshot,
    ...(frame.partId !== undefined ? { part_id: frame.partId } : {}),
    ...(frame.recipe !== undefined ? { recipe: frame.recipe } : {}),
  };
  if (snapshot === "inline") {
    if (inlineJpeg === undefined) {
      throw new Error("buildDefectPayload: snapshot 'inline' needs the JPEG bytes");
    }
    payload.snapshot_jpeg_base64 = inlineJpeg.toString("base64");
  }
  return payload;
}
