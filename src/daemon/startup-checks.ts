import fs from "node:fs";
import path from "node:path";
import type { Manifest } from "../bundle/bundle.js";
import { pipelineParseProblem } from "../capture/parse-check.js";
import { buildPipelineDescription } from "../capture/pipeline-description.js";
import type { KeyPath, Problem, StpmdConfig } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import { ortProviders } from "../onnx/ort.js";
import { ScorerThread } from "../pipeline/scorer-thread.js";

/**
 * What `stpmd run` would reject at start beyond the config file's own rules: state directories it cannot create
 * or write, camera descriptions GStreamer cannot build, a bundle that does not load. `check-config` runs the same
 * checks, so the two agree; `run` exits 1 on any of them before a camera or the broker connection is started.
 */

/** Why `dir` cannot serve as a state directory (it, or the nearest existing ancestor, is not a writable dir). */
export function stateDirProblem(dir: string): string | undefined {
  let existing = dir;
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(existing);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a component is a file; walking up finds it and names it
      if (code !== "ENOENT" && code !== "ENOTDIR") return `cannot use ${dir}: ${errorMessage(err)}`;
    }
    if (stat !== undefined) {
      if (!stat.isDirectory()) {
        return existing === dir
          ? `${dir} is a ${describeKind(stat)}, not a directory`
          : `cannot create ${dir}: ${existing} is a ${describeKind(stat)}, not a directory`;
      }
      try {
        fs.accessSync(existing, fs.constants.W_OK | fs.constants.X_OK);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? "error";
        return existing === dir
          ? `${dir} is not writable by this user (${code})`
          : `cannot create ${dir}: ${existing} is not writable by this user (${code})`;
      }
      return undefined;
    }
    const parent = path.dirname(existing);
    if (parent === existing) return `cannot create ${dir}: no existing ancestor`;
    existing = parent;
  }
}

function describeKind(stat: fs.Stats): string {
  if (stat.isFile()) return "regular file";
  if (stat.isSymbolicLink()) return "symbolic link";
  if (stat.isSocket()) return "socket";
  if (stat.isFIFO()) return "named pipe";
  return "special file";
}

/** Every state directory the configured daemon writes to. */
export function stateDirProblems(config: StpmdConfig): Problem[] {
  const dirs: [KeyPath, string][] = [[["mqtt", "outbox", "dir"], config.mqtt.outbox.dir]];
  if (config.collection.enabled) dirs.push([["collection", "dir"], config.collection.dir]);
  const problems: Problem[] = [];
  for (const [keyPath, dir] of dirs) {
    const message = stateDirProblem(dir);
    if (message !== undefined) problems.push({ path: keyPath, message });
  }
  return problems;
}

/** Each enabled camera's full pipeline (source + stpmd's conversion, scaling and appsink) must build. */
export function cameraSourceProblems(
  config: StpmdConfig,
  input: Pick<Manifest["input"], "width" | "height">,
): Problem[] {
  const problems: Problem[] = [];
  config.cameras.forEach((camera, i) => {
    if (!camera.enabled) return;
    const description = buildPipelineDescription(camera.source, input.width, input.height);
    const reason = pipelineParseProblem(description);
    if (reason !== undefined) {
      problems.push({ path: ["cameras", i, "source"], message: `GStreamer cannot build it: ${reason}` });
    }
  });
  return problems;
}

/**
 * Everything `run` checks at start, for `check-config`: the bundle is loaded exactly as the daemon loads it (in an
 * inference thread, hashes verified, sessions created on the configured providers) and released again.
 */
export async function startupProblems(config: StpmdConfig): Promise<Problem[]> {
  const problems = stateDirProblems(config);
  let input: Manifest["input"] | undefined;
  try {
    const scorer = await ScorerThread.load(config.model.bundle, {
      providers: ortProviders(config.inference.providers),
      intraOpThreads: config.inference.intra_op_threads,
    });
    input = scorer.manifest.input;
    await scorer.release();
  } catch (err) {
    problems.push({ path: ["model", "bundle"], message: errorMessage(err) });
  }
  // without a loadable bundle the cameras are still checked, at a size every description must accept
  problems.push(...cameraSourceProblems(config, input ?? { width: 256, height: 256 }));
  return problems;
}
