/** Schema validation (Ajv, defaults filled in) and its errors as problems users can read. */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import {
  describeValue,
  type KeyPath,
  type Problem,
  pointerOf,
  quoteValue,
  suggestKeys,
  valueAt,
  withArticle,
} from "./problems.js";
import { configSchemaJson, THRESHOLD_RULE_TEXT, thresholdRuleSchema } from "./schema.js";

/** A JSON Schema node, as far as this module reads it. */
export interface SchemaNode {
  type?: string;
  description?: string;
  default?: unknown;
  properties?: Record<string, SchemaNode>;
  required?: string[];
  items?: SchemaNode | SchemaNode[];
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
  const?: unknown;
  pattern?: string;
  enum?: unknown[];
  "x-pattern-message"?: string;
  /** What a union accepts, in words, for errors (`a number or {value}`); the description documents the key. */
  expected?: string;
  [keyword: string]: unknown;
}

/** The schema of every item of an array node; undefined for a tuple (`items` as a list) or a non-array. */
export function itemSchema(node: SchemaNode): SchemaNode | undefined {
  return node.items === undefined || Array.isArray(node.items) ? undefined : node.items;
}

let cachedSchema: SchemaNode | undefined;

let cachedValidator: ValidateFunction | undefined;

/** The parsed JSON Schema of the config file (shared; do not mutate). */
export function loadConfigSchema(): SchemaNode {
  cachedSchema ??= configSchemaJson() as SchemaNode;
  return cachedSchema;
}

export function configValidator(): ValidateFunction {
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
    ajv.addKeyword({ keyword: "x-reload", schemaType: "string" }); // reload.ts reads it; nothing to validate
    ajv.addKeyword({ keyword: "expected", schemaType: "string" }); // error messages read it
    cachedValidator = ajv.compile(loadConfigSchema());
  }
  return cachedValidator;
}

/** JSON pointer → key path, with array indices as numbers (they print as `[i]`). */
export function keyPathOf(instancePath: string, root: unknown): (string | number)[] {
  const keyPath: (string | number)[] = [];
  if (instancePath === "") return keyPath;
  for (const raw of instancePath.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    keyPath.push(Array.isArray(valueAt(root, keyPath)) ? Number(key) : key);
  }
  return keyPath;
}

export /**
 * Keys that earlier releases accepted and that are gone, with why: an old config gets this instead of a plain
 * "unknown key". (TensorRT's options: onnxruntime-node's binding passes only the device id to TensorRT, and on that
 * path TensorRT reads no ORT_TENSORRT_* environment variable, so these never reached ONNX Runtime.)
 */
const REMOVED_KEYS: Readonly<Record<string, string>> = {
  engine_cache_dir:
    "onnxruntime-node cannot give TensorRT an engine cache (it passes only device_id), so it never had an effect",
  fp16: "onnxruntime-node cannot switch TensorRT to fp16 (it passes only device_id), so it never had an effect",
};

const COMPARISON: Readonly<Record<string, string>> = {
  minimum: ">=",
  maximum: "<=",
  exclusiveMinimum: ">",
  exclusiveMaximum: "<",
};

/** YAML 1.2 (unlike 1.1) reads yes/no/on/off as strings; say so, as it is the usual surprise. */
export function yamlBooleanHint(expectedType: string, value: unknown): string {
  const yaml11Booleans = ["yes", "no", "on", "off", "y", "n"];
  return expectedType === "boolean" &&
    typeof value === "string" &&
    yaml11Booleans.includes(value.toLowerCase())
    ? "; write true or false"
    : "";
}

/**
 * The schema keywords {@link problemFromSchemaError} words itself; a failure of any other would reach a person in
 * Ajv's own words ("must NOT have …"), so a test keeps every keyword the schemas use in this list.
 */
export const WORDED_KEYWORDS: ReadonlySet<string> = new Set([
  "additionalProperties",
  "required",
  "type",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "enum",
  "pattern",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "additionalItems",
  "uniqueItems",
  "const",
  "anyOf",
  "discriminator",
  // a discriminated union's branches: the discriminator picks one, whose own keywords report
  "oneOf",
]);

export function problemFromSchemaError(error: ErrorObject, root: unknown): Problem | undefined {
  const keyPath = keyPathOf(error.instancePath, root);
  const got = (value: unknown, at: KeyPath = keyPath) => `(got ${describeValue(value, at)})`;
  const params = error.params as Record<string, unknown>;
  const parentSchema = (error.parentSchema ?? {}) as SchemaNode;
  switch (error.keyword) {
    case "additionalProperties": {
      const key = String(params.additionalProperty);
      const removed = REMOVED_KEYS[key];
      if (removed !== undefined && keyPath.includes("providers")) {
        return { path: [...keyPath, key], message: `was removed: ${removed}; delete it` };
      }
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
    case "maxItems":
    case "additionalItems": // a tuple's: the same complaint in other words, so the two collapse into one line
      return {
        path: keyPath,
        message: `must list at most ${String(params.limit)} item${params.limit === 1 ? "" : "s"} (got ${Array.isArray(error.data) ? error.data.length : describeValue(error.data, keyPath)})`,
      };
    case "maxLength":
      return {
        path: keyPath,
        message: `must be at most ${String(params.limit)} characters (got ${typeof error.data === "string" ? error.data.length : describeValue(error.data, keyPath)})`,
      };
    case "uniqueItems": {
      const twice = Array.isArray(error.data) ? error.data[Number(params.i)] : undefined;
      return {
        path: keyPath,
        message: `lists ${describeValue(twice, keyPath)} twice; name each value once`,
      };
    }
    case "const":
      return { path: keyPath, message: `must be ${JSON.stringify(params.allowedValue)} ${got(error.data)}` };
    case "anyOf":
      // the branches' own complaints are dropped (schemaProblems): one line says what would be accepted
      return {
        path: keyPath,
        message: `must be ${unionExpected(parentSchema)} (got ${quoteValue(error.data, keyPath)})`,
      };
    case "discriminator":
      // The item schema's own `required` and `enum` on `name` already report a missing or unknown provider name.
      return undefined;
    default:
      return { path: keyPath, message: error.message ?? `fails schema keyword ${error.keyword}` };
  }
}

/**
 * What a union accepts, in words: its `expected` annotation, else its branches' shapes (`a number or {value}`).
 * Never its description, which says what the key is for rather than what to write.
 */
function unionExpected(union: SchemaNode): string {
  if (typeof union.expected === "string") return union.expected;
  const shapes = (union.anyOf ?? []).map((branch) => {
    if (branch.const !== undefined) return JSON.stringify(branch.const);
    if (branch.properties !== undefined) return `{${Object.keys(branch.properties).join(", ")}}`;
    if (branch.enum !== undefined) return branch.enum.map((value) => JSON.stringify(value)).join(", ");
    return branch.type === undefined ? "another value" : withArticle(branch.type);
  });
  return shapes.length <= 1
    ? (shapes[0] ?? "another value")
    : `${shapes.slice(0, -1).join(", ")} or ${shapes.at(-1)}`;
}

/**
 * The problems of a value that failed its schema, one per key. A value that fits none of a union's branches is
 * one problem saying what the union accepts, instead of one complaint per branch (`unknown key sigma`, `value is
 * missing`, … for a threshold rule that is only out of range).
 */
export function schemaProblems(errors: readonly ErrorObject[], root: unknown): Problem[] {
  // Ajv reports a nested union before the one around it: the last one at a path is the outermost.
  const unions = new Map<string, ErrorObject>();
  for (const error of errors) if (error.keyword === "anyOf") unions.set(error.instancePath, error);
  const inUnion = (path: string) =>
    [...unions.keys()].some((union) => path === union || path.startsWith(`${union}/`));
  const problems = errors.flatMap((error) => {
    if (error.keyword === "anyOf" ? unions.get(error.instancePath) !== error : inUnion(error.instancePath)) {
      return [];
    }
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

let cachedThresholdRule: ValidateFunction | undefined;

/**
 * Why a threshold rule from a client (MQTT, OPC UA, Sparkplug, the console) is unusable, in one line; undefined
 * when it is one the config file would accept (the same schema checks both).
 */
export function thresholdRuleProblem(rule: unknown): string | undefined {
  if (cachedThresholdRule === undefined) {
    const ajv = new Ajv();
    ajv.addKeyword({ keyword: "expected", schemaType: "string" });
    cachedThresholdRule = ajv.compile(thresholdRuleSchema("A camera's threshold rule."));
  }
  if (cachedThresholdRule(rule)) return undefined;
  return `${JSON.stringify(rule)} is not one of ${THRESHOLD_RULE_TEXT}`;
}
