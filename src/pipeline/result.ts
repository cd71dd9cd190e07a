import type { Frame } from "../capture/frame.js";
import type { Region } from "./regions.js";

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
}
