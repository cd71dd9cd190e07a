/** Cross-field rules the schema cannot express (written defensively: the data may also have failed the schema). */
import {
  describeValue,
  isObject,
  type JsonObject,
  type KeyPath,
  type Problem,
  pointerOf,
  valueAt,
} from "./problems.js";

/**
 * Name of the appsink capture appends to every camera's source (it finds it with `findChild`); defined with the
 * rule that reserves it, so the config layer needs nothing from capture.
 */
export const SINK_NAME = "stpmd_sink";

/** Name of the capsfilter before it, whose caps a camera switches to hand the collector one frame at full size. */
export const CAPS_NAME = "stpmd_caps";
/** Name of the appsink of a camera's native frames (`records.images.native`), and of the tee that feeds it. */
export const NATIVE_SINK_NAME = "stpmd_native";
export const TEE_NAME = "stpmd_tee";

/**
 * The topic level of MQTT commands, `<prefix>/command/<name>`: defined with the rule that reserves it as a camera
 * id, so the config layer needs nothing from publish (whose topics use it).
 */
export const COMMAND_TOPIC_LEVEL = "command";

/**
 * The element of each `!`-linked stage of a gst-launch description: its first word, quoted values left out. A
 * property value or element name that merely contains "appsink" (`location=/data/appsink/0.png`) is not one.
 */
function elementNames(description: string): string[] {
  return description
    .replace(/"[^"]*"|'[^']*'/g, '""')
    .split("!")
    .map((stage) => stage.trim().split(/\s+/)[0] ?? "");
}

/**
 * What is wrong with a source description, or undefined when it is usable. The config loader applies the same rule,
 * so `check-config` rejects what a camera would.
 */
export function sourceProblem(source: string): string | undefined {
  const trimmed = source.trim();
  if (trimmed === "") return "must be a non-empty GStreamer source description";
  if (elementNames(trimmed).some((name) => name.toLowerCase() === "appsink")) {
    return (
      "must describe only the source (stpmd appends conversion, scaling and its own appsink); " +
      `remove the appsink from "${trimmed}"`
    );
  }
  for (const reserved of [SINK_NAME, CAPS_NAME, NATIVE_SINK_NAME, TEE_NAME]) {
    if (trimmed.includes(reserved)) return `must not use the reserved element name "${reserved}"`;
  }
  if (trimmed.startsWith("!") || trimmed.endsWith("!")) {
    return `must not start or end with "!" (stpmd links its own stages after the source), got "${trimmed}"`;
  }
  return undefined;
}

export function duplicateProblems(
  items: unknown,
  arrayPath: KeyPath,
  field: string,
  what: string,
): Problem[] {
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
export function crossFieldProblems(
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
  // `<prefix>/command/result` would be both camera "command"'s results and a command named "result".
  if (valueAt(cfg, ["mqtt", "commands", "enabled"]) === true && Array.isArray(cfg.cameras)) {
    cfg.cameras.forEach((_, i) => {
      if (valueAt(cfg, ["cameras", i, "id"]) === COMMAND_TOPIC_LEVEL) {
        problems.push({
          path: ["cameras", i, "id"],
          message: `"${COMMAND_TOPIC_LEVEL}" is the topic level of MQTT commands (mqtt.commands.enabled); rename the camera`,
        });
      }
    });
  }
  problems.push(
    ...duplicateProblems(
      valueAt(cfg, ["http", "console", "users"]),
      ["http", "console", "users"],
      "username",
      "user name",
    ),
  );
  if (isObject(cfg.sparkplug)) problems.push(...sparkplugProblems(cfg.sparkplug, valid));
  if (isObject(cfg.opcua)) problems.push(...opcuaProblems(cfg.opcua, valid));
  return problems;
}

/**
 * OPC UA pairs policy None with mode None only, and a signing policy with Sign or SignAndEncrypt: a list without
 * its partner would leave that entry without an endpoint, which node-opcua skips silently.
 */
export function opcuaProblems(opcua: JsonObject, valid: (keyPath: KeyPath) => boolean): Problem[] {
  const problems: Problem[] = [];
  const security = opcua.security;
  if (
    isObject(security) &&
    valid(["opcua", "security", "policies"]) &&
    valid(["opcua", "security", "modes"])
  ) {
    const policies = Array.isArray(security.policies) ? security.policies : ["Basic256Sha256"];
    const modes = Array.isArray(security.modes) ? security.modes : ["SignAndEncrypt"];
    const noneMode = modes.includes("None");
    const secureMode = modes.some((mode) => mode !== "None");
    if (policies.includes("None") && !noneMode) {
      problems.push({
        path: ["opcua", "security", "policies"],
        message: 'lists "None" but opcua.security.modes does not (policy None needs mode None)',
      });
    }
    if (policies.some((policy) => policy !== "None") && !secureMode) {
      problems.push({
        path: ["opcua", "security", "policies"],
        message: 'lists "Basic256Sha256" but opcua.security.modes has neither "Sign" nor "SignAndEncrypt"',
      });
    }
    if (noneMode && !policies.includes("None")) {
      problems.push({
        path: ["opcua", "security", "modes"],
        message: 'lists "None" but opcua.security.policies does not (mode None needs policy None)',
      });
    }
    if (secureMode && !policies.some((policy) => policy !== "None")) {
      problems.push({
        path: ["opcua", "security", "modes"],
        message: 'lists a signing mode but opcua.security.policies has only "None"',
      });
    }
  }
  problems.push(...duplicateProblems(opcua.users, ["opcua", "users"], "username", "user name"));
  const noUsers = !Array.isArray(opcua.users) || opcua.users.length === 0;
  // node-opcua offers the user-name token only with a signing policy to encrypt the password with; with policy None
  // alone its clients fail with "Cannot find USERNAME user token policy".
  const policies = isObject(security) ? security.policies : undefined;
  if (!noUsers && Array.isArray(policies) && policies.length > 0 && policies.every((p) => p === "None")) {
    problems.push({
      path: ["opcua", "security", "policies"],
      message:
        'has only "None", so users cannot log in (passwords need Basic256Sha256 to travel encrypted); add "Basic256Sha256" and "SignAndEncrypt", or use allow_anonymous without users',
    });
  }
  if (opcua.enabled === true && noUsers && opcua.allow_anonymous !== true) {
    problems.push({
      path: ["opcua", "users"],
      message: "is empty and opcua.allow_anonymous is false, so no client could log in",
    });
  }
  return problems;
}

/**
 * The schema's pattern only checks the scheme and the start of the host; mqtt.js would connect to the part of a
 * host before a space (`mqtt://exa mple` reached host `exa`) and fail at run time on a port out of range.
 */
export function urlProblem(url: string, keyPath: KeyPath = ["mqtt", "url"]): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${describeValue(url, keyPath)} is not a valid URL (a space in the host, or a port above 65535?)`;
  }
  if (parsed.hostname === "") return `${describeValue(url, keyPath)} has no host`;
  if (parsed.port === "0") return `${describeValue(url, keyPath)}: port must be 1-65535`;
  return undefined;
}

/**
 * A broker login's keys (`username`, `password`, `password_file`) under `section` (mqtt, sparkplug): a user name
 * comes with exactly one of password and password_file, and neither comes without a user name.
 */
export function credentialProblems(holder: JsonObject, section: "mqtt" | "sparkplug"): Problem[] {
  const has = (key: string) => holder[key] !== undefined;
  const problems: Problem[] = [];
  if (has("password") && has("password_file")) {
    problems.push({
      path: [section, "password_file"],
      message: `set together with ${section}.password; use one of them`,
    });
  }
  if (has("username") && !has("password") && !has("password_file")) {
    problems.push({
      path: [section, "username"],
      message: `set without ${section}.password or ${section}.password_file`,
    });
  }
  if (!has("username") && (has("password") || has("password_file"))) {
    const key = has("password") ? "password" : "password_file";
    problems.push({ path: [section, key], message: `set without ${section}.username` });
  }
  return problems;
}

export function mqttProblems(mqtt: JsonObject, valid: (keyPath: KeyPath) => boolean): Problem[] {
  const problems: Problem[] = [];
  if (typeof mqtt.url === "string" && valid(["mqtt", "url"])) {
    const problem = urlProblem(mqtt.url);
    if (problem !== undefined) problems.push({ path: ["mqtt", "url"], message: problem });
  }
  problems.push(...credentialProblems(mqtt, "mqtt"));
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

export function sparkplugProblems(sparkplug: JsonObject, valid: (keyPath: KeyPath) => boolean): Problem[] {
  const problems: Problem[] = [];
  const has = (key: string) => sparkplug[key] !== undefined;
  if (sparkplug.enabled === true && !has("group_id")) {
    problems.push({ path: ["sparkplug", "group_id"], message: "is required when sparkplug.enabled is true" });
  }
  if (typeof sparkplug.url === "string" && valid(["sparkplug", "url"])) {
    const problem = urlProblem(sparkplug.url, ["sparkplug", "url"]);
    if (problem !== undefined) problems.push({ path: ["sparkplug", "url"], message: problem });
  }
  problems.push(...credentialProblems(sparkplug, "sparkplug"));
  return problems;
}

/**
 * Whether cameras keep their frames at the ROI's own resolution: the part record saves native images
 * (`records.images.native`) and saves any image at all.
 */
export function keepsNativeFrames(config: {
  records: { enabled: boolean; images: { native: boolean; defects: boolean; normal_sample: number } };
}): boolean {
  const { enabled, images } = config.records;
  return enabled && images.native && (images.defects || images.normal_sample > 0);
}
