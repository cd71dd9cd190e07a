/** Problems: every finding carries a key path, so it can be printed with camera ids, YAML lines and env origins. */
import { redactUrl } from "../core/redact.js";

export { redactUrl };

export type KeyPath = ReadonlyArray<string | number>;

export interface Problem {
  path: KeyPath;
  message: string;
  /** The schema keyword that failed, for schema problems. */
  keyword?: string;
}

export type JsonObject = Record<string, unknown>;

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function valueAt(root: unknown, keyPath: KeyPath): unknown {
  let node = root;
  for (const key of keyPath) {
    if (Array.isArray(node) && typeof key === "number") node = node[key];
    else if (isObject(node) && typeof key === "string") node = node[key];
    else return undefined;
  }
  return node;
}

/** Arrays whose items are easier to recognise by a field than by index. */
export const ITEM_LABEL_FIELD: Readonly<Record<string, string>> = { cameras: "id", providers: "name" };

/** `cameras[1] (id "line2").stall_timeout_s` */
export function formatKeyPath(keyPath: KeyPath, root: unknown): string {
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

export function isSecretKey(keyPath: KeyPath): boolean {
  const last = keyPath[keyPath.length - 1];
  return typeof last === "string" && last.startsWith("password");
}

/** A short rendering of an offending value for `(got …)`. */
export function describeValue(value: unknown, keyPath: KeyPath): string {
  if (Array.isArray(value)) return "an array";
  if (isSecretKey(keyPath)) return value === null ? "null" : `a ${typeof value}`;
  if (isObject(value)) return "an object";
  if (typeof value === "string") {
    const shown = redactUrl(value);
    return JSON.stringify(shown.length > 60 ? `${shown.slice(0, 57)}...` : shown);
  }
  return String(value);
}

/** A value quoted back in an error as JSON, at most {@link MAX_QUOTED} characters of it (a secret only by type). */
export function quoteValue(value: unknown, keyPath: KeyPath): string {
  if (isSecretKey(keyPath)) return describeValue(value, keyPath);
  const text = JSON.stringify(value) ?? String(value);
  return text.length <= MAX_QUOTED ? text : `${text.slice(0, MAX_QUOTED)}… (${text.length} characters)`;
}
const MAX_QUOTED = 80;

export function withArticle(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

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

export function pointerOf(keyPath: KeyPath): string {
  return keyPath.map((key) => `/${String(key).replace(/~/g, "~0").replace(/\//g, "~1")}`).join("");
}
