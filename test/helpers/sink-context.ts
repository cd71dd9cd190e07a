import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { StpmdConfig } from "../../src/config/index.js";
import type { Logger } from "../../src/core/log.js";
import { AuditLog } from "../../src/publish/audit/audit-log.js";
import { CommandExecutor } from "../../src/publish/commands.js";
import type { SinkContext } from "../../src/publish/sink.js";
import type { TestLineControl } from "./line-control.js";

/**
 * What the daemon hands a sink, around a {@link TestLineControl}: for building one sink on its own. Its audit log
 * is a real one in a temporary folder (`auditFile` to name another).
 */
export function testSinkContext(
  config: StpmdConfig,
  control: TestLineControl,
  logger: Logger,
  auditFile = path.join(mkdtempSync(path.join(os.tmpdir(), "stpmd-audit-")), "audit.jsonl"),
): SinkContext {
  return {
    config,
    control,
    audit: new AuditLog({ file: auditFile, maxBytes: 1 << 20, keep: 2, fileMode: 0o640 }, logger),
    logger,
    executor: new CommandExecutor(control, logger),
    node: {
      requestOriginal: () => false,
      nativeFrame: async () => null,
      collecting: () => control.collection,
      statusReport: () => ({
        model_version: null,
        fps: 0,
        dropped_frames: 0,
        cameras: {},
        outputs: {},
        recipe: null,
      }),
    },
  };
}
