import type { StpmdConfig } from "../../src/config/index.js";
import type { Logger } from "../../src/core/log.js";
import { CommandExecutor } from "../../src/publish/commands.js";
import type { SinkContext } from "../../src/publish/sink.js";
import type { TestLineControl } from "./line-control.js";

/** What the daemon hands a sink, around a {@link TestLineControl}: for building one sink on its own. */
export function testSinkContext(config: StpmdConfig, control: TestLineControl, logger: Logger): SinkContext {
  return {
    config,
    control,
    logger,
    executor: new CommandExecutor(control, logger),
    node: {
      requestOriginal: () => false,
      collecting: () => control.collection,
      statusReport: () => ({ model_version: null, fps: 0, dropped_frames: 0, cameras: {}, outputs: {} }),
    },
  };
}
