import type { Frame } from "./frame.js";

/**
 * What became of one frame: judged good (`ok`), judged defective (`defect`), or not judged (`error`: the model gave
 * a score that is not a finite number, so the frame is neither good nor defective). Every output renders it; none
 * turns an `error` into an OK.
 */
export type Verdict = "ok" | "defect" | "error";

/** A verdict where an output carries a `defective` flag: null for `error`, which is neither defective nor good. */
export function defectiveFlag(verdict: Verdict): boolean | null {
  return verdict === "error" ? null : verdict === "defect";
}

/** What inference says about one frame; flows from the pipeline to publish and collection. */
export interface InspectionResult {
  frame: Frame;
  /** Image score: the maximum of the anomaly map; NaN or infinite only with the verdict `error`. */
  score: number;
  /** The threshold in force; the verdict is `defect` when `score > threshold`. */
  threshold: number;
  /** Decided once, by the inspector. */
  verdict: Verdict;
  /** Why the frame could not be judged (verdict `error`): e.g. "the model's score is NaN". */
  error?: string;
  /** Connected components of `map > threshold`, largest peak first; empty unless the verdict is `defect`. */
  regions: Region[];
  /** Anomaly map at frame size (width × height), raw (not normalised). */
  map: Float32Array;
  /** Bundle version string (the manifest's `model_version`). */
  modelVersion: string;
  /** Milliseconds since the epoch when inference finished for the batch holding this frame. */
  inferredTs: number;
  /**
   * Where the map's pixels lie in the camera's source frame (the ROI's offset and the scale between the ROI and the
   * map): source x = x + map x · scaleX. Absent when the station did not say (tests).
   */
  source?: SourceTransform;
}

export interface SourceTransform {
  x: number;
  y: number;
  scaleX: number;
  scaleY: number;
}

/** One connected blob of an anomaly map above a threshold. */
export interface Region {
  /** Inclusive pixel extent: the blob covers columns x..x+width-1 and rows y..y+height-1. */
  bbox: [x: number, y: number, width: number, height: number];
  /** Number of pixels in the blob. */
  area: number;
  /** Largest map value inside the blob. */
  peak: number;
  /** Mean pixel position [x, y] of the blob, in the same pixel coordinates as `bbox`. */
  centroid: [number, number];
}

/** What a station keeps of its last inspected frame (for status and the line's interfaces). */
export interface LastResult {
  seq: number;
  captureTs: number;
  /** NaN or infinite only with the verdict `error` (JSON shows it as null). */
  score: number;
  threshold: number;
  verdict: Verdict;
  /** The defect event's id (`event_id` on MQTT), when the verdict was `defect`. */
  eventId?: string;
  partId?: string;
  /** The recipe the frame was judged under (its frame's `recipe`); absent: the camera's own settings. */
  recipe?: string;
  regions: number;
}
