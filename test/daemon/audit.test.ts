// End to end: the real daemon with a replay camera, mosquitto and its HTTP server. A threshold changed over MQTT
// and an enable over HTTP (Basic auth) appear in GET /api/audit with who, how, before and after, in the metrics and
// status, and in `stpmd audit export`; refused requests are on record as refused.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import mqtt from "mqtt";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import type { AuditPage, StoredAuditEntry } from "../../src/publish/audit.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, STPMD_BIN, tinyStation } from "../helpers/daemon-process.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");
const run = promisify(execFile);

test("a threshold over MQTT and an enable over HTTP are in GET /api/audit, the metrics, the status and the export", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-audit-e2e-");
  await writeFile(path.join(work, "alice"), "line7-operator\n");
  const broker = await MosquittoBroker.start();
  const port = await freeLoopbackPort();
  const auditFile = path.join(work, "state", "audit.jsonl");
  const results: InspectionResult[] = [];
  const config = testConfig({
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 10, queue_size: 16 },
    cameras: [{ id: "cam", source: replaySource(noise, 20) }],
    mqtt: {
      url: broker.url,
      client_id: "audit-e2e",
      prefix: "line",
      snapshot: "none",
      commands: { enabled: true },
      outbox: { dir: path.join(work, "outbox") },
    },
    http: {
      enabled: true,
      port,
      console: { users: [{ username: "alice", password_file: path.join(work, "alice") }] },
    },
    records: { enabled: false },
    audit: { file: auditFile },
    health: { watchdog: false },
  });
  const client = await mqtt.connectAsync(broker.url, { clientId: "audit-e2e-operator" });
  const responses: { transaction?: string; status: string; error?: string }[] = [];
  client.on("message", (_topic, payload) => responses.push(JSON.parse(payload.toString())));
  await client.subscribeAsync("line/command/+/response", { qos: 1 });
  const daemon = new Daemon(config, logger, { hooks: { onResult: (r) => results.push(r) } });
  const base = `http://127.0.0.1:${port}`;
  const basic = (password: string) => `Basic ${Buffer.from(`alice:${password}`).toString("base64")}`;
  const command = (name: string, body: unknown, password = "line7-operator") =>
    fetch(`${base}/api/command/${name}`, {
      method: "POST",
      headers: { Authorization: basic(password), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  const audit = async (query = ""): Promise<AuditPage> => {
    const res = await fetch(`${base}/api/audit${query}`);
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as AuditPage;
  };
  try {
    await daemon.start();
    await waitFor("frames judged", () => results.length >= 3, 30_000);
    const threshold = daemon.snapshot().cameras[0]!.threshold;

    client.publish(
      "line/command/set_threshold",
      JSON.stringify({ transaction: "t1", camera: "cam", threshold: 1e9 }),
    );
    const ok = await waitFor("set_threshold response", () => responses.find((r) => r.transaction === "t1"));
    assert.equal(ok.status, "ok", JSON.stringify(ok));
    client.publish(
      "line/command/set_threshold",
      JSON.stringify({ transaction: "t2", camera: "nope", threshold: 1 }),
    );
    const refused = await waitFor("refusal", () => responses.find((r) => r.transaction === "t2"));
    assert.equal(refused.status, "error");

    const off = await command("enable_camera", { camera: "cam", enabled: false });
    assert.equal(off.status, 200, await off.text());
    const wrong = await command("enable_camera", { camera: "cam", enabled: true }, "guess");
    assert.equal(wrong.status, 401);
    const on = await command("enable_camera", { camera: "cam", enabled: true });
    assert.equal(on.status, 200, await on.text());

    const { entries, next_cursor } = await audit();
    assert.equal(next_cursor, null);
    const brief = (e: StoredAuditEntry) => [e.action, e.via, e.user, e.camera, e.outcome];
    assert.deepEqual(entries.map(brief), [
      ["enable_camera", "http", "alice", "cam", "ok"],
      ["disable_camera", "http", "alice", "cam", "ok"],
      ["set_threshold", "mqtt", null, "nope", "refused"],
      ["set_threshold", "mqtt", null, "cam", "ok"],
      ["start", "config", null, undefined, "ok"],
    ]);
    assert.deepEqual(
      entries.map((e) => e.seq),
      [5, 4, 3, 2, 1],
    );
    const [enabled, disabled, unknown, set] = entries as [StoredAuditEntry, ...StoredAuditEntry[]];
    assert.deepEqual([disabled!.before, disabled!.after], [true, false]);
    assert.deepEqual([enabled.before, enabled.after], [false, true]);
    assert.deepEqual(set!.before, { rule: "bundle", threshold });
    assert.deepEqual(set!.after, { rule: { value: 1e9 }, threshold: 1e9 });
    assert.match(unknown!.detail ?? "", /unknown camera "nope"/);

    assert.deepEqual(
      (await audit("?user=alice&action=disable_camera")).entries.map((e) => e.seq),
      [4],
    );
    const paged = await audit("?limit=2");
    assert.equal(paged.next_cursor, 4);
    assert.deepEqual(
      (await audit(`?limit=2&cursor=${paged.next_cursor}`)).entries.map((e) => e.seq),
      [3, 2],
    );
    const bad = await fetch(`${base}/api/audit?bogus=1`);
    assert.equal(bad.status, 400);
    assert.equal(await bad.text(), "parameter bogus: is not a parameter of this route\n");

    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^stpmd_audit_entries_total 5$/m);
    assert.match(metrics, /^stpmd_audit_failures_total 0$/m);
    const status = (await (await fetch(`${base}/api/status`)).json()) as { audit: unknown };
    assert.deepEqual(status.audit, { ok: true, file: auditFile, entries: 5, failures: 0 });

    const csv = path.join(work, "audit.csv");
    const { stderr } = await run(process.execPath, [
      STPMD_BIN,
      "audit",
      "export",
      "--file",
      auditFile,
      "--since",
      "1h",
      "--csv",
      "--out",
      csv,
    ]);
    assert.match(stderr, /exported 5 audit entries/);
    const rows = (await readFile(csv, "utf8")).trimEnd().split("\r\n");
    assert.equal(rows[0], "seq,ts,user,via,action,camera,target,before,after,outcome,detail");
    assert.match(rows[2]!, /^2,[^,]+,,mqtt,set_threshold,cam,,"\{""rule"":""bundle"",.*,ok,$/);
    assert.match(rows[4]!, /^4,[^,]+,alice,http,disable_camera,cam,,true,false,ok,$/);
  } finally {
    await daemon.stop();
    await client.endAsync(true);
    await broker.close();
  }
});
