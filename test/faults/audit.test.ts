// Fault injection for the audit log, for real: a full tmpfs under a running daemon process (a person's changes are
// refused naming the file, a SIGHUP reload goes ahead and is counted), a file corrupted mid-line before start, and
// a writer process SIGKILLed while appending (every acknowledged entry is there, appending goes on).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { appendFile, readFile, rm, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import mqtt from "mqtt";
import { createLogger } from "../../src/core/log.js";
import { readAuditEntries } from "../../src/publish/audit/audit-files.js";
import { AuditLog } from "../../src/publish/audit/audit-log.js";
import type { AuditPage } from "../../src/publish/audit.js";
import { DaemonProcess, defectiveReplay, replaySource, sleep, waitFor } from "../helpers/daemon-process.js";
import { freeLoopbackPort, MosquittoBroker } from "../helpers/mosquitto.js";
import { tempDir } from "../helpers/tiny-data.js";
import { withTmpfs } from "../helpers/tmpfs.js";

const run = promisify(execFile);

let work: string;
let bundle: string;
let noise: string;
let broker: MosquittoBroker;

before(async () => {
  ({ work, bundle, noise } = await defectiveReplay("stpmd-audit-faults-", 4, 64));
  await writeFile(path.join(work, "alice"), "line7-operator\n");
  broker = await MosquittoBroker.start();
});

after(async () => {
  await broker.close();
});

/** Polls an async condition every 100 ms until it holds; throws naming `what` after `timeoutMs`. */
async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A daemon process whose audit log is `auditFile`, with MQTT commands and the console's commands on. */
async function startDaemon(name: string, auditFile: string) {
  const port = await freeLoopbackPort();
  const config = {
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 5 },
    cameras: [{ id: "cam", source: replaySource(noise, 10) }],
    mqtt: {
      url: broker.url,
      client_id: `stpmd-${name}`,
      prefix: name,
      snapshot: "none",
      commands: { enabled: true },
      outbox: { dir: path.join(work, `${name}-outbox`) },
    },
    records: { enabled: false },
    audit: { file: auditFile },
    http: {
      enabled: true,
      port,
      console: { users: [{ username: "alice", password_file: path.join(work, "alice") }] },
    },
    log: { level: "info" },
    health: { watchdog: false },
  };
  const file = path.join(work, `${name}.json`);
  await writeFile(file, JSON.stringify(config, null, 2));
  const daemon = new DaemonProcess(file);
  const base = `http://127.0.0.1:${port}`;
  const status = async () =>
    (await (await fetch(`${base}/api/status`)).json()) as {
      inspected: number;
      audit: { ok: boolean; entries: number; failures: number; detail?: string };
      cameras: { enabled: boolean; threshold: number }[];
    };
  await until("the daemon serving and inspecting", async () => (await status()).inspected > 0, 60_000);
  const audit = async (): Promise<AuditPage> =>
    (await (await fetch(`${base}/api/audit`)).json()) as AuditPage;
  const enable = (enabled: boolean) =>
    fetch(`${base}/api/command/enable_camera`, {
      method: "POST",
      headers: {
        Authorization: `Basic ${Buffer.from("alice:line7-operator").toString("base64")}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ camera: "cam", enabled }),
    });
  return { daemon, status, audit, enable, base };
}

test("a full tmpfs: a person's threshold (MQTT) and enable (HTTP) are refused naming the audit file, a SIGHUP reload goes ahead and is counted, and with room again changes are audited", async (t) => {
  await withTmpfs(t, "64k", async (mountPoint) => {
    const auditFile = path.join(mountPoint, "audit.jsonl");
    const { daemon, status, audit, enable, base } = await startDaemon("audit-full", auditFile);
    const client = await mqtt.connectAsync(broker.url, { clientId: "audit-full-operator" });
    const responses: { transaction?: string; status: string; error?: string }[] = [];
    client.on("message", (_topic, payload) => responses.push(JSON.parse(payload.toString())));
    await client.subscribeAsync("audit-full/command/+/response", { qos: 1 });
    const setThreshold = async (transaction: string, threshold: number) => {
      client.publish(
        "audit-full/command/set_threshold",
        JSON.stringify({ transaction, camera: "cam", threshold }),
      );
      return waitFor(`response ${transaction}`, () => responses.find((r) => r.transaction === transaction));
    };
    try {
      assert.deepEqual(
        (await audit()).entries.map((e) => e.action),
        ["start"],
      );
      const thresholdBefore = (await status()).cameras[0]!.threshold;
      const { bavail, bsize } = await statfs(mountPoint);
      const filler = path.join(mountPoint, "filler");
      await writeFile(filler, Buffer.alloc(bavail * bsize));
      // an entry that fits in the file's last, partly used block needs no new block: fill that block with empty
      // lines (which the reader passes over) so the next entry needs one, as on a disk filled by the line's writes
      const used = (await readFile(auditFile)).length;
      await appendFile(auditFile, "\n".repeat(Math.ceil(used / bsize) * bsize - used));
      const sizeBefore = (await readFile(auditFile)).length;

      const refused = await setThreshold("t1", 123);
      assert.equal(refused.status, "error");
      assert.match(
        refused.error ?? "",
        new RegExp(`^audit log ${auditFile}: ENOSPC: no space left on device.*the change was not made`),
      );
      const off = await enable(false);
      assert.equal(off.status, 400);
      assert.match(((await off.json()) as { error: string }).error, /^audit log .*audit\.jsonl: ENOSPC/);
      let now = await status();
      assert.equal(now.cameras[0]!.threshold, thresholdBefore, "the threshold was not changed");
      assert.equal(now.cameras[0]!.enabled, true, "the camera was turned back on");
      assert.equal(now.audit.ok, false);
      assert.equal(now.audit.failures, 2);
      assert.match(now.audit.detail ?? "", /ENOSPC/);

      // the machine's own reload is not refused: it runs, and its two entries count as failures
      daemon.child.kill("SIGHUP");
      await until(
        "the reload's entries counted as failures",
        async () => (await status()).audit.failures >= 4,
      );
      assert.ok(daemon.hasLog(/reload requested by sighup/));
      const inspected = (await status()).inspected;
      await until("still inspecting", async () => (await status()).inspected > inspected + 5);
      assert.equal((await readFile(auditFile)).length, sizeBefore, "no partial line was left");

      await rm(filler);
      assert.equal((await setThreshold("t2", 456)).status, "ok");
      now = await status();
      assert.equal(now.cameras[0]!.threshold, 456);
      assert.equal(now.audit.ok, true);
      const { entries, skipped } = await readAuditEntries(auditFile, 5);
      assert.deepEqual(skipped, []);
      assert.deepEqual(
        entries.map((e) => [e.action, e.via]),
        [
          ["start", "config"],
          ["set_threshold", "mqtt"],
        ],
      );
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /^stpmd_audit_entries_total 2$/m);
      assert.match(metrics, /^stpmd_audit_failures_total 4$/m);
      const errors = daemon.logs().filter((l) => l.level === 50 && /^audit log /.test(String(l.msg)));
      assert.equal(errors.length, 4, "one line per entry not written, naming the file");
    } finally {
      await client.endAsync(true);
      await daemon.kill();
    }
  });
});

test("a log corrupted mid-line before start: the daemon starts, appends after it, and the API skips the one bad line with one warning", async () => {
  const dir = await tempDir("stpmd-audit-corrupt-");
  const auditFile = path.join(dir, "audit.jsonl");
  const log = new AuditLog(
    { file: auditFile, maxBytes: 1 << 20, keep: 2, fileMode: 0o640 },
    createLogger("silent"),
  );
  for (let i = 0; i < 3; i++) {
    log.appendSync({ user: "bob", via: "opcua", action: "collection", after: i % 2 === 0, outcome: "ok" });
  }
  const lines = (await readFile(auditFile, "utf8")).split("\n");
  lines[1] = `${lines[1]!.slice(0, 30)}\u0000\u0000\u0000`;
  // and the power went while a fourth entry was half written
  await writeFile(auditFile, `${lines.join("\n")}{"seq":4,"ts":"2026-12-0`);
  const { daemon, audit } = await startDaemon("audit-corrupt", auditFile);
  try {
    const first = await audit();
    await audit();
    assert.deepEqual(
      first.entries.map((e) => [e.seq, e.action]),
      [
        [4, "start"],
        [3, "collection"],
        [1, "collection"],
      ],
    );
    const warnings = daemon.logs().filter((l) => l.level === 40 && /audit log/.test(String(l.msg)));
    assert.deepEqual(
      warnings.map((l) => String(l.msg).replace(auditFile, "<file>")),
      [
        "audit log <file>: its last line was torn (a power cut while appending); it is skipped when read",
        "audit log <file>: line 4 is not an entry (torn by a power cut or corrupted); skipped",
        "audit log <file>: line 2 is not an entry (torn by a power cut or corrupted); skipped",
      ],
      "one warning each (read newest first), however often the log is read",
    );
  } finally {
    await daemon.kill();
  }
});

test("SIGKILL while appending: every acknowledged entry is on disk, at most the last line is torn, and appending goes on after it", async () => {
  const dir = await tempDir("stpmd-audit-killed-");
  const file = path.join(dir, "audit.jsonl");
  const child = spawn(process.execPath, ["dist/test/helpers/audit-writer-child.js", file], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let acked = 0;
  child.stdout!.on("data", (d: Buffer) => {
    for (const m of d.toString().matchAll(/acked (\d+)/g)) acked = Number(m[1]);
  });
  // past two rotations, so the kill can land in a rotation as well as in a write
  await waitFor("600 entries acknowledged", () => acked >= 600, 60_000);
  await sleep(Math.floor(Math.random() * 20));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  const { entries, skipped } = await readAuditEntries(file, 3);
  assert.ok(skipped.length <= 1, `skipped ${JSON.stringify(skipped)}`);
  const seqs = entries.map((e) => e.seq);
  const newest = seqs[seqs.length - 1]!;
  assert.ok(newest >= acked, `entry ${acked} was acknowledged; the newest on disk is ${newest}`);
  assert.deepEqual(
    seqs,
    Array.from({ length: seqs.length }, (_, i) => newest - seqs.length + 1 + i),
    "no gap in the files kept",
  );
  const log = new AuditLog({ file, maxBytes: 65_536, keep: 3, fileMode: 0o640 }, createLogger("silent"));
  const next = log.appendSync({ user: null, via: "sighup", action: "reload", outcome: "ok" });
  assert.equal(next.seq, newest + 1);
  const page = await log.query({ limit: 2 });
  assert.deepEqual(
    page.entries.map((e) => e.seq),
    [newest + 1, newest],
  );
});

test("a file system remounted read-only: the append fails naming the file (EROFS), is counted, and appending resumes once it is writable", async (t) => {
  await withTmpfs(t, "256k", async (mountPoint) => {
    const file = path.join(mountPoint, "audit.jsonl");
    const log = new AuditLog({ file, maxBytes: 1 << 20, keep: 2, fileMode: 0o640 }, createLogger("silent"));
    const entry = { user: "alice", via: "http", action: "collection", after: true, outcome: "ok" } as const;
    log.appendSync(entry);
    await run("mount", ["-o", "remount,ro", mountPoint]);
    try {
      assert.throws(() => log.appendSync(entry), new RegExp(`^Error: audit log ${file}: EROFS`));
    } finally {
      await run("mount", ["-o", "remount,rw", mountPoint]);
    }
    assert.deepEqual(
      { ...log.health(), detail: undefined },
      { ok: false, file, entries: 1, failures: 1, detail: undefined },
    );
    assert.equal(log.appendSync(entry).seq, 2);
    assert.equal(log.health().ok, true);
  });
});
