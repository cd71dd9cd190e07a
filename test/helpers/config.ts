import {
  type CameraConfig,
  type CollectionConfig,
  completeConfig,
  type MqttConfig,
  type MqttOutboxConfig,
  type PartialConfig,
  type StpmdConfig,
} from "../../src/config/index.js";

/** Everything a config must name; the rest comes from the schema's defaults. */
const REQUIRED: PartialConfig = {
  model: { bundle: "/nonexistent/bundle" },
  cameras: [{ id: "cam", source: "videotestsrc" }],
  mqtt: { url: "mqtt://127.0.0.1:1" },
};

function merge(base: unknown, patch: unknown): unknown {
  if (typeof base !== "object" || base === null || Array.isArray(base)) return patch ?? base;
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch ?? base;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [key, value] of Object.entries(patch)) out[key] = merge(out[key], value);
  return out;
}

/** A complete, validated config: `partial` over the required keys, the schema's defaults for the rest. */
export function testConfig(partial: PartialConfig = {}): StpmdConfig {
  return completeConfig(merge(REQUIRED, partial) as PartialConfig);
}

export function collectionConfig(partial: PartialConfig["collection"] = {}): CollectionConfig {
  return testConfig({ collection: partial }).collection;
}

export function mqttConfig(partial: PartialConfig["mqtt"] = {}): MqttConfig {
  return testConfig({ mqtt: partial }).mqtt;
}

export function cameraConfig(partial: NonNullable<PartialConfig["cameras"]>[number]): CameraConfig {
  return testConfig({ cameras: [partial] }).cameras[0]!;
}

export function outboxConfig(partial: NonNullable<PartialConfig["mqtt"]>["outbox"] = {}): MqttOutboxConfig {
  return testConfig({ mqtt: { outbox: partial } }).mqtt.outbox;
}
