import assert from "node:assert/strict";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { AuditLog } from "../../../src/publish/audit/audit-log.js";
import type { AuditEntry } from "../../../src/publish/audit.js";
import { capturingLogger } from "../../helpers/logs.js";
import { tempDir } from "../../helpers/tiny-data.js";

function change(i: number, extra: Partial<AuditEntry> = {}): Omit<AuditEntry, "ts"> {
  return {
    user: i % 2 === 0 ? "alice" : "bob",
    via: "mqtt",
    action: "set_threshold",
    camera: i % 3 === 0 ? "cam1" : "cam2",
    before: { threshold: i },
    after: { threshold: i + 1 },
    outcome: "ok",
    ...extra,
  };
}

function openLog(file: string, maxBytes = 1 << 20, keep = 3, fileMode = 0o640) {
  const { logger, lines } = capturingLogger("info");
  return { log: new AuditLog({ file, maxBytes, keep, fileMode }, logger), lines };
}

test("each entry is one JSON line with a sequence number that goes on growing across a restart", async () => {
  const file = path.join(await tempDir("stpmd-audit-"), "audit.jsonl");
  const { log } = openLog(file);
  const first = log.appendSync(change(0));
  await log.append(change(1));
  assert.equal(first.seq, 1);
  const lines = readFileSync(file, "utf8").split("\n");
  assert.equal(lines.length, 3, "two lines, each ended");
  assert.equal(lines[2], "");
  const parsed = JSON.parse(lines[1]!) as AuditEntry & { seq: number };
  assert.equal(parsed.seq, 2);
  assert.equal(parsed.user, "bob");
  assert.deepEqual(parsed.after, { threshold: 2 });
  assert.ok(Math.abs(Date.parse(parsed.ts) - Date.now()) < 5000);
  assert.equal((statSync(file).mode & 0o777).toString(8), "640");
  const grouped = path.join(path.dirname(file), "grouped.jsonl");
  const umask = process.umask(0o027);
  try {
    openLog(grouped, 1 << 20, 3, 0o660).log.appendSync(change(0));
  } finally {
    process.umask(umask);
  }
  assert.equal(
    (statSync(grouped).mode & 0o777).toString(8),
    "660",
    "the configured mode, whatever the umask",
  );
  const { log: again } = openLog(file);
  assert.equal(again.appendSync(change(2)).seq, 3, "a new process continues the numbering");
  assert.deepEqual(again.health(), { ok: true, file, entries: 1, failures: 0 });
});

test("queries filter by user, action, camera and time, newest first, and page with the cursor", async () => {
  const file = path.join(await tempDir("stpmd-audit-"), "audit.jsonl");
  const { log } = openLog(file);
  for (let i = 0; i < 25; i++) log.appendSync(change(i, i === 7 ? { action: "enable_camera" } : {}));
  const all = await log.query({ limit: 1000 });
  assert.equal(all.entries.length, 25);
  assert.deepEqual(
    all.entries.slice(0, 3).map((e) => e.seq),
    [25, 24, 23],
  );
  assert.equal(all.next_cursor, null);
  const alice = await log.query({ user: "alice", limit: 1000 });
  assert.equal(alice.entries.length, 13);
  assert.ok(alice.entries.every((e) => e.user === "alice"));
  assert.deepEqual(
    (await log.query({ action: "enable_camera", limit: 10 })).entries.map((e) => e.seq),
    [8],
  );
  assert.equal((await log.query({ camera: "cam1", limit: 1000 })).entries.length, 9);
  assert.equal((await log.query({ since: Date.now() + 60_000, limit: 10 })).entries.length, 0);
  assert.equal((await log.query({ until: Date.now() - 60_000, limit: 10 })).entries.length, 0);
  const seen: number[] = [];
  let cursor: number | undefined;
  for (let pages = 0; pages < 10; pages++) {
    const page = await log.query({ limit: 10, ...(cursor !== undefined ? { cursor } : {}) });
    seen.push(...page.entries.map((e) => e.seq));
    if (page.next_cursor === null) break;
    cursor = page.next_cursor;
  }
  assert.deepEqual(
    seen,
    Array.from({ length: 25 }, (_, i) => 25 - i),
    "three pages, every entry once",
  );
});

test("at max_bytes the log rotates, keeping `keep` previous files; the reader reads across them", async () => {
  const dir = await tempDir("stpmd-audit-");
  const file = path.join(dir, "audit.jsonl");
  const { log, lines } = openLog(file, 4096, 2);
  const size = Buffer.byteLength(
    `${JSON.stringify({ seq: 1, ts: new Date().toISOString(), ...change(1) })}\n`,
  );
  const perFile = Math.floor(4096 / size);
  const n = perFile * 5;
  for (let i = 0; i < n; i++) log.appendSync(change(i));
  assert.deepEqual(readdirSync(dir).sort(), ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
  for (const name of readdirSync(dir)) assert.ok(statSync(path.join(dir, name)).size <= 4096, name);
  const { entries } = await log.query({ limit: 1000 });
  const held = entries.length;
  assert.ok(held >= perFile * 2 && held <= perFile * 3, `${held} entries in three files of ${perFile}`);
  assert.deepEqual(
    entries.map((e) => e.seq),
    Array.from({ length: held }, (_, i) => n - i),
    "the newest entries, contiguous, across the files",
  );
  assert.ok(lines.some((l) => /rotated/.test(l.msg)));
});

test("a torn last line (a power cut mid-append) is skipped with one warning; appending and reading go on", async () => {
  const file = path.join(await tempDir("stpmd-audit-"), "audit.jsonl");
  const { log: before } = openLog(file);
  for (let i = 0; i < 3; i++) before.appendSync(change(i));
  const whole = readFileSync(file, "utf8");
  const next = whole.split("\n")[2]!;
  // the power went while the fourth entry was half written
  appendFileSync(file, `${next.slice(0, 40).replace('"seq":3', '"seq":4')}`);
  const { log, lines } = openLog(file);
  const entry = log.appendSync(change(9));
  assert.equal(entry.seq, 4, "numbering goes on from the last whole entry");
  const text = readFileSync(file, "utf8");
  assert.ok(text.endsWith(`${JSON.stringify(entry)}\n`), "the new entry starts a line of its own");
  const first = await log.query({ limit: 100 });
  const second = await log.query({ limit: 100 });
  assert.deepEqual(
    first.entries.map((e) => e.seq),
    [4, 3, 2, 1],
  );
  assert.deepEqual(second, first);
  const warnings = lines.filter((l) => l.level === 40);
  assert.equal(warnings.length, 2, JSON.stringify(warnings.map((l) => l.msg)));
  assert.match(warnings[0]!.msg, /its last line was torn/);
  assert.match(warnings[1]!.msg, /line 4 is not an entry .*skipped/);
});

test("a line corrupted in the middle of a file is skipped; the lines around it are read", async () => {
  const file = path.join(await tempDir("stpmd-audit-"), "audit.jsonl");
  const { log } = openLog(file);
  for (let i = 0; i < 5; i++) log.appendSync(change(i));
  const lines = readFileSync(file, "utf8").split("\n");
  lines[2] = `${lines[2]!.slice(0, 20)}\u0000\u0000garbage`;
  writeFileSync(file, lines.join("\n"));
  assert.deepEqual(
    (await log.query({ limit: 10 })).entries.map((e) => e.seq),
    [5, 4, 2, 1],
  );
});

test("a deleted folder is made again, with a warning, and the entry is written", async () => {
  const dir = path.join(await tempDir("stpmd-audit-"), "state");
  const file = path.join(dir, "audit.jsonl");
  const { log, lines } = openLog(file);
  log.appendSync(change(0));
  assert.deepEqual(
    lines.filter((l) => l.level >= 40),
    [],
    "a new folder is no problem",
  );
  rmSync(dir, { recursive: true });
  const entry = log.appendSync(change(1));
  assert.ok(existsSync(file));
  assert.deepEqual(
    (await log.query({ limit: 10 })).entries.map((e) => e.seq),
    [entry.seq],
  );
  assert.ok(lines.some((l) => /was missing; made it again/.test(l.msg)));
});

test("a page of the newest entries reads only the files it needs; an unreadable older file fails only the queries that reach it, naming it", async () => {
  const dir = await tempDir("stpmd-audit-");
  const file = path.join(dir, "audit.jsonl");
  const { log } = openLog(file, 4096, 3);
  for (let i = 0; i < 60; i++) log.appendSync(change(i));
  rmSync(`${file}.2`);
  mkdirSync(`${file}.2`);
  const newest = await log.query({ limit: 5 });
  assert.deepEqual(
    newest.entries.map((e) => e.seq),
    [60, 59, 58, 57, 56],
  );
  await assert.rejects(
    log.query({ limit: 1000 }),
    /^Error: audit log .*audit\.jsonl\.2: cannot read: EISDIR/,
  );
});
