/** Loading: file → environment overrides → schema (defaults) → cross-field rules → paths and secrets. */
import os from "node:os";
import path from "node:path";
import { StpmdError } from "../core/errors.js";
import { applyEnvOverrides, type ConfigEnv, type EnvOverride } from "./env.js";
import { loadSecretFiles, resolveRelativePaths } from "./files.js";
import { type ParsedFile, parseConfigText, readConfigFile } from "./parse.js";
import { formatKeyPath, isObject, type KeyPath, type Problem, pointerOf, valueAt } from "./problems.js";
import { recipeBundleProblems, recipeProblems, resolveRecipePaths } from "./recipes.js";
import { crossFieldProblems } from "./rules.js";
import type { StpmdConfig } from "./schema.js";
import { configValidator, schemaProblems } from "./validate.js";

export function isWithin(keyPath: KeyPath, ancestor: KeyPath): boolean {
  const pointer = pointerOf(keyPath);
  const ancestorPointer = pointerOf(ancestor);
  return ancestor.length > 0 && (pointer === ancestorPointer || pointer.startsWith(`${ancestorPointer}/`));
}

export function formatProblems(
  file: string,
  problems: readonly Problem[],
  data: unknown,
  parsed: ParsedFile | undefined,
  overrides: readonly EnvOverride[],
): string {
  const lines = problems.map((problem, order) => {
    const override = overrides.find((o) => isWithin(problem.path, o.keyPath));
    const line = override === undefined && problem.path.length > 0 ? parsed?.lineOf(problem.path) : undefined;
    const where =
      override !== undefined
        ? ` (from environment variable ${override.name})`
        : line !== undefined
          ? ` (line ${line})`
          : "";
    const text =
      problem.path.length > 0 ? `${formatKeyPath(problem.path, data)}: ${problem.message}` : problem.message;
    return { text: `  ${text}${where}`, line: line ?? 0, order };
  });
  // File order reads best; problems without a line (environment, whole file) come first.
  lines.sort((a, b) => a.line - b.line || a.order - b.order);
  const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
  return [`config file ${file} has ${count}:`, ...lines.map((l) => l.text)].join("\n");
}

/**
 * Reads, overrides from the environment, validates and completes the config file. Throws
 * `StpmdError("ERR_CONFIG_INVALID")` listing every problem found, one per line, each with its key path and the file
 * line or environment variable it came from.
 */
export function loadConfig(file: string, env: ConfigEnv = process.env): StpmdConfig {
  const absoluteFile = path.resolve(file);
  const text = readConfigFile(absoluteFile);
  const problems: Problem[] = [];
  const parsed = parseConfigText(text, problems);
  if (parsed === undefined)
    throw new StpmdError("ERR_CONFIG_INVALID", formatProblems(absoluteFile, problems, {}, undefined, []));

  const data = parsed.data;
  const overrides = isObject(data) ? applyEnvOverrides(data, env, problems) : [];
  const cfg = validated(data, path.dirname(absoluteFile), env, problems);
  if (cfg === undefined) {
    throw new StpmdError(
      "ERR_CONFIG_INVALID",
      formatProblems(absoluteFile, problems, data, parsed, overrides),
    );
  }
  origins.set(cfg, { file: absoluteFile, parsed, overrides });
  return cfg;
}

/** The file-independent part of loading: schema (defaults), cross-field rules, paths and secrets. */
function validated(
  data: unknown,
  baseDir: string,
  env: ConfigEnv,
  problems: Problem[],
): StpmdConfig | undefined {
  const validate = configValidator();
  const queueSizeDefaulted = valueAt(data, ["inference", "queue_size"]) === undefined;
  const fromSchema = validate(data) ? [] : schemaProblems(validate.errors ?? [], data);
  problems.push(...fromSchema, ...crossFieldProblems(data, queueSizeDefaulted, fromSchema));
  resolveRelativePaths(data, baseDir, env, problems);
  if (isObject(data)) {
    problems.push(...recipeProblems(data));
    resolveRecipePaths(data, baseDir);
    problems.push(...recipeBundleProblems(data));
  }
  loadSecretFiles(data, problems);
  if (problems.length > 0) return undefined;
  const cfg = data as StpmdConfig;
  cfg.mqtt.client_id ??= `stpmd-${os.hostname()}`;
  cfg.sparkplug.edge_node_id ??= os.hostname();
  // beside the daemon's other state: a test's or a demo's scratch outbox takes its records along
  cfg.records.dir ??= path.join(path.dirname(cfg.mqtt.outbox.dir), "records");
  cfg.records.labelled_dir ??= path.join(path.dirname(cfg.records.dir), "labelled");
  cfg.audit.file ??= path.join(path.dirname(cfg.mqtt.outbox.dir), "audit.jsonl");
  cfg.candidates.dir ??= path.join(path.dirname(cfg.mqtt.outbox.dir), "candidates");
  return cfg;
}

/** A config as {@link completeConfig} takes it: any key with a default may be left out, at any depth. */
export type PartialConfig = DeepPartial<StpmdConfig>;
type DeepPartial<T> = T extends (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/**
 * A complete config from a partial one written in code (tests, the demo, benchmarks): validated and completed with
 * the schema's defaults exactly as {@link loadConfig} does for a file (relative paths against `baseDir`), without
 * environment overrides. Throws `StpmdError("ERR_CONFIG_INVALID")` listing every problem.
 */
export function completeConfig(partial: PartialConfig, options: { baseDir?: string } = {}): StpmdConfig {
  const data = structuredClone(partial) as unknown;
  const problems: Problem[] = [];
  const cfg = validated(data, options.baseDir ?? process.cwd(), {}, problems);
  if (cfg === undefined) {
    throw new StpmdError(
      "ERR_CONFIG_INVALID",
      formatProblems("(built in code)", problems, data, undefined, []),
    );
  }
  return cfg;
}

/** Where a loaded config came from, so later findings about it can still name their line or env variable. */
export const origins = new WeakMap<
  StpmdConfig,
  { file: string; parsed: ParsedFile; overrides: EnvOverride[] }
>();

/**
 * The error for problems found after loading (start-up checks against the machine: directories, GStreamer, the
 * bundle), formatted like the loader's own: key paths with camera ids, and the line or environment variable each
 * key came from.
 */
export function configProblemsError(cfg: StpmdConfig, problems: readonly Problem[]): StpmdError {
  const origin = origins.get(cfg);
  return new StpmdError(
    "ERR_CONFIG_INVALID",
    formatProblems(origin?.file ?? "(built in code)", problems, cfg, origin?.parsed, origin?.overrides ?? []),
  );
}
