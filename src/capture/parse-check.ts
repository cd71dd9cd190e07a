import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The entry that runs the checks, compiled beside this file. */
const CHECK_ENTRY = fileURLToPath(new URL("./parse-check-process.js", import.meta.url));

/**
 * For each description, whether GStreamer can build it (gst_parse_launch: every element exists, every property and
 * value is valid, the links parse), without setting it to PLAYING — so no device is opened and nothing streams.
 * Undefined when it builds, otherwise GStreamer's reason. The checks run in a short-lived process of their own
 * (parse-check-process.ts), as the cameras do: the binding never frees a pipeline (a few hundred kB each), and the
 * daemon itself never loads it. Meant for start-up and `check-config` (a process start: about 0.2 s).
 */
export function pipelineParseProblems(descriptions: readonly string[]): Array<string | undefined> {
  if (descriptions.length === 0) return [];
  const r = spawnSync(process.execPath, [CHECK_ENTRY], {
    input: JSON.stringify(descriptions),
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.status === 0) {
    const problems = JSON.parse(r.stdout) as Array<string | null>;
    return problems.map((p) => p ?? undefined);
  }
  const lastLine =
    r.stderr
      ?.split("\n")
      .filter((l) => l.trim() !== "")
      .at(-1) ?? "";
  const how = r.error?.message ?? (r.signal ? `signal ${r.signal}` : `code ${r.status}`);
  const reason = `the GStreamer check process failed (${how})${lastLine ? `: ${lastLine}` : ""}`;
  return descriptions.map(() => reason);
}
