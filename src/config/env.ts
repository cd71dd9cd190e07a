/** Environment overrides: `STPMD_CONFIG__A__B=…` and the named `STPMD_MQTT_*` variables. */
import {
  formatKeyPath,
  isObject,
  type JsonObject,
  type KeyPath,
  type Problem,
  pointerOf,
} from "./problems.js";
import { itemSchema, loadConfigSchema, type SchemaNode } from "./validate.js";

export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** Prefix of the generic overrides: `STPMD_CONFIG__MQTT__PREFIX=line7` sets `mqtt.prefix`. */
export const CONFIG_ENV_PREFIX = "STPMD_CONFIG__";

/** Named overrides for what typically differs per deployment or is secret. They win over the generic form. */
export const NAMED_ENV_OVERRIDES: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["STPMD_MQTT_URL", ["mqtt", "url"]],
  ["STPMD_MQTT_USERNAME", ["mqtt", "username"]],
  ["STPMD_MQTT_PASSWORD", ["mqtt", "password"]],
];

/** The schema node for a key path, looking into discriminated branches (e.g. a provider's `device_id`). */
export function schemaNodeAt(schema: SchemaNode, keyPath: KeyPath): SchemaNode | undefined {
  let node: SchemaNode | undefined = schema;
  for (const key of keyPath) {
    if (node === undefined) return undefined;
    if (typeof key === "number") {
      node = itemSchema(node);
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
export function parseEnvValue(raw: string, keyPath: KeyPath): unknown {
  if (schemaNodeAt(loadConfigSchema(), keyPath)?.type === "string") return raw;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

export function envKeyPath(name: string): KeyPath | undefined {
  const levels = name.slice(CONFIG_ENV_PREFIX.length).split("__");
  if (levels.some((level) => level === "")) return undefined;
  return levels.map((level) => (/^\d+$/.test(level) ? Number(level) : level.toLowerCase()));
}

/** Sets `value` at `keyPath`, creating missing objects on the way; returns why it could not, if so. */
export function setAt(root: JsonObject, keyPath: KeyPath, value: unknown): string | undefined {
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

export interface EnvOverride {
  name: string;
  keyPath: KeyPath;
}

/**
 * Applies `STPMD_CONFIG__A__B=…` and the named `STPMD_MQTT_*` variables to the parsed file, before validation so that
 * overridden values are checked like any other. Empty variables count as unset, as with a shell's `${VAR:-}`.
 */
export function applyEnvOverrides(root: JsonObject, env: ConfigEnv, problems: Problem[]): EnvOverride[] {
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
export function dropSecretReplacedByEnv(root: JsonObject, applied: readonly EnvOverride[]): void {
  const mqtt = root.mqtt;
  if (!isObject(mqtt)) return;
  const setByEnv = (key: string) => applied.some((o) => pointerOf(o.keyPath) === pointerOf(["mqtt", key]));
  if (setByEnv("password") && !setByEnv("password_file")) delete mqtt.password_file;
  if (setByEnv("password_file") && !setByEnv("password")) delete mqtt.password;
}
