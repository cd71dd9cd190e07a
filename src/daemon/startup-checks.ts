import fs from "node:fs";
import path from "node:path";
import { bundleGeometry, recoverBundle } from "../bundle/bundle.js";
import { pipelineParseProblems } from "../capture/parse-check.js";
import { buildPipelineDescription } from "../capture/pipeline-description.js";
import {
  type CameraConfig,
  cameraUnderRecipe,
  type KeyPath,
  type Problem,
  type StpmdConfig,
} from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { ortProviders } from "../onnx/ort.js";
import { ScorerThread } from "../pipeline/scorer-thread.js";
import { stationBundle } from "../stations/station.js";

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
  // a daemon that cannot write its audit log refuses every operator change: say so at start, not at the first one
  dirs.push([["audit", "file"], path.dirname(config.audit.file)]);
  const problems: Problem[] = [];
  for (const [keyPath, dir] of dirs) {
    const message = stateDirProblem(dir);
    if (message !== undefined) problems.push({ path: keyPath, message });
  }
  return problems;
}

/**
 * Every station's bundle as a killed write left it, repaired before anything loads ({@link recoverBundle}): one
 * missing because a retrain died between its two renames is put back from `<bundle>.old-*`, with a warning; the
 * temp directories of dead writers are removed.
 */
export async function recoverStationBundles(config: StpmdConfig, logger: Logger): Promise<void> {
  const dirs = new Set(camerasAtStart(config).map((camera) => path.resolve(stationBundle(camera, config))));
  for (const dir of dirs) await recoverBundle(dir, logger);
}

/**
 * Each enabled camera's full pipeline (source, ROI crop, stpmd's conversion, scaling and appsink) must build, at
 * the capture size of its station's model (`sizeOf(i)`; undefined when that model did not load).
 */
export function cameraSourceProblems(
  config: StpmdConfig,
  sizeOf: (index: number) => { width: number; height: number } | undefined,
): Problem[] {
  const checked: Array<{ i: number; camera: CameraConfig; description: string }> = [];
  camerasAtStart(config).forEach((camera, i) => {
    if (!camera.enabled) return;
    // without a loadable bundle the camera is still checked, at a size every description must accept
    const { width, height } = sizeOf(i) ?? { width: 256, height: 256 };
    const description = buildPipelineDescription(camera.source, width, height, `cameras[${i}]`, camera.roi);
    checked.push({ i, camera, description });
  });
  const reasons = pipelineParseProblems(checked.map((c) => c.description));
  const problems: Problem[] = [];
  checked.forEach(({ i, camera }, k) => {
    const reason = reasons[k];
    if (reason !== undefined) {
      const roi = camera.roi;
      if (roi && /videocrop/.test(reason)) {
        problems.push({
          path: ["cameras", i, "roi"],
          message: `ROI ${roi.x},${roi.y},${roi.width},${roi.height} does not fit inside the source's frames (GStreamer: ${reason})`,
        });
      } else {
        problems.push({ path: ["cameras", i, "source"], message: `GStreamer cannot build it: ${reason}` });
      }
    }
  });
  return problems;
}

/**
 * Everything `run` checks at start, for `check-config`: every station's bundle is loaded exactly as the daemon
 * loads it (in an inference thread, hashes verified, sessions created on the configured providers) and released.
 */
export async function startupProblems(config: StpmdConfig): Promise<Problem[]> {
  const problems = stateDirProblems(config);
  const sizes = new Map<string, { width: number; height: number } | undefined>();
  const cameras = camerasAtStart(config);
  for (const [i, camera] of cameras.entries()) {
    if (!camera.enabled) continue;
    const dir = stationBundle(camera, config);
    if (sizes.has(dir)) continue;
    try {
      const scorer = await ScorerThread.load(dir, {
        providers: ortProviders(config.inference.providers),
        intraOpThreads: config.inference.intra_op_threads,
      });
      const { capture } = bundleGeometry(scorer.manifest);
      sizes.set(dir, capture);
      await scorer.release();
    } catch (err) {
      sizes.set(dir, undefined);
      problems.push({
        path:
          config.active_recipe !== undefined && config.recipes[config.active_recipe]?.[camera.id]?.bundle
            ? ["recipes", config.active_recipe, camera.id, "bundle"]
            : camera.model
              ? ["cameras", i, "model"]
              : ["model", "bundle"],
        message: errorMessage(err),
      });
    }
  }
  problems.push(...cameraSourceProblems(config, (i) => sizes.get(stationBundle(cameras[i]!, config))));
  return problems;
}

/** The cameras as the daemon starts them: under `active_recipe` when one is set (docs/recipes.md). */
function camerasAtStart(config: StpmdConfig): CameraConfig[] {
  return config.cameras.map((camera) => cameraUnderRecipe(camera, config, config.active_recipe));
}
