import type { Frame } from "./frame.js";

/** What inference says about one frame; flows from the pipeline to publish and collection. */
export interface InspectionResult {
  frame: Frame;
  /** Image score: the maximum of the anomaly map. */
  score: number;
  /** The model bundle's threshold; `defective` is `score > threshold`. */
  threshold: number;
  defective: boolean;
  /** Connected components of `map > threshold`, largest peak first; empty for normal frames. */
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
  score: number;
  threshold: number;
  defective: boolean;
  /** The defect event's id (`event_id` on MQTT), when the frame was defective. */
  eventId?: string;
  partId?: string;
  regions: number;
}
