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
}
