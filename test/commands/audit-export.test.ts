import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { appendFile, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { AUDIT_CSV_COLUMNS, auditCsvLine } from "../../src/commands/audit-export.js";
import { createLogger } from "../../src/core/log.js";
import { AuditLog } from "../../src/publish/audit/audit-log.js";
import type { StoredAuditEntry } from "../../src/publish/audit.js";
import { STPMD_BIN } from "../helpers/daemon-process.js";
import { tempDir } from "../helpers/tiny-data.js";

const run = promisify(execFile);

/** A log of `n` entries rotated across files of 4 KiB (every 7th a refused reload), ending in a torn line. */
async function writtenLog(n: number): Promise<string> {
  const file = path.join(await tempDir("stpmd-audit-export-"), "audit.jsonl");
  const log = new AuditLog({ file, maxBytes: 4096, keep: 10, fileMode: 0o640 }, createLogger("silent"));
  for (let i = 0; i < n; i++) {
    log.appendSync(
      i % 7 === 0
        ? {
            user: "eve",
            via: "http",
            action: "reload",
            outcome: "refused",
            detail: 'a "quoted", two-line\nreason',
          }
        : {
            user: null,
            via: "sparkplug",
            action: "set_threshold",
            camera: "c1",
            after: { v: i },
            outcome: "ok",
          },
    );
  }
  await appendFile(file, '{"seq":999,"ts":"2026-');
  return file;
}

test("the CSV has one column per field; before/after as JSON, quotes, commas and line breaks quoted (RFC 4180)", () => {
  const entry: StoredAuditEntry = {
    seq: 3,
    ts: "2026-12-07T02:00:00.000Z",
    user: null,
    via: "mqtt",
    action: "set_threshold",
    camera: "c1",
    before: { rule: "bundle", threshold: 0.5 },
    after: { rule: { value: 1 }, threshold: 1 },
    outcome: "refused",
    detail: 'a "b", c\nd',
  };
  assert.equal(
    AUDIT_CSV_COLUMNS.join(","),
    "seq,ts,user,via,action,camera,target,before,after,outcome,detail",
  );
  assert.equal(
    auditCsvLine(entry),
    '3,2026-12-07T02:00:00.000Z,,mqtt,set_threshold,c1,,"{""rule"":""bundle"",""threshold"":0.5}",' +
      '"{""rule"":{""value"":1},""threshold"":1}",refused,"a ""b"", c\nd"\r\n',
  );
});

test("stpmd audit export reads across the rotated files, oldest first, filters, and skips a torn line with a warning", async () => {
  const file = await writtenLog(60);
  assert.ok((await readdir(path.dirname(file))).length >= 3, "the log was rotated twice");
  const { stdout, stderr } = await run(process.execPath, [
    STPMD_BIN,
    "audit",
    "export",
    "--file",
    file,
    "--since",
    "1h",
    "--jsonl",
  ]);
  const entries = stdout
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as StoredAuditEntry);
  assert.deepEqual(
    entries.map((e) => e.seq),
    Array.from({ length: 60 }, (_, i) => i + 1),
  );
  assert.match(stderr, /warning: audit log .*audit\.jsonl: line \d+ is not an entry .*skipped/);
  assert.match(stderr, /exported 60 audit entries/);

  const csv = path.join(path.dirname(file), "reloads.csv");
  const refused = await run(process.execPath, [
    ...[STPMD_BIN, "audit", "export", "--file", file, "--since", "2026-01-01T00:00:00Z"],
    ...["--action", "reload", "--user", "eve", "--csv", "--out", csv],
  ]);
  assert.match(refused.stderr, /exported 9 audit entries to .*reloads\.csv/);
  const text = await readFile(csv, "utf8");
  assert.equal(
    text.split('reason"\r\n').length - 1,
    9,
    "nine rows, each ending in its quoted two-line reason",
  );
  assert.ok(text.startsWith("seq,ts,user,via,action,camera,target,before,after,outcome,detail\r\n1,"));

  const none = await run(process.execPath, [
    ...[STPMD_BIN, "audit", "export", "--file", file, "--since", "1h", "--until", "2h", "--jsonl"],
  ]);
  assert.equal(none.stdout, "");
  await assert.rejects(
    run(process.execPath, [STPMD_BIN, "audit", "export", "--file", file, "--since", "1h"]),
    (err: { stderr: string }) => /give exactly one of --csv and --jsonl/.test(err.stderr),
  );
});
