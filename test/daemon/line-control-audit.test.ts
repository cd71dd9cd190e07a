// The control and the audit log: a person's change whose entry cannot be written is undone and refused, naming the
// file; the machine's own reloads go ahead, counted. The fault is a folder where the log's file should be (EISDIR):
// every append fails, as on a broken disk, whoever runs the test.
import assert from "node:assert/strict";
import { mkdirSync, renameSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/index.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { MosquittoBroker } from "../../src/demo/broker.js";
import { ControlError } from "../../src/publish/control.js";
import { trainTinyBundle } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { tempDir } from "../helpers/tiny-data.js";

test("an audit log that cannot be written refuses a person's threshold, collection switch and reload, undone; a SIGHUP reload goes ahead, counted", async () => {
  const work = await tempDir("stpmd-control-audit-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1);
  const broker = await MosquittoBroker.start();
  const configFile = path.join(work, "stpmd.yaml");
  const auditFile = path.join(work, "audit.jsonl");
  const writeThreshold = (value: number) =>
    writeFileSync(
      configFile,
      stringify({
        model: { bundle, watch: false },
        cameras: [
          { id: "a", source: "videotestsrc is-live=true ! video/x-raw,framerate=4/1", threshold: { value } },
        ],
        mqtt: { url: broker.url, client_id: "control-audit", outbox: { dir: path.join(work, "outbox") } },
        collection: { enabled: true, dir: path.join(work, "frames") },
        audit: { file: auditFile },
        health: { watchdog: false },
      }),
    );
  writeThreshold(1);
  const { logger } = capturingLogger("info");
  const daemon = new Daemon(loadConfig(configFile), logger, { configPath: configFile });
  const control = daemon.control;
  const snapshot = () => daemon.snapshot();
  const refusal = (err: unknown) => {
    assert.ok(err instanceof ControlError, String(err));
    assert.match(
      err.message,
      new RegExp(
        `^audit log ${auditFile}: EISDIR: .*; the change was not made \\(no unaudited operator change\\)$`,
      ),
    );
    return true;
  };
  try {
    await daemon.start();
    assert.equal(snapshot().audit.entries, 1, "the start entry");
    renameSync(auditFile, `${auditFile}.aside`);
    mkdirSync(auditFile);

    assert.throws(() => control.setThreshold("a", { value: 5 }, { via: "opcua", user: "op" }), refusal);
    assert.equal(snapshot().cameras[0]!.threshold, 1, "the threshold was put back");
    assert.deepEqual(snapshot().cameras[0]!.threshold_rule, { value: 1 });
    assert.throws(() => control.setCollection(false, { via: "sparkplug" }), refusal);
    assert.equal(snapshot().collection.enabled, true, "collection was switched back on");
    writeThreshold(3);
    await assert.rejects(control.reload({ via: "mqtt" }), refusal);
    assert.equal(snapshot().cameras[0]!.threshold, 1, "a refused reload re-reads nothing");

    const outcome = await daemon.reload({ via: "sighup" });
    assert.ok(outcome.configApplied);
    assert.equal(snapshot().cameras[0]!.threshold, 3, "the machine's reload is applied");
    assert.deepEqual(
      { ...snapshot().audit, detail: undefined },
      { ok: false, file: auditFile, entries: 1, failures: 5, detail: undefined },
      "threshold, collection, the refused reload, and the SIGHUP reload's request and result",
    );

    rmdirSync(auditFile);
    assert.deepEqual(control.setThreshold("a", { value: 5 }, { via: "opcua", user: "op" }), {
      old: 3,
      new: 5,
    });
    const { entries } = await daemon.audit.query({ limit: 10 });
    assert.deepEqual(
      entries.map((e) => [e.action, e.via, e.user, e.before, e.after]),
      [
        [
          "set_threshold",
          "opcua",
          "op",
          { rule: { value: 3 }, threshold: 3 },
          { rule: { value: 5 }, threshold: 5 },
        ],
      ],
    );
    assert.equal(snapshot().audit.ok, true);
  } finally {
    await daemon.stop();
    await broker.close();
  }
});
