/** The Sparkplug B sink: the daemon as an edge node with one device per camera (`sparkplug.enabled`). */
import type { SinkFactory } from "../sink.js";
import { SparkplugNode } from "./sparkplug.js";

export const sparkplugSink: SinkFactory = {
  name: "sparkplug",
  create: ({ config, control, logger }) =>
    config.sparkplug.enabled
      ? new SparkplugNode({ sparkplug: config.sparkplug, mqtt: config.mqtt }, control, logger)
      : undefined,
};
