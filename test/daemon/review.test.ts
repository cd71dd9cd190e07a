import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import type { NodeSnapshot } from "../../src/publish/control.js";
import type { ReviewCounts } from "../../src/publish/records-api.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation } from "../helpers/daemon-process.js";
import { freeLoopbackPort } from "../helpers/mosquitto.js";
import { waitFor } from "../helpers/wait.js";

test("with the console and the record on, each camera's status carries its review counts", async () => {
  const { work, bundle, noise } = await tinyStation("stpmd-review-daemon-");
  const passwordFile = path.join(work, "alice.pass");
  await writeFile(passwordFile, "s3cret pass\n", { mode: 0o600 });
  const port = await freeLoopbackPort();
  const config = testConfig({
    model: { bundle, watch: false },
    cameras: [{ id: "noise", source: replaySource(noise, 20) }],
    mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, "outbox") } },
    http: {
      enabled: true,
      port,
      console: { enabled: true, users: [{ username: "alice", password_file: passwordFile }] },
    },
    collection: { dir: path.join(work, "frames") },
    health: { watchdog: false },
  });
  assert.equal(config.records.labelled_dir, path.join(work, "labelled"), "beside the records by default");
  const seen: InspectionResult[] = [];
  const daemon = new Daemon(config, createLogger("silent"), { hooks: { onResult: (r) => seen.push(r) } });
  await daemon.start();
  try {
    await waitFor("a few frames", () => seen.length >= 3, 60_000);
    const base = `http://127.0.0.1:${port}`;
    const status = (await (await fetch(`${base}/api/status`)).json()) as NodeSnapshot;
    assert.deepEqual(
      status.cameras.map((c) => [c.id, c.review]),
      [["noise", { false_alarms: 0, confirmed_defects: 0 }]],
    );
    assert.deepEqual(daemon.snapshot().cameras[0]!.review, { false_alarms: 0, confirmed_defects: 0 });
    const counts = (await (await fetch(`${base}/api/review/counts`)).json()) as ReviewCounts;
    assert.deepEqual(counts, { cameras: {} });
  } finally {
    await daemon.stop();
  }
});
