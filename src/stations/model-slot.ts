import { type FSWatcher, watch } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import type { Manifest } from "../bundle/bundle.js";
import type { InferenceConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import { ortProviders } from "../onnx/ort.js";
import { InspectionLoop } from "../pipeline/inspection-loop.js";
import { Inspector, type StationLookup } from "../pipeline/inspector.js";

/** What a slot's loop hands on: one batch's results (all from this slot's model) and its inference time. */
export type BatchConsumer = (results: InspectionResult[], inferenceMs: number) => void;

/**
 * One loaded bundle: its model, its own frame queue and batches (batches never mix bundles), and its file watch.
 * Cameras naming the same directory share one slot.
 */
export class ModelSlot {
  readonly inspector: Inspector;
  readonly loop: InspectionLoop;
  /** Models built for this slot (inference thread and sessions): the first load, then each reload that built one. */
  builds = 0;
  /** The bundle's files as they were when the model in service was loaded (see {@link bundleFingerprint}). */
  private loadedFiles: string | undefined;
  private watchers: FSWatcher[] = [];
  private reloadTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly dir: string,
    inference: InferenceConfig,
    private readonly logger: Logger,
    consume: BatchConsumer,
    stations: StationLookup,
  ) {
    const log = logger.child({ component: "inspector", bundle: dir });
    this.inspector = new Inspector(
      dir,
      {
        providers: ortProviders(inference.providers),
        intraOpThreads: inference.intra_op_threads,
        onFallback: (provider, reason) =>
          log.warn(
            { provider, reason: reason.split("\n")[0] },
            "execution provider unavailable; trying the next one",
          ),
      },
      log,
      inference.max_batch,
    );
    this.loop = new InspectionLoop(this.inspector, inference, log, consume, stations);
  }

  /** Loads the bundle (throws if it does not load; a model already in service stays). */
  async load(): Promise<Manifest> {
    const files = await bundleFingerprint(this.dir);
    this.builds += 1;
    const manifest = await this.inspector.load();
    this.loadedFiles = files;
    return manifest;
  }

  /**
   * Reloads the bundle if its files changed on disk since the model in service was loaded; a bundle that fails to
   * load keeps the model in service. Files unchanged, nothing is built: building an inference thread and its
   * sessions only to find the same model_version cost every reload a model's memory (25 reloads of an unchanged
   * file took RSS from 216 to 675 MB, issue 20).
   */
  async reloadIfChanged(reason: string): Promise<"swapped" | "unchanged" | "failed"> {
    // taken before the load, so a change during the load is seen by the next reload
    const files = await bundleFingerprint(this.dir);
    if (files !== undefined && files === this.loadedFiles) return "unchanged";
    this.builds += 1;
    const result = await this.inspector.reloadIfChanged(reason);
    if (result !== "failed") this.loadedFiles = files;
    return result;
  }

  /** Stops watching (pending debounced reloads included): at unload and at shutdown, before the drain. */
  unwatch(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    this.reloadTimer = undefined;
  }

  /** Inspects what is queued, then releases the model. */
  async close(): Promise<void> {
    this.unwatch();
    await this.loop.drain();
    await this.inspector.close();
  }

  /**
   * Calls `changed` after the bundle changes on disk, debounced by `debounceMs`. Two watches, because each sees only
   * half of the ways a bundle is replaced: the parent folder sees the directory itself renamed or replaced
   * (`retrain --out`, `mv`, `cp -a`); the directory's own watch sees its files overwritten in place
   * (`cp new/* bundle/`), which the parent never hears of. The directory's watch follows its inode, so it is
   * re-armed whenever the parent reports the name, which is when a new directory may have taken its place.
   */
  watch(debounceMs: number, changed: () => void): void {
    const bundle = this.dir;
    const parent = path.dirname(bundle);
    const name = path.basename(bundle);
    const debounced = (): void => {
      if (this.closed) return;
      if (this.reloadTimer) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(changed, debounceMs);
    };
    let directoryWatch: FSWatcher | undefined;
    const watchDirectory = (): void => {
      directoryWatch?.close();
      this.watchers = this.watchers.filter((w) => w !== directoryWatch);
      directoryWatch = undefined;
      try {
        directoryWatch = watch(bundle, debounced);
        directoryWatch.on("error", () => undefined); // the directory went away; the parent's watch re-arms
        this.watchers.push(directoryWatch);
      } catch {
        // not there right now (being replaced); the parent's watch re-arms when it appears
      }
    };
    try {
      const parentWatch = watch(parent, (_event, file) => {
        if (this.closed) return;
        if (file !== null && !String(file).startsWith(name)) return;
        watchDirectory();
        debounced();
      });
      parentWatch.on("error", (err) =>
        this.logger.warn({ err, bundle }, "bundle watch failed; use SIGHUP to reload"),
      );
      this.watchers.push(parentWatch);
    } catch (err) {
      this.logger.warn({ dir: parent, err }, "cannot watch the bundle folder; use SIGHUP to reload");
    }
    watchDirectory();
  }
}

/**
 * The bundle's files as the file system describes them, without reading them: the directory's inode (a bundle
 * replaced by a rename is a new directory) and each file's name, size, inode and change times (a file overwritten in
 * place keeps its size, not its times). Undefined when the directory cannot be read.
 */
async function bundleFingerprint(dir: string): Promise<string | undefined> {
  try {
    const names = (await readdir(dir)).sort();
    const parts = [`dir ${(await stat(dir)).ino}`];
    for (const name of names) {
      const s = await stat(path.join(dir, name));
      parts.push(`${name} ${s.size} ${s.ino} ${s.mtimeMs} ${s.ctimeMs}`);
    }
    return parts.join("\n");
  } catch {
    return undefined;
  }
}
