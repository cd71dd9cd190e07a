/**
 * The line's interfaces, built from the configuration. Each interface module adds itself here; the daemon starts
 * them after it serves and stops them before it drains.
 */
import type { StpmdConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import type { LineControl, LineInterface } from "./control.js";
import { SparkplugNode } from "./sparkplug.js";

export * from "./control.js";

export function createLineInterfaces(
  config: StpmdConfig,
  control: LineControl,
  logger: Logger,
): LineInterface[] {
  const interfaces: LineInterface[] = [];
  if (config.sparkplug.enabled) {
    interfaces.push(new SparkplugNode({ sparkplug: config.sparkplug, mqtt: config.mqtt }, control, logger));
  }
  return interfaces;
}
