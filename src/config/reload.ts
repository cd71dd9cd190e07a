/**
 * What a reload (SIGHUP, or any interface's "reload") does with each changed key, as the schema declares it with
 * `x-reload` on the key: the reload code, the warning for keys it cannot apply and the docs are all derived from
 * that declaration, so a key cannot be added without saying how it reloads (a test fails on a key without one).
 *
 * A key that declares a rule is reloaded as one value: a change anywhere inside it (`restart_backoff.max_ms`, the
 * order of `inference.providers`) is a change of that key, named down to the leaf that changed.
 */
import { isDeepStrictEqual } from "node:util";
import { isObject } from "./problems.js";
import { type CameraConfig, RELOAD_RULES, type ReloadRule, type StpmdConfig } from "./schema.js";
import { itemSchema, loadConfigSchema, type SchemaNode } from "./validate.js";

/** The schema keyword a key's reload rule is declared with. */
export const RELOAD_KEYWORD = "x-reload";

export { RELOAD_RULES, type ReloadRule };

/**
 * One line per rule, for the docs:
 * - `live`: applied at once, nothing restarts (a camera's threshold and ignore mask);
 * - `camera`: applied by restarting, starting or stopping only the cameras it concerns;
 * - `restart`: takes effect at the next start of the daemon; a reload logs a warning naming the key.
 */
export const RELOAD_RULE_TEXT: Readonly<Record<ReloadRule, string>> = {
  live: "applied on reload, nothing restarts",
  camera: "applied on reload by restarting only the cameras it concerns",
  restart: "takes effect at the next start (a reload warns)",
};

/** A key that declares its reload rule: `mqtt`, `model.watch`, `cameras[].roi` (`[]`: every item of the array). */
export interface KeyReloadRule {
  key: string;
  rule: ReloadRule;
}

/** A schema's keys with their reload rules, and the keys that have none. */
export interface SchemaReloadRules {
  rules: KeyReloadRule[];
  /** Keys that neither declare a rule nor sit inside a key that does. */
  missing: string[];
}

/** Walks a schema: every property declares a rule or is an object (or array of objects) whose properties do. */
export function schemaReloadRules(schema: SchemaNode): SchemaReloadRules {
  const result: SchemaReloadRules = { rules: [], missing: [] };
  const visit = (node: SchemaNode, key: string): void => {
    const rule = node[RELOAD_KEYWORD];
    if (typeof rule === "string" && (RELOAD_RULES as readonly string[]).includes(rule)) {
      result.rules.push({ key, rule: rule as ReloadRule });
      return;
    }
    const inner = (node.type === "array" && itemSchema(node)) || node;
    const itemKey = inner === node ? key : `${key}[]`;
    if (inner.properties && Object.keys(inner.properties).length > 0) {
      for (const [name, child] of Object.entries(inner.properties)) {
        visit(child, itemKey === "" ? name : `${itemKey}.${name}`);
      }
      return;
    }
    result.missing.push(key);
  };
  visit(schema, "");
  return result;
}

let walked: SchemaReloadRules | undefined;

function walk(): SchemaReloadRules {
  walked ??= schemaReloadRules(loadConfigSchema());
  return walked;
}

/** Every key's reload rule, in the schema's order (for the docs and the reload code). */
export function reloadRules(): readonly KeyReloadRule[] {
  return walk().rules;
}

/** Keys of the schema that have no reload rule (a test keeps this empty). */
export function keysWithoutReloadRule(): readonly string[] {
  return walk().missing;
}

/** The rule of a key as {@link reloadRules} names it (`cameras[].roi`), or of the key that encloses it. */
export function reloadRuleOf(key: string): ReloadRule | undefined {
  let best: KeyReloadRule | undefined;
  for (const r of reloadRules()) {
    const encloses = key === r.key || key.startsWith(`${r.key}.`) || key.startsWith(`${r.key}[`);
    if (encloses && (!best || r.key.length > best.key.length)) best = r;
  }
  return best?.rule;
}

/** A changed key, named down to the leaf that changed (`mqtt.status_interval_s`), with its rule. */
export interface ChangedKey {
  key: string;
  rule: ReloadRule;
}

/**
 * The keys outside `cameras` whose values differ between the running config and a re-read one, each named down
 * to the leaf that changed, with its rule. Cameras are matched by id, not position, so they are compared by
 * {@link cameraChanges}.
 */
export function changedKeys(before: StpmdConfig, after: StpmdConfig): ChangedKey[] {
  const changed: ChangedKey[] = [];
  for (const r of reloadRules()) {
    if (r.key.startsWith("cameras[")) continue;
    const path = r.key.split(".");
    for (const leaf of changedLeaves(valueAtPath(before, path), valueAtPath(after, path), r.key)) {
      changed.push({ key: leaf, rule: r.rule });
    }
  }
  return changed;
}

/** The keys of one camera (as `cameras[].<key>`) that differ between two of its configs, each with its rule. */
export function cameraChanges(before: CameraConfig, after: CameraConfig): ChangedKey[] {
  const changed: ChangedKey[] = [];
  for (const r of reloadRules()) {
    if (!r.key.startsWith("cameras[].")) continue;
    const path = r.key.slice("cameras[].".length).split(".");
    for (const leaf of changedLeaves(valueAtPath(before, path), valueAtPath(after, path), r.key)) {
      changed.push({ key: leaf, rule: r.rule });
    }
  }
  return changed;
}

function valueAtPath(root: unknown, path: readonly string[]): unknown {
  let node = root;
  for (const key of path) node = isObject(node) ? node[key] : undefined;
  return node;
}

/** Where two values differ: the leaves of objects, an array or a scalar as a whole. */
function changedLeaves(a: unknown, b: unknown, key: string): string[] {
  if (isDeepStrictEqual(a, b)) return [];
  if (!isObject(a) || !isObject(b)) return [key];
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...names].flatMap((name) => changedLeaves(a[name], b[name], `${key}.${name}`));
}

/**
 * The config a reload puts in force: the re-read one, except that every key whose rule is `restart` keeps its
 * running value (those take effect at the next start).
 */
export function keepRestartKeys(running: StpmdConfig, next: StpmdConfig): StpmdConfig {
  const result = { ...next } as Record<string, unknown>;
  for (const r of reloadRules()) {
    if (r.rule !== "restart") continue;
    if (r.key.includes("["))
      throw new Error(`reload rule "restart" inside an array (${r.key}) is not supported`);
    const path = r.key.split(".");
    let target = result;
    for (const name of path.slice(0, -1)) {
      const copy = { ...(target[name] as Record<string, unknown>) };
      target[name] = copy;
      target = copy;
    }
    const last = path[path.length - 1]!;
    const value = valueAtPath(running, path);
    if (value === undefined) delete target[last];
    else target[last] = value;
  }
  return result as StpmdConfig;
}
