/**
 * The line's interfaces, built from the configuration. Each interface module adds itself here; the daemon starts
 * them after it serves and stops them before it drains.
 */
import type { StpmdConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import type { LineControl, LineInterface } from "./control.js";

export * from "./control.js";

export function createLineInterfaces(
  _config: StpmdConfig,
  _control: LineControl,
  _logger: Logger,
): LineInterface[] {
  const interfaces: LineInterface[] = [];
  return interfaces;
}
