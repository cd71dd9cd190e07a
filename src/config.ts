/**
 * The daemon's configuration: one YAML (or JSON) file, validated and completed with defaults by the JSON Schema in
 * `config/stpmd.schema.json`, which is also its documentation. Keys stay snake_case in the TypeScript types so that
 * what the code reads is spelled exactly as in the file.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from "yaml";
import { sourceProblem } from "./capture/pipeline-description.js";
import { StpmdError } from "./errors.js";

// ---------------------------------------------------------------------------------------------------------------
// Types (mirror config/stpmd.schema.json; after loadConfig every defaulted key is present)
// ---------------------------------------------------------------------------------------------------------------

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace";

export interface ModelConfig {
  /** Absolute path of the model bundle directory. */
  bundle: string;
  watch: boolean;
  watch_debounce_ms: number;
}

export interface TensorrtProviderConfig {
  name: "tensorrt";
  /** Absolute path. */
  engine_cache_dir: string;
  fp16: boolean;
  device_id: number;
}

export interface CudaProviderConfig {
  name: "cuda";
  device_id: number;
}

export interface CpuProviderConfig {
  name: "cpu";
}

export type ExecutionProviderConfig = TensorrtProviderConfig | CudaProviderConfig | CpuProviderConfig;

export interface InferenceConfig {
  providers: ExecutionProviderConfig[];
  /** 0 = ONNX Runtime's default. */
  intra_op_threads: number;
  max_batch: number;
  max_wait_ms: number;
  /** Bounded frame queue; the oldest frame is dropped when full. Always >= max_batch. */
  queue_size: number;
}

export interface RestartBackoffConfig {
  initial_ms: number;
  max_ms: number;
  factor: number;
}

export interface CameraConfig {
  /** Unique, `^[A-Za-z0-9_-]+$` (an MQTT topic level). */
  id: string;
  /** GStreamer source description, passed through unchanged (its file paths are relative to the process cwd). */
  source: string;
  trigger: "free_run" | "hardware";
  /** 0 disables the stall check. */
  stall_timeout_s: number;
  restart_backoff: RestartBackoffConfig;
  enabled: boolean;
}

export interface MqttTlsConfig {
  /** Absolute paths of readable files. */
  ca?: string;
  cert?: string;
  key?: string;
  reject_unauthorized: boolean;
}

export interface MqttOutboxConfig {
  /** Absolute path. */
  dir: string;
  /** Most events kept (an event and its snapshot count as one). */
  max_messages: number;
  max_bytes: number;
  /**
   * Octal permission bits of entry files and of the directory, e.g. `"0640"`/`"0750"`. Always set by the loader
   * from the schema's defaults; optional only for configs built in code, where DEFAULT_FILE_MODE/DIR_MODE apply.
   */
  file_mode?: string;
  dir_mode?: string;
}

export interface MqttConfig {
  url: string;
  /** Defaults to `stpmd-<hostname>`. */
  client_id: string;
  username?: string;
  /** Also filled in from password_file when that is used. */
  password?: string;
  /** Absolute path of the file the password was read from, when password_file was used. */
  password_file?: string;
  tls?: MqttTlsConfig;
  prefix: string;
  result_qos: 0 | 1 | 2;
  event_qos: 1 | 2;
  snapshot: "topic" | "inline" | "none";
  snapshot_quality: number;
  reconnect_period_ms: number;
  status_interval_s: number;
  outbox: MqttOutboxConfig;
}

export interface CollectionConfig {
  enabled: boolean;
  /** Absolute path. */
  dir: string;
  score_quantile: number;
  min_interval_s: number;
  max_frames_per_camera: number;
  max_bytes: number;
  /** Octal permission bits of saved frames and their directory (see {@link MqttOutboxConfig.file_mode}). */
  file_mode?: string;
  dir_mode?: string;
}

export interface StpmdConfig {
  model: ModelConfig;
  inference: InferenceConfig;
  cameras: CameraConfig[];
  mqtt: MqttConfig;
  collection: CollectionConfig;
  log: { level: LogLevel };
  health: { watchdog: boolean };
}

export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** Prefix of the generic overrides: `STPMD_CONFIG__MQTT__PREFIX=line7` sets `mqtt.prefix`. */
export const CONFIG_ENV_PREFIX = "STPMD_CONFIG__";

/** Named overrides for what typically differs per deployment or is secret. They win over the generic form. */
const NAMED_ENV_OVERRIDES: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["STPMD_MQTT_URL", ["mqtt", "url"]],
  ["STPMD_MQTT_USERNAME", ["mqtt", "username"]],
  ["STPMD_MQTT_PASSWORD", ["mqtt", "password"]],
];

// ---------------------------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------------------------

/** A JSON Schema node, as far as this module reads it. */
interface SchemaNode {
  type?: string;
  description?: string;
  default?: unknown;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  oneOf?: SchemaNode[];
  pattern?: string;
  enum?: unknown[];
  "x-pattern-message"?: string;
  [keyword: string]: unknown;
}

/** Where the schema lies: next to `src/` when run from source, two levels up from `dist/src/` when compiled. */
export function configSchemaPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.resolve(here, "../config/stpmd.schema.json"),
    path.resolve(here, "../../config/stpmd.schema.json"),
  ];
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (found === undefined) {
    throw new StpmdError(
      "ERR_CONFIG_INVALID",
      `config schema not found (looked for ${candidates.join(" and ")})`,
    );
  }
  return found;
}

let cachedSchema: SchemaNode | undefined;
let cachedValidator: ValidateFunction | undefined;

/** The parsed JSON Schema of the config file (shared; do not mutate). */
export function loadConfigSchema(): SchemaNode {
  cachedSchema ??= JSON.parse(fs.readFileSync(configSchemaPath(), "utf8")) as SchemaNode;
  return cachedSchema;
}

function configValidator(): ValidateFunction {
  if (cachedValidator === undefined) {
    // verbose: errors carry the offending value and schema, which the messages quote.
    const ajv = new Ajv({
      allErrors: true,
      useDefaults: true,
      discriminator: true,
      strict: true,
      verbose: true,
    });
    ajv.addKeyword({ keyword: "x-pattern-message", schemaType: "string" });
    cachedValidator = ajv.compile(loadConfigSchema());
  }
  return cachedValidator;
}

// ---------------------------------------------------------------------------------------------------------------
// Problems: every finding carries a key path, so it can be printed with camera ids, YAML lines and env origins
// ---------------------------------------------------------------------------------------------------------------

export type KeyPath = ReadonlyArray<string | number>;

export interface Problem {
  path: KeyPath;
  message: string;
  /** The schema keyword that failed, for schema problems. */
  keyword?: string;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function valueAt(root: unknown, keyPath: KeyPath): unknown {
  let node = root;
  for (const key of keyPath) {
    if (Array.isArray(node) && typeof key === "number") node = node[key];
    else if (isObject(node) && typeof key === "string") node = node[key];
    else return undefined;
  }
  return node;
}

/** Arrays whose items are easier to recognise by a field than by index. */
const ITEM_LABEL_FIELD: Readonly<Record<string, string>> = { cameras: "id", providers: "name" };

/** `cameras[1] (id "line2").stall_timeout_s` */
function formatKeyPath(keyPath: KeyPath, root: unknown): string {
  if (keyPath.length === 0) return "(top level)";
  let text = "";
  keyPath.forEach((key, i) => {
    if (typeof key === "number") {
      text += `[${key}]`;
      const arrayKey = keyPath[i - 1];
      const labelField = typeof arrayKey === "string" ? ITEM_LABEL_FIELD[arrayKey] : undefined;
      const label =
        labelField === undefined ? undefined : valueAt(root, [...keyPath.slice(0, i + 1), labelField]);
      const isLabelItself = keyPath.length === i + 2 && keyPath[i + 1] === labelField;
      if (typeof label === "string" && !isLabelItself) text += ` (${labelField} ${JSON.stringify(label)})`;
    } else {
      text += text === "" ? key : `.${key}`;
    }
  });
  return text;
}

function isSecretKey(keyPath: KeyPath): boolean {
  const last = keyPath[keyPath.length - 1];
  return typeof last === "string" && last.startsWith("password");
}

/** `mqtt://user:secret@host` → `mqtt://user:***@host`, so no message or summary prints a password. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^/@:\s]*:)[^/@\s]*@/i, "$1***@");
}

/** A short rendering of an offending value for `(got …)`. */
function describeValue(value: unknown, keyPath: KeyPath): string {
  if (Array.isArray(value)) return "an array";
  if (isSecretKey(keyPath)) return value === null ? "null" : `a ${typeof value}`;
  if (isObject(value)) return "an object";
  if (typeof value === "string") {
    const shown = redactUrl(value);
    return JSON.stringify(shown.length > 60 ? `${shown.slice(0, 57)}...` : shown);
  }
  return String(value);
}

function withArticle(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Did-you-mean
// ---------------------------------------------------------------------------------------------------------------

/** Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, the commonest typo. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) =>
    Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
      }
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * Allowed keys the user probably meant (at most two): the snake_case spelling of a camelCase key, else keys within a
 * few typos, else keys that contain the unknown one (`qos` → `result_qos`, `event_qos`) or are contained in it.
 */
export function suggestKeys(unknownKey: string, allowedKeys: readonly string[]): string[] {
  const snake = unknownKey
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/-/g, "_")
    .toLowerCase();
  if (allowedKeys.includes(snake)) return [snake];
  const maxTypos = snake.length <= 4 ? 1 : snake.length <= 8 ? 2 : 3;
  const close = allowedKeys
    .map((key) => ({ key, distance: editDistance(snake, key) }))
    .filter(({ distance }) => distance <= maxTypos)
    .sort((x, y) => x.distance - y.distance);
  if (close.length > 0) return close.slice(0, 2).map(({ key }) => key);
  if (snake.length < 3) return [];
  return allowedKeys
    .filter((key) => key.includes(snake) || (key.length >= 3 && snake.includes(key)))
    .slice(0, 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Schema errors → problems
// ---------------------------------------------------------------------------------------------------------------

/** JSON pointer → key path, with array indices as numbers (they print as `[i]`). */
function keyPathOf(instancePath: string, root: unknown): (string | number)[] {
  const keyPath: (string | number)[] = [];
  if (instancePath === "") return keyPath;
  for (const raw of instancePath.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    keyPath.push(Array.isArray(valueAt(root, keyPath)) ? Number(key) : key);
  }
  return keyPath;
}

const COMPARISON: Readonly<Record<string, string>> = {
  minimum: ">=",
  maximum: "<=",
  exclusiveMinimum: ">",
  exclusiveMaximum: "<",
};

/** YAML 1.2 (unlike 1.1) reads yes/no/on/off as strings; say so, as it is the usual surprise. */
function yamlBooleanHint(expectedType: string, value: unknown): string {
  const yaml11Booleans = ["yes", "no", "on", "off", "y", "n"];
  return expectedType === "boolean" &&
    typeof value === "string" &&
    yaml11Booleans.includes(value.toLowerCase())
    ? "; write true or false"
    : "";
}

function problemFromSchemaError(error: ErrorObject, root: unknown): Problem | undefined {
  const keyPath = keyPathOf(error.instancePath, root);
  const got = (value: unknown, at: KeyPath = keyPath) => `(got ${describeValue(value, at)})`;
  const params = error.params as Record<string, unknown>;
  const parentSchema = (error.parentSchema ?? {}) as SchemaNode;
  switch (error.keyword) {
    case "additionalProperties": {
      const key = String(params.additionalProperty);
      const allowed = Object.keys(parentSchema.properties ?? {});
      const suggestions = suggestKeys(key, allowed);
      const hint =
        suggestions.length > 0
          ? `did you mean ${suggestions.join(" or ")}?`
          : `allowed: ${allowed.join(", ")}`;
      return { path: [...keyPath, key], message: `unknown key (${hint})` };
    }
    case "required":
      return { path: [...keyPath, String(params.missingProperty)], message: "required key is missing" };
    case "type": {
      const type = String(params.type);
      if (keyPath.length === 0) {
        return {
          path: keyPath,
          message: `the file must hold a mapping of keys such as "model:" ${got(error.data)}`,
        };
      }
      return {
        path: keyPath,
        message: `must be ${withArticle(type)} ${got(error.data)}${yamlBooleanHint(type, error.data)}`,
      };
    }
    case "minimum":
    case "maximum":
    case "exclusiveMinimum":
    case "exclusiveMaximum":
      return {
        path: keyPath,
        message: `must be ${COMPARISON[error.keyword]} ${String(params.limit)} ${got(error.data)}`,
      };
    case "enum": {
      const allowed = (params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ");
      return { path: keyPath, message: `must be one of ${allowed} ${got(error.data)}` };
    }
    case "pattern": {
      const rule = parentSchema["x-pattern-message"] ?? `must match ${String(params.pattern)}`;
      return { path: keyPath, message: `${rule} ${got(error.data)}` };
    }
    case "minLength":
      return {
        path: keyPath,
        message:
          params.limit === 1 ? "must not be empty" : `must be at least ${String(params.limit)} characters`,
      };
    case "minItems":
      return {
        path: keyPath,
        message: `must list at least ${String(params.limit)} item${params.limit === 1 ? "" : "s"} ${got(error.data)}`,
      };
    case "discriminator":
      // The item schema's own `required` and `enum` on `name` already report a missing or unknown provider name.
      return undefined;
    default:
      return { path: keyPath, message: error.message ?? `fails schema keyword ${error.keyword}` };
  }
}

function schemaProblems(errors: readonly ErrorObject[], root: unknown): Problem[] {
  const problems = errors.flatMap((error) => {
    const problem = problemFromSchemaError(error, root);
    return problem === undefined ? [] : [{ ...problem, keyword: error.keyword }];
  });
  // A value of the wrong type also fails its enum (or const) check; the type error alone says it all.
  const wrongType = new Set(problems.filter((p) => p.keyword === "type").map((p) => pointerOf(p.path)));
  const seen = new Set<string>();
  return problems.filter((problem) => {
    if (problem.keyword !== "type" && wrongType.has(pointerOf(problem.path))) return false;
    const key = `${pointerOf(problem.path)}\n${problem.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function pointerOf(keyPath: KeyPath): string {
  return keyPath.map((key) => `/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`).join("");
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-field rules the schema cannot express (written defensively: the data may also have failed the schema)
// ---------------------------------------------------------------------------------------------------------------

function duplicateProblems(items: unknown, arrayPath: KeyPath, field: string, what: string): Problem[] {
  if (!Array.isArray(items)) return [];
  const firstIndex = new Map<unknown, number>();
  const problems: Problem[] = [];
  items.forEach((item, i) => {
    const value = isObject(item) ? item[field] : undefined;
    if (typeof value !== "string") return;
    const first = firstIndex.get(value);
    if (first === undefined) {
      firstIndex.set(value, i);
      return;
    }
    const arrayName = String(arrayPath[arrayPath.length - 1]);
    problems.push({
      path: [...arrayPath, i, field],
      message: `duplicate ${what} ${JSON.stringify(value)} (also ${arrayName}[${first}])`,
    });
  });
  return problems;
}

/**
 * @param queueSizeDefaulted whether inference.queue_size was filled in from the schema default, which a message
 *   about it must say, as the user never wrote it.
 */
function crossFieldProblems(
  cfg: unknown,
  queueSizeDefaulted: boolean,
  fromSchema: readonly Problem[],
): Problem[] {
  if (!isObject(cfg)) return [];
  // A value that already failed the schema would only add a second, confusing message.
  const failedSchema = new Set(fromSchema.map((problem) => pointerOf(problem.path)));
  const valid = (keyPath: KeyPath) => !failedSchema.has(pointerOf(keyPath));
  const problems: Problem[] = [];
  problems.push(...duplicateProblems(cfg.cameras, ["cameras"], "id", "camera id"));
  problems.push(
    ...duplicateProblems(
      valueAt(cfg, ["inference", "providers"]),
      ["inference", "providers"],
      "name",
      "provider",
    ),
  );

  const queueSize = valueAt(cfg, ["inference", "queue_size"]);
  const maxBatch = valueAt(cfg, ["inference", "max_batch"]);
  const batchValid = valid(["inference", "queue_size"]) && valid(["inference", "max_batch"]);
  if (typeof queueSize === "number" && typeof maxBatch === "number" && batchValid && queueSize < maxBatch) {
    problems.push({
      path: ["inference", "queue_size"],
      message: `must be >= inference.max_batch (${maxBatch}) so a full batch fits (got ${queueSize}${queueSizeDefaulted ? ", the default" : ""})`,
    });
  }

  if (Array.isArray(cfg.cameras)) {
    cfg.cameras.forEach((_, i) => {
      const source = valueAt(cfg, ["cameras", i, "source"]);
      const problem =
        typeof source === "string" && valid(["cameras", i, "source"]) ? sourceProblem(source) : undefined;
      if (problem !== undefined) problems.push({ path: ["cameras", i, "source"], message: problem });
      const initial = valueAt(cfg, ["cameras", i, "restart_backoff", "initial_ms"]);
      const max = valueAt(cfg, ["cameras", i, "restart_backoff", "max_ms"]);
      const backoffValid =
        valid(["cameras", i, "restart_backoff", "initial_ms"]) &&
        valid(["cameras", i, "restart_backoff", "max_ms"]);
      if (typeof initial === "number" && typeof max === "number" && backoffValid && max < initial) {
        problems.push({
          path: ["cameras", i, "restart_backoff", "max_ms"],
          message: `must be >= restart_backoff.initial_ms (${initial}) (got ${max})`,
        });
      }
    });
  }

  if (isObject(cfg.mqtt)) problems.push(...mqttProblems(cfg.mqtt, valid));
  return problems;
}

/**
 * The schema's pattern only checks the scheme and the start of the host; mqtt.js would connect to the part of a
 * host before a space (`mqtt://exa mple` reached host `exa`) and fail at run time on a port out of range.
 */
function urlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${describeValue(url, ["mqtt", "url"])} is not a valid URL (a space in the host, or a port above 65535?)`;
  }
  if (parsed.hostname === "") return `${describeValue(url, ["mqtt", "url"])} has no host`;
  if (parsed.port === "0") return `${describeValue(url, ["mqtt", "url"])}: port must be 1-65535`;
  return undefined;
}

function mqttProblems(mqtt: JsonObject, valid: (keyPath: KeyPath) => boolean): Problem[] {
  const problems: Problem[] = [];
  const has = (key: string) => mqtt[key] !== undefined;
  if (typeof mqtt.url === "string" && valid(["mqtt", "url"])) {
    const problem = urlProblem(mqtt.url);
    if (problem !== undefined) problems.push({ path: ["mqtt", "url"], message: problem });
  }
  if (has("password") && has("password_file")) {
    problems.push({
      path: ["mqtt", "password_file"],
      message: "set together with mqtt.password; use one of them",
    });
  }
  if (has("username") && !has("password") && !has("password_file")) {
    problems.push({ path: ["mqtt", "username"], message: "set without mqtt.password or mqtt.password_file" });
  }
  if (!has("username") && (has("password") || has("password_file"))) {
    const key = has("password") ? "password" : "password_file";
    problems.push({ path: ["mqtt", key], message: "set without mqtt.username" });
  }
  const tls = mqtt.tls;
  if (isObject(tls)) {
    if (tls.cert !== undefined && tls.key === undefined) {
      problems.push({
        path: ["mqtt", "tls", "cert"],
        message: "set without mqtt.tls.key (a client certificate needs its key)",
      });
    }
    if (tls.key !== undefined && tls.cert === undefined) {
      problems.push({ path: ["mqtt", "tls", "key"], message: "set without mqtt.tls.cert" });
    }
    // TLS settings next to a plain URL would be silently unused; a user who wrote them expects encryption.
    if (typeof mqtt.url === "string" && /^(mqtt|ws):\/\//i.test(mqtt.url)) {
      problems.push({
        path: ["mqtt", "tls"],
        message: `is set but mqtt.url ${describeValue(mqtt.url, ["mqtt", "url"])} is not encrypted; use mqtts:// or wss://`,
      });
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------------
// Paths and secret files
// ---------------------------------------------------------------------------------------------------------------

/** `${NAME}` → env NAME, for credential paths such as `${CREDENTIALS_DIRECTORY}/mqtt_password`. */
function expandEnvVars(
  text: string,
  keyPath: KeyPath,
  env: ConfigEnv,
  problems: Problem[],
): string | undefined {
  let ok = true;
  const expanded = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined || value === "") {
      ok = false;
      const hint =
        name === "CREDENTIALS_DIRECTORY" ? " (systemd sets it for units with LoadCredential=)" : "";
      problems.push({
        path: keyPath,
        message: `uses \${${name}} but that environment variable is not set${hint}`,
      });
      return "";
    }
    return value;
  });
  return ok ? expanded : undefined;
}

/** Makes `holder[key]` (a path string) absolute against `baseDir`, expanding `${NAME}` first where allowed. */
function resolvePathField(
  holder: unknown,
  key: string,
  keyPath: KeyPath,
  baseDir: string,
  env: ConfigEnv,
  problems: Problem[],
  options: { expandEnv: boolean } = { expandEnv: false },
): void {
  if (!isObject(holder) || typeof holder[key] !== "string") return;
  const raw = holder[key] as string;
  const expanded = options.expandEnv ? expandEnvVars(raw, keyPath, env, problems) : raw;
  if (expanded !== undefined) holder[key] = path.resolve(baseDir, expanded);
}

function resolveRelativePaths(cfg: unknown, baseDir: string, env: ConfigEnv, problems: Problem[]): void {
  if (!isObject(cfg)) return;
  resolvePathField(cfg.model, "bundle", ["model", "bundle"], baseDir, env, problems);
  resolvePathField(cfg.collection, "dir", ["collection", "dir"], baseDir, env, problems);
  const providers = valueAt(cfg, ["inference", "providers"]);
  if (Array.isArray(providers)) {
    providers.forEach((provider, i) => {
      const keyPath = ["inference", "providers", i, "engine_cache_dir"];
      resolvePathField(provider, "engine_cache_dir", keyPath, baseDir, env, problems);
    });
  }
  const mqtt = cfg.mqtt;
  if (!isObject(mqtt)) return;
  resolvePathField(mqtt.outbox, "dir", ["mqtt", "outbox", "dir"], baseDir, env, problems);
  const secretOptions = { expandEnv: true };
  resolvePathField(mqtt, "password_file", ["mqtt", "password_file"], baseDir, env, problems, secretOptions);
  for (const key of ["ca", "cert", "key"]) {
    resolvePathField(mqtt.tls, key, ["mqtt", "tls", key], baseDir, env, problems, secretOptions);
  }
}

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const reasons: Record<string, string> = {
    ENOENT: "no such file",
    EACCES: "permission denied",
    EISDIR: "is a directory",
    ENOTDIR: "a parent is not a directory",
  };
  return code !== undefined && reasons[code] !== undefined
    ? `${reasons[code]} (${code})`
    : (err as Error).message;
}

function readableFileProblem(file: string, keyPath: KeyPath): Problem | undefined {
  try {
    if (fs.statSync(file).isDirectory())
      return { path: keyPath, message: `${file} is a directory, not a file` };
    fs.accessSync(file, fs.constants.R_OK);
    return undefined;
  } catch (err) {
    return { path: keyPath, message: `cannot read ${file}: ${describeFsError(err)}` };
  }
}

/** A path whose `${NAME}` could not be expanded; that was reported already, so the file is not tried. */
function isUnexpanded(file: string): boolean {
  return /\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(file);
}

/** Checks the TLS files and replaces password_file by the password it holds (keeping the path for the summary). */
function loadSecretFiles(cfg: unknown, problems: Problem[]): void {
  const mqtt = isObject(cfg) ? cfg.mqtt : undefined;
  if (!isObject(mqtt)) return;
  if (isObject(mqtt.tls)) {
    for (const key of ["ca", "cert", "key"]) {
      const file = mqtt.tls[key];
      if (typeof file !== "string" || isUnexpanded(file)) continue;
      const problem = readableFileProblem(file, ["mqtt", "tls", key]);
      if (problem !== undefined) problems.push(problem);
    }
  }
  const file = mqtt.password_file;
  if (typeof file === "string" && !isUnexpanded(file) && mqtt.password === undefined) {
    try {
      // Editors and `echo` add a trailing newline that is not part of the secret.
      const password = fs.readFileSync(file, "utf8").replace(/[\r\n]+$/, "");
      if (password === "") problems.push({ path: ["mqtt", "password_file"], message: `${file} is empty` });
      else mqtt.password = password;
    } catch (err) {
      problems.push({
        path: ["mqtt", "password_file"],
        message: `cannot read ${file}: ${describeFsError(err)}`,
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Environment overrides
// ---------------------------------------------------------------------------------------------------------------

/** The schema node for a key path, looking into discriminated branches (e.g. a provider's `device_id`). */
function schemaNodeAt(schema: SchemaNode, keyPath: KeyPath): SchemaNode | undefined {
  let node: SchemaNode | undefined = schema;
  for (const key of keyPath) {
    if (node === undefined) return undefined;
    if (typeof key === "number") {
      node = node.items;
      continue;
    }
    const branches: SchemaNode[] = [node, ...(node.oneOf ?? [])];
    node = branches.map((branch) => branch.properties?.[key]).find((child) => child !== undefined);
  }
  return node;
}

/**
 * An environment value as the config would hold it: JSON when it parses (`4`, `false`, `[{"name":"cpu"}]`), else
 * the text. Keys whose schema type is string always keep the text, so `client_id=1234` stays a string.
 */
function parseEnvValue(raw: string, keyPath: KeyPath): unknown {
  if (schemaNodeAt(loadConfigSchema(), keyPath)?.type === "string") return raw;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function envKeyPath(name: string): KeyPath | undefined {
  const levels = name.slice(CONFIG_ENV_PREFIX.length).split("__");
  if (levels.some((level) => level === "")) return undefined;
  return levels.map((level) => (/^\d+$/.test(level) ? Number(level) : level.toLowerCase()));
}

/** Sets `value` at `keyPath`, creating missing objects on the way; returns why it could not, if so. */
function setAt(root: JsonObject, keyPath: KeyPath, value: unknown): string | undefined {
  let node: unknown = root;
  for (let i = 0; i < keyPath.length - 1; i++) {
    const key = keyPath[i]!;
    const here = formatKeyPath(keyPath.slice(0, i + 1), root);
    if (typeof key === "number") {
      if (!Array.isArray(node) || node[key] === undefined)
        return `${formatKeyPath(keyPath.slice(0, i), root)} has no item [${key}]`;
      node = node[key];
    } else {
      if (!isObject(node)) return `${formatKeyPath(keyPath.slice(0, i), root)} is not an object`;
      node[key] ??= {};
      node = node[key];
    }
    if (!isObject(node) && !Array.isArray(node)) return `${here} is not an object or a list`;
  }
  const last = keyPath[keyPath.length - 1]!;
  if (typeof last === "number") {
    if (!Array.isArray(node)) return `${formatKeyPath(keyPath.slice(0, -1), root)} is not a list`;
    node[last] = value;
  } else {
    if (!isObject(node)) return `${formatKeyPath(keyPath.slice(0, -1), root)} is not an object`;
    node[last] = value;
  }
  return undefined;
}

interface EnvOverride {
  name: string;
  keyPath: KeyPath;
}

/**
 * Applies `STPMD_CONFIG__A__B=…` and the named `STPMD_MQTT_*` variables to the parsed file, before validation so that
 * overridden values are checked like any other. Empty variables count as unset, as with a shell's `${VAR:-}`.
 */
function applyEnvOverrides(root: JsonObject, env: ConfigEnv, problems: Problem[]): EnvOverride[] {
  const generic = Object.keys(env)
    .filter((name) => name.startsWith(CONFIG_ENV_PREFIX))
    .sort()
    .map((name): [string, KeyPath | undefined] => [name, envKeyPath(name)]);
  const applied: EnvOverride[] = [];
  for (const [name, keyPath] of [...generic, ...NAMED_ENV_OVERRIDES]) {
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    if (keyPath === undefined) {
      problems.push({
        path: [],
        message: `environment variable ${name} has an empty level between "__" separators`,
      });
      continue;
    }
    const isGeneric = name.startsWith(CONFIG_ENV_PREFIX);
    const failure = setAt(root, keyPath, isGeneric ? parseEnvValue(raw, keyPath) : raw);
    if (failure !== undefined)
      problems.push({ path: [], message: `environment variable ${name}: cannot set it, ${failure}` });
    else applied.push({ name, keyPath });
  }
  dropSecretReplacedByEnv(root, applied);
  return applied;
}

/** A password from the environment replaces a password_file from the file, and vice versa; it is an override. */
function dropSecretReplacedByEnv(root: JsonObject, applied: readonly EnvOverride[]): void {
  const mqtt = root.mqtt;
  if (!isObject(mqtt)) return;
  const setByEnv = (key: string) => applied.some((o) => pointerOf(o.keyPath) === pointerOf(["mqtt", key]));
  if (setByEnv("password") && !setByEnv("password_file")) delete mqtt.password_file;
  if (setByEnv("password_file") && !setByEnv("password")) delete mqtt.password;
}

// ---------------------------------------------------------------------------------------------------------------
// YAML
// ---------------------------------------------------------------------------------------------------------------

interface ParsedFile {
  data: unknown;
  /** 1-based line of the key (or list item) at a path, or of its nearest ancestor in the file. */
  lineOf: (keyPath: KeyPath) => number | undefined;
}

function parseConfigText(text: string, problems: Problem[]): ParsedFile | undefined {
  const lineCounter = new LineCounter();
  // merge: lets cameras share settings with `<<: *common`.
  const doc = parseDocument(text.replace(/^\uFEFF/, ""), { lineCounter, prettyErrors: false, merge: true });
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      problems.push({
        path: [],
        message: `YAML syntax error at line ${line}, column ${col}: ${error.message}`,
      });
    }
    return undefined;
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    problems.push({ path: [], message: `YAML error: ${(err as Error).message}` });
    return undefined;
  }
  const lineOf = (keyPath: KeyPath): number | undefined => {
    let node: unknown = doc.contents;
    let offset: number | undefined;
    for (const key of keyPath) {
      if (isMap(node)) {
        const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(key));
        if (pair === undefined) break;
        offset = (pair.key as YamlNode).range?.[0];
        node = pair.value;
      } else if (isSeq(node) && typeof key === "number") {
        const item = node.items[key] as YamlNode | undefined;
        if (item === undefined) break;
        offset = item.range?.[0];
        node = item;
      } else {
        break;
      }
    }
    return offset === undefined ? undefined : lineCounter.linePos(offset).line;
  };
  return { data: data ?? {}, lineOf };
}

// ---------------------------------------------------------------------------------------------------------------
// loadConfig
// ---------------------------------------------------------------------------------------------------------------

function readConfigFile(file: string): string {
  try {
    if (fs.statSync(file).isDirectory()) {
      throw new StpmdError("ERR_CONFIG_INVALID", `cannot read config file ${file}: it is a directory`);
    }
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if (err instanceof StpmdError) throw err;
    throw new StpmdError("ERR_CONFIG_INVALID", `cannot read config file ${file}: ${describeFsError(err)}`, {
      cause: err,
    });
  }
}

function isWithin(keyPath: KeyPath, ancestor: KeyPath): boolean {
  const pointer = pointerOf(keyPath);
  const ancestorPointer = pointerOf(ancestor);
  return ancestor.length > 0 && (pointer === ancestorPointer || pointer.startsWith(`${ancestorPointer}/`));
}

function formatProblems(
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
  const validate = configValidator();
  const queueSizeDefaulted = valueAt(data, ["inference", "queue_size"]) === undefined;
  const fromSchema = validate(data) ? [] : schemaProblems(validate.errors ?? [], data);
  problems.push(...fromSchema, ...crossFieldProblems(data, queueSizeDefaulted, fromSchema));
  resolveRelativePaths(data, path.dirname(absoluteFile), env, problems);
  loadSecretFiles(data, problems);
  if (problems.length > 0) {
    throw new StpmdError(
      "ERR_CONFIG_INVALID",
      formatProblems(absoluteFile, problems, data, parsed, overrides),
    );
  }

  const cfg = data as StpmdConfig;
  cfg.mqtt.client_id ??= `stpmd-${os.hostname()}`;
  origins.set(cfg, { file: absoluteFile, parsed, overrides });
  return cfg;
}

/** Where a loaded config came from, so later findings about it can still name their line or env variable. */
const origins = new WeakMap<StpmdConfig, { file: string; parsed: ParsedFile; overrides: EnvOverride[] }>();

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

// ---------------------------------------------------------------------------------------------------------------
// Summary for `stpmd check-config`
// ---------------------------------------------------------------------------------------------------------------

function formatBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

function formatProvider(provider: ExecutionProviderConfig): string {
  switch (provider.name) {
    case "tensorrt":
      return `tensorrt (device ${provider.device_id}, ${provider.fp16 ? "fp16" : "fp32"}, engines in ${provider.engine_cache_dir})`;
    case "cuda":
      return `cuda (device ${provider.device_id})`;
    case "cpu":
      return "cpu";
  }
}

function formatBroker(mqtt: MqttConfig): string {
  const parts = [`${redactUrl(mqtt.url)} as ${JSON.stringify(mqtt.client_id)}`];
  if (mqtt.username !== undefined) {
    const from = mqtt.password_file !== undefined ? `password from ${mqtt.password_file}` : "password set";
    parts.push(`user ${JSON.stringify(mqtt.username)} (${from})`);
  }
  if (mqtt.tls !== undefined) {
    const files = (["ca", "cert", "key"] as const).flatMap((key) =>
      mqtt.tls?.[key] === undefined ? [] : [`${key} ${mqtt.tls[key]}`],
    );
    const verify = mqtt.tls.reject_unauthorized ? "verifies the broker" : "does NOT verify the broker";
    parts.push(`TLS ${[...files, verify].join(", ")}`);
  }
  return parts.join(", ");
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** A short human summary of a loaded config for `stpmd check-config`; never prints the password. */
export function formatConfigSummary(cfg: StpmdConfig): string {
  const { model, inference, mqtt, collection } = cfg;
  const enabled = cfg.cameras.filter((camera) => camera.enabled).length;
  const idWidth = Math.max(...cfg.cameras.map((camera) => camera.id.length));
  const cameraLines = cfg.cameras.map((camera) => {
    const stall = camera.stall_timeout_s > 0 ? `stall ${camera.stall_timeout_s} s` : "no stall check";
    const state = camera.enabled ? "" : " [disabled]";
    return `  ${camera.id.padEnd(idWidth)}  ${camera.trigger}, ${stall}${state}: ${truncate(camera.source, 80)}`;
  });
  const threads = inference.intra_op_threads === 0 ? "ORT default" : String(inference.intra_op_threads);
  const collectionLine = collection.enabled
    ? `${collection.dir}, scores below the ${collection.score_quantile} quantile, >= ${collection.min_interval_s} s apart, ` +
      `<= ${collection.max_frames_per_camera} frames per camera, <= ${formatBytes(collection.max_bytes)}`
    : "off";
  return [
    `model:      ${model.bundle}${model.watch ? ` (reloaded on change after ${model.watch_debounce_ms} ms)` : ""}`,
    `providers:  ${inference.providers.map(formatProvider).join(" -> ")}`,
    `batching:   up to ${inference.max_batch} frames, waiting <= ${inference.max_wait_ms} ms, queue ${inference.queue_size} frames, threads ${threads}`,
    `cameras:    ${cfg.cameras.length} (${enabled} enabled)`,
    ...cameraLines,
    `broker:     ${formatBroker(mqtt)}`,
    `topics:     ${mqtt.prefix}/..., results QoS ${mqtt.result_qos}, events QoS ${mqtt.event_qos}, snapshots ${mqtt.snapshot === "none" ? "none" : `${mqtt.snapshot} (JPEG quality ${mqtt.snapshot_quality})`}`,
    `outbox:     ${mqtt.outbox.dir} (<= ${mqtt.outbox.max_messages} events, <= ${formatBytes(mqtt.outbox.max_bytes)})`,
    `collection: ${collectionLine}`,
    `log:        ${cfg.log.level}; systemd watchdog ${cfg.health.watchdog ? "on" : "off"}`,
  ].join("\n");
}
