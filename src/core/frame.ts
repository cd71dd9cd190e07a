/** One camera frame as it leaves capture: packed 8-bit RGB at the model's input size. */
export interface Frame {
  /** Camera id from the config (also the MQTT topic level). */
  cameraId: string;
  /** Per-camera sequence number, starting at 0 for each daemon start and never reset by source restarts. */
  seq: number;
  /** Capture time, milliseconds since the Unix epoch (wall clock when the buffer reached the appsink). */
  captureTs: number;
  width: number;
  height: number;
  /** width × height × 3 bytes, row-major, RGB. */
  rgb: Uint8Array;
  /** Part id a PLC trigger attached to this frame (OPC UA `PartId`); carried into the result and the event. */
  partId?: string;
  /**
   * The recipe in force for this camera when the frame was captured (docs/recipes.md): the frame is judged under
   * it, and its result, event, record and PLC answer name it. Absent: the camera's own settings (no recipe). A
   * switch takes effect between two frames because it is decided here, once per frame.
   */
  recipe?: string;
  /**
   * The same frame at the ROI's own resolution (capped by `collection.max_long_side`), when the collector asked the
   * camera for one ({@link FrameOriginal}); `rgb` is then this image resized to the capture size.
   */
  original?: FrameOriginal;
  /**
   * The size of this frame at the ROI's own resolution, when its camera keeps one (`records.images.native`): the
   * capture holds the newest of them for a while, to be fetched by camera and sequence number once the verdict
   * says the frame is worth keeping (NodeServices.nativeFrame).
   */
  native?: { width: number; height: number };
}

/** A frame at the ROI's own resolution (its long side capped by `collection.max_long_side`): packed 8-bit RGB. */
export interface NativeFrame {
  width: number;
  height: number;
  /** width × height × 3 bytes, row-major. */
  rgb: Uint8Array;
}

/**
 * A frame at collection resolution, row-major: packed 8-bit RGBA (opaque; a capsfilter switched for it, whose caps
 * say RGBA so that the sample tells itself from the capture size's) or packed RGB (a camera keeping native frames).
 */
export type FrameOriginal =
  | { width: number; height: number /** width × height × 4 bytes. */; rgba: Uint8Array }
  | { width: number; height: number /** width × height × 3 bytes. */; rgb: Uint8Array };

/**
 * - starting: a pipeline was built and set to PLAYING; no frame yet.
 * - streaming: frames are arriving.
 * - restarting: the pipeline failed (error, end of stream, unparsable description) and a restart is scheduled.
 * - stalled: free-run camera delivered nothing for the stall timeout; it is torn down and restarted.
 * - idle: hardware-triggered camera delivered nothing for the stall timeout (waiting for parts; not a fault).
 * - stopped: stop() was called.
 */
export type CameraState = "starting" | "streaming" | "restarting" | "stalled" | "idle" | "stopped";
