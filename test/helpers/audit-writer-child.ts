/**
 * A process appending to the audit log as fast as it can, for the SIGKILL test: entries through the unmodified
 * AuditLog into argv[2] (rotating at 64 KiB, keeping 3 files), a line `acked <seq>` on stdout after each append
 * returned (the entry fsynced). The test kills it with SIGKILL at a moment of its choosing.
 */

import { createLogger } from "../../src/core/log.js";
import { AuditLog } from "../../src/publish/audit/audit-log.js";

// `npm test` runs every file under dist/test/ as a test file, this one too: without a file to write it does nothing
if (process.argv[2] === undefined) process.exit(0);

const log = new AuditLog(
  { file: process.argv[2], maxBytes: 65_536, keep: 3, fileMode: 0o640 },
  createLogger("silent"),
);
for (let i = 0; ; i++) {
  const { seq } = log.appendSync({
    user: "writer",
    via: "http",
    action: "set_threshold",
    camera: `cam${i % 4}`,
    before: { threshold: i },
    after: { threshold: i + 1, note: "x".repeat(i % 200) },
    outcome: "ok",
  });
  process.stdout.write(`acked ${seq}\n`);
}
