import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/index.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { MosquittoBroker } from "../../src/demo/broker.js";
import { trainTinyBundle } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
import { tempDir } from "../helpers/tiny-data.js";

test("reloads asked for while one runs queue behind it as one more, which reads the newest file (issue 20, item 1)", async () => {
  const work = await tempDir("stpmd-reload-queue-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1);
  const broker = await MosquittoBroker.start();
  const configFile = path.join(work, "stpmd.yaml");
  const writeThreshold = (value: number) =>
    writeFileSync(
      configFile,
      stringify({
        model: { bundle, watch: false },
        cameras: [
          { id: "a", source: "videotestsrc is-live=true ! video/x-raw,framerate=4/1", threshold: { value } },
        ],
        mqtt: { url: broker.url, client_id: "reload-queue", outbox: { dir: path.join(work, "outbox") } },
        collection: { dir: path.join(work, "frames") },
        health: { watchdog: false },
      }),
    );
  writeThreshold(1);
  const { logger, lines } = capturingLogger("info");
  const daemon = new Daemon(loadConfig(configFile), logger, { configPath: configFile });
  const threshold = () => daemon.snapshot().cameras[0]!.threshold;
  const reloadsLogged = () => lines.filter((l) => /^reload requested by/.test(l.msg)).length;
  try {
    await daemon.start();
    assert.equal(threshold(), 1);

    // A, then B while A's reload runs: B is in force at the end, read by a reload of its own
    writeThreshold(11);
    const first = daemon.reload({ via: "sighup" });
    writeThreshold(22);
    const second = daemon.reload({ via: "sighup" });
    const outcomes = await Promise.all([first, second]);
    assert.ok(outcomes.every((o) => o.configApplied));
    assert.equal(threshold(), 22, "the file written last is in force");
    assert.equal(reloadsLogged(), 2);

    // a storm of 50, none awaited: the last file wins, and the 49 asked meanwhile share one more reload
    const storm: Promise<unknown>[] = [];
    for (let i = 1; i <= 50; i++) {
      writeThreshold(100 + i);
      storm.push(daemon.reload({ via: "sighup" }));
    }
    await Promise.all(storm);
    assert.equal(threshold(), 150, "the 50th file is in force");
    assert.equal(reloadsLogged(), 4, "one reload, then one more for the 49 asked while it ran");

    // a reload asked after the others finished runs on its own
    writeThreshold(7);
    await daemon.reload({ via: "sighup" });
    assert.equal(threshold(), 7);
  } finally {
    await daemon.stop();
    await broker.close();
  }
});
