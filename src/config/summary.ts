/** The summary `stpmd check-config` prints. */
import { redactUrl } from "./problems.js";
import type { ExecutionProviderConfig, MqttConfig, OpcuaConfig, StpmdConfig } from "./schema.js";

export function formatBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

export function formatProvider(provider: ExecutionProviderConfig): string {
  switch (provider.name) {
    case "tensorrt":
      return `tensorrt (device ${provider.device_id})`;
    case "cuda":
      return `cuda (device ${provider.device_id})`;
    case "webgpu":
      return "webgpu";
    case "cpu":
      return "cpu";
  }
}

export function formatBroker(mqtt: MqttConfig): string {
  const protocol = mqtt.protocol_version === 5 ? "MQTT 5" : "MQTT 3.1.1";
  const parts = [`${redactUrl(mqtt.url)} as ${JSON.stringify(mqtt.client_id)} over ${protocol}`];
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

function formatSparkplug(cfg: StpmdConfig): string {
  const sparkplug = cfg.sparkplug;
  if (!sparkplug.enabled) return "off";
  const broker = sparkplug.url === undefined ? "mqtt's broker" : redactUrl(sparkplug.url);
  const user =
    sparkplug.username === undefined ? "mqtt's credentials" : `user ${JSON.stringify(sparkplug.username)}`;
  const host =
    sparkplug.primary_host_id === undefined
      ? "no primary host"
      : `primary host ${JSON.stringify(sparkplug.primary_host_id)}`;
  return `spBv1.0/${sparkplug.group_id ?? "?"}/.../${sparkplug.edge_node_id} on ${broker}, ${user}, ${host}, bdSeq in ${sparkplug.bdseq_file}`;
}

export function formatOpcua(opcua: OpcuaConfig): string {
  if (!opcua.enabled) return "off";
  const users = opcua.users.map(
    (user) => `${JSON.stringify(user.username)} (password from ${user.password_file})`,
  );
  if (opcua.allow_anonymous) users.push("anonymous");
  return (
    `opc.tcp://${opcua.bind}:${opcua.port}, ${opcua.security.policies.join("/")} ${opcua.security.modes.join("/")}, ` +
    `users ${users.join(", ")}, certificates in ${opcua.pki_dir}` +
    `${opcua.security.accept_unknown_certificates ? " (accepting ANY client certificate)" : ""}`
  );
}

export function formatHttp(http: StpmdConfig["http"]): string {
  if (!http.enabled) return "off";
  const operators = http.console.users.map((user) => JSON.stringify(user.username)).join(", ");
  const console = !http.console.enabled
    ? "no console"
    : http.console.users.length === 0
      ? "console (read-only: no http.console.users)"
      : `console (operators ${operators})`;
  return `http://${http.bind}:${http.port}: metrics, health, ${console}`;
}

export function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

function formatRecords(records: StpmdConfig["records"]): string {
  if (!records.enabled) return "off";
  const { images, retention } = records;
  const normals = images.normal_sample > 0 ? `1 in ${images.normal_sample} good frames` : "no good frames";
  return (
    `${records.dir}, images of ${images.defects ? "defects" : "no defects"} and ${normals}, ` +
    `<= ${retention.max_age_days} days, <= ${retention.max_rows} rows, <= ${formatBytes(retention.max_bytes)}`
  );
}

/** A short human summary of a loaded config for `stpmd check-config`; never prints the password. */
/** The recipes and the cameras each overrides, and the one in force at start; nothing without recipes. */
function recipesLine(cfg: StpmdConfig): string[] {
  const recipes = Object.entries(cfg.recipes);
  if (recipes.length === 0) return [];
  const list = recipes.map(
    ([name, cameras]) => `${name} (${Object.keys(cameras).join(", ") || "no overrides"})`,
  );
  return [
    `recipes:    ${list.join(", ")}; at start ${cfg.active_recipe ?? "none (the cameras' own settings)"}`,
  ];
}

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
    ...recipesLine(cfg),
    `broker:     ${formatBroker(mqtt)}`,
    `topics:     ${mqtt.prefix}/..., results QoS ${mqtt.result_qos}, events QoS ${mqtt.event_qos}, snapshots ${mqtt.snapshot === "none" ? "none" : `${mqtt.snapshot} (JPEG quality ${mqtt.snapshot_quality})`}`,
    `outbox:     ${mqtt.outbox.dir} (<= ${mqtt.outbox.max_messages} events, <= ${formatBytes(mqtt.outbox.max_bytes)})`,
    `sparkplug:  ${formatSparkplug(cfg)}`,
    `collection: ${collectionLine}`,
    `records:    ${formatRecords(cfg.records)}`,
    `audit:      ${cfg.audit.file} (rotated at ${formatBytes(cfg.audit.max_bytes)}, ${cfg.audit.keep} kept)`,
    `opcua:      ${formatOpcua(cfg.opcua)}`,
    `http:       ${formatHttp(cfg.http)}`,
    `log:        ${cfg.log.level}; systemd watchdog ${cfg.health.watchdog ? "on" : "off"}`,
  ].join("\n");
}
