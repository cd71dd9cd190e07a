import { createRequire } from "node:module";
import type gst from "gstreamer-superficial";
import { errorMessage } from "../core/errors.js";

// CommonJS require: the addon's package.json "main" has no extension, which Node's ESM loader refuses.
const gstreamer = createRequire(import.meta.url)("gstreamer-superficial") as typeof gst;

/**
 * Whether GStreamer can build `description` (gst_parse_launch: every element exists, every property and value is
 * valid, the links parse), without setting it to PLAYING — so no device is opened and nothing streams. Undefined
 * when it builds, otherwise GStreamer's reason. The binding never frees a pipeline, so each check costs its memory
 * once (a few hundred kB); it is meant for start-up and `check-config`, not for a loop.
 */
export function pipelineParseProblem(description: string): string | undefined {
  try {
    new gstreamer.Pipeline(description);
    return undefined;
  } catch (err) {
    return errorMessage(err);
  }
}
