/**
 * Checks the GStreamer descriptions given as a JSON array on stdin (see parse-check.ts); prints one JSON array:
 * null for each that builds, GStreamer's reason for each that does not.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type gst from "gstreamer-superficial";
import { errorMessage } from "../core/errors.js";

// CommonJS require: the addon's package.json "main" has no extension, which Node's ESM loader refuses.
const gstreamer = createRequire(import.meta.url)("gstreamer-superficial") as typeof gst;

const descriptions = JSON.parse(readFileSync(0, "utf8")) as string[];
const problems = descriptions.map((description) => {
  try {
    new gstreamer.Pipeline(description);
    return null;
  } catch (err) {
    return errorMessage(err);
  }
});
process.stdout.write(`${JSON.stringify(problems)}\n`);
