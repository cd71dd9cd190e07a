// Fault injection for the part record: the real daemon process with a replay camera of noise frames (each one a
// defect, so each is an MQTT defect event with a seq), a real mosquitto, records in SQLite on a real (and in one case
// tiny) filesystem. Each case breaks the record's storage and checks that inspection and publishing go on, that the
// fault is counted and logged (not per frame), and that what was committed before it can still be read.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, rm, stat, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import mqtt, { type MqttClient } from "mqtt";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../src/publish/record-store.js";
import { DaemonProcess, defectiveReplay, replaySource, sleep, waitFor } from "../helpers/daemon-process.js";
import { freeLoopbackPort, MosquittoBroker } from "../helpers/mosquitto.js";
import { recordJob } from "../helpers/records.js";
import { withTmpfs } from "../helpers/tmpfs.js";

const SIZE = 64;
const FPS = 10;

let work: string;
let bundle: string;
let noise: string;
let broker: MosquittoBroker;

before(async () => {
  ({ work, bundle, noise } = await defectiveReplay("stpmd-records-faults-", 6, SIZE));
  broker = await MosquittoBroker.start();
});

after(async () => {
  await broker.close();
});

/** A daemon whose record lives in `recordsDir`, with metrics on a free port, and a subscriber to its defects. */
async function startDaemon(name: string, recordsDir: string) {
  const port = await freeLoopbackPort();
  const config = {
    model: { bundle, watch: false },
    inference: { max_batch: 2, max_wait_ms: 5 },
    cameras: [{ id: "noise", source: replaySource(noise, FPS) }],
    mqtt: {
      url: broker.url,
      client_id: `stpmd-${name}`,
      prefix: name,
      status_interval_s: 1,
      snapshot: "none",
      outbox: { dir: path.join(work, `${name}-outbox`) },
    },
    records: { dir: recordsDir, images: { normal_sample: 1 }, retention: { max_bytes: 1 << 30 } },
    http: { enabled: true, port, console: { enabled: false } },
    log: { level: "info" },
    health: { watchdog: false },
  };
  const file = path.join(work, `${name}.json`);
  await writeFile(file, JSON.stringify(config, null, 2));
  const seqs: number[] = [];
  const sub: MqttClient = await mqtt.connectAsync(broker.url, { clientId: `obs-${name}` });
  sub.on("message", (_topic, payload) =>
    seqs.push(Number((JSON.parse(payload.toString()) as { seq: number }).seq)),
  );
  await sub.subscribeAsync(`${name}/+/defect`, { qos: 1 });
  const daemon = new DaemonProcess(file);
  /** The `stpmd_records_*` samples of one scrape, by name and labels (`rows_total{outcome="written"}`). */
  const records = async (): Promise<Record<string, number>> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^stpmd_records_(\S+) (\S+)$/gm)) out[m[1]!] = Number(m[2]);
    const up = /^stpmd_output_up\{output="records",durable="false"\} (\S+)$/m.exec(text);
    if (up) out.up = Number(up[1]);
    return out;
  };
  const published = (): number => new Set(seqs).size;
  const close = async (): Promise<void> => {
    await daemon.kill();
    await sub.endAsync(true);
  };
  /** The seqs of the defect events published so far, each once. */
  const publishedSeqs = (): number[] => [...new Set(seqs)];
  return { daemon, records, published, publishedSeqs, close };
}

/** Waits until `n` more defect events than now were published: inspection and MQTT go on. */
async function stillPublishing(published: () => number, n = 10): Promise<void> {
  const before = published();
  await waitFor(`${n} more defect events`, () => published() >= before + n, 30_000);
}

async function scrapeWhen(
  records: () => Promise<Record<string, number>>,
  what: string,
  ok: (m: Record<string, number>) => boolean,
): Promise<Record<string, number>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = await records().catch(() => undefined);
    if (m !== undefined && ok(m)) return m;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(m)}`);
    await sleep(200);
  }
}

function readAll(dir: string, name = RECORDS_DB) {
  const db = openRecordsDb(path.join(dir, name), { readonly: true });
  try {
    assert.equal(db.pragma("integrity_check", { simple: true }), "ok");
    return [...iterateRecords(db, {})];
  } finally {
    db.close();
  }
}

test("records on a full tmpfs: writes fail and are counted, logged once a minute, inspection and MQTT go on, and records resume once there is room", async (t) => {
  await withTmpfs(t, "2m", async (mountPoint) => {
    const dir = path.join(mountPoint, "records");
    const { daemon, records, published, close } = await startDaemon("records-full", dir);
    try {
      await scrapeWhen(records, "rows written", (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 5);
      assert.ok(
        daemon.hasLog(/is on a memory filesystem \(tmpfs\)/),
        "a tmpfs is named: it does not survive a reboot",
      );
      const { bavail, bsize } = await statfs(mountPoint);
      const filler = path.join(mountPoint, "filler");
      await writeFile(filler, Buffer.alloc(Math.max(0, bavail * bsize - 64 * 1024)));
      // which write meets the full disk first, a frame's PNG or the database's WAL, is the disk's choice
      const full = await scrapeWhen(
        records,
        "failed writes",
        (m) => (m['images_total{outcome="failed"}'] ?? 0) + (m['rows_total{outcome="failed"}'] ?? 0) >= 10,
      );
      t.diagnostic(`full: ${JSON.stringify(full)}`);
      await stillPublishing(published);
      const problemLines = daemon
        .logs()
        .filter((l) => /could not (save an image|write \d+ records)/.test(String(l.msg)));
      assert.ok(problemLines.length >= 1, "the failure is logged");
      assert.ok(problemLines.length <= 4, `not once per frame: ${problemLines.length} lines`);
      await rm(filler);
      const resumed = await scrapeWhen(
        records,
        "rows written again",
        (m) => (m['rows_total{outcome="written"}'] ?? 0) > (full['rows_total{outcome="written"}'] ?? 0) + 10,
      );
      assert.ok(daemon.hasLog(/records are written again/) || full['rows_total{outcome="failed"}'] === 0);
      t.diagnostic(`after making room: ${JSON.stringify(resumed)}`);
      await scrapeWhen(records, "the record's health back up", (m) => m.up === 1);
      await stillPublishing(published, 5);
      daemon.child.kill("SIGTERM");
      await daemon.exited;
      const rows = readAll(dir);
      const written = resumed['rows_total{outcome="written"}']!;
      assert.ok(rows.length >= written, `${rows.length} rows readable, ${written} counted written before`);
      for (const row of rows) {
        if (row.image !== null) assert.ok(existsSync(path.join(dir, row.image)), `${row.image} is on disk`);
      }
      const names = await readdir(path.join(dir, "images/noise"), { recursive: true });
      assert.deepEqual(
        names.filter((n) => n.endsWith(".tmp")),
        [],
        "no half-written image is left",
      );
    } finally {
      await close();
    }
  });
});

test("a database corrupted before start is moved aside with one log line; a new one is written; inspection goes on", async () => {
  const dir = path.join(work, "corrupt-records");
  const {
    daemon: first,
    records: firstRecords,
    close: closeFirst,
  } = await startDaemon("records-corrupt", dir);
  await scrapeWhen(firstRecords, "rows written", (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 5);
  first.child.kill("SIGTERM");
  await first.exited;
  await closeFirst();
  // damage the middle of the file: the header stays valid, the pages behind it are garbage
  const db = path.join(dir, RECORDS_DB);
  const { open } = await import("node:fs/promises");
  const handle = await open(db, "r+");
  const { size } = await handle.stat();
  await handle.write(Buffer.alloc(Math.max(4096, size - 4096), 0xa5), 0, undefined, 4096);
  await handle.close();

  const { daemon, records, published, close } = await startDaemon("records-corrupt", dir);
  try {
    await scrapeWhen(
      records,
      "rows in the new database",
      (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 5,
    );
    await stillPublishing(published);
    const corrupt = daemon.logs().filter((l) => /is corrupt/.test(String(l.msg)));
    assert.equal(corrupt.length, 1, "one line");
    assert.match(String(corrupt[0]!.msg), /moved it aside to .*records\.db\.corrupt-/);
    const m = await records();
    assert.equal(m['recoveries_total{kind="corrupt"}'], 1);
    const aside = (await readdir(dir)).filter((f) => /^records\.db\.corrupt-\d+T\d+Z$/.test(f));
    assert.equal(aside.length, 1);
  } finally {
    await close();
  }
});

test("the database overwritten with garbage while the daemon runs (its WAL alone, then the file and its WAL) is moved aside with one line each and replaced; inspection and MQTT go on; what was intact stays readable", async (t) => {
  const dir = path.join(work, "overwritten-records");
  const file = path.join(dir, RECORDS_DB);
  const { daemon, records, published, publishedSeqs, close } = await startDaemon("records-overwritten", dir);
  const corruptLines = () => daemon.logs().filter((l) => /is corrupt/.test(String(l.msg)));
  const garbage = async (name: string, byte: number) =>
    writeFile(name, Buffer.alloc(Math.max(4096, (await stat(name)).size), byte));
  try {
    await scrapeWhen(records, "rows written", (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 20);
    // the WAL alone: a checkpoint (by another connection, as any SQLite client may) puts the rows so far into the
    // database file; the garbage WAL must not be checkpointed over them when the writer lets go of it
    let checkpointed = 0;
    for (let tries = 0; checkpointed === 0 && tries < 20; tries++) {
      const other = openRecordsDb(file);
      const count = (other.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n;
      const [ck] = other.pragma("wal_checkpoint(PASSIVE)") as { log: number; checkpointed: number }[];
      other.close();
      if (ck!.log === ck!.checkpointed) checkpointed = count;
      else await sleep(50);
    }
    assert.ok(checkpointed >= 20, `${checkpointed} rows checkpointed`);
    await garbage(`${file}-wal`, 0x5a);
    const first = await scrapeWhen(
      records,
      "the first recovery",
      (m) => m['recoveries_total{kind="corrupt"}'] === 1,
    );
    await stillPublishing(published);
    const [aside] = (await readdir(dir)).filter((f) => /^records\.db\.corrupt-\d+T\d+Z$/.test(f));
    assert.ok(aside !== undefined, "moved aside");
    // its WAL is the garbage: without it, the moved database is what the checkpoint wrote, intact
    for (const suffix of ["-wal", "-shm"]) await rm(path.join(dir, `${aside}${suffix}`), { force: true });
    const moved = readAll(dir, aside);
    t.diagnostic(
      `${checkpointed} rows checkpointed before the WAL was overwritten; ${moved.length} in the moved file`,
    );
    assert.ok(moved.length >= checkpointed, `${moved.length} rows readable in ${aside}`);

    // the file and its WAL: nothing of them is left to read, but the writer must not write into them
    await scrapeWhen(
      records,
      "rows in the new database",
      (m) => (m['rows_total{outcome="written"}'] ?? 0) >= (first['rows_total{outcome="written"}'] ?? 0) + 10,
    );
    const lastBefore = Math.max(...readAll(dir).map((row) => row.seq));
    await garbage(file, 0xa5);
    await garbage(`${file}-wal`, 0x5a);
    const second = await scrapeWhen(
      records,
      "the second recovery",
      (m) => m['recoveries_total{kind="corrupt"}'] === 2,
    );
    await stillPublishing(published);
    const after = await scrapeWhen(
      records,
      "rows written after it",
      (m) => (m['rows_total{outcome="written"}'] ?? 0) >= (second['rows_total{outcome="written"}'] ?? 0) + 10,
    );
    await scrapeWhen(records, "the record's health back up", (m) => m.up === 1);
    const lines = corruptLines();
    assert.equal(lines.length, 2, "one line per fault");
    for (const line of lines)
      assert.match(String(line.msg), /while running: .*moved it aside to .*records\.db\.corrupt-/);
    daemon.child.kill("SIGTERM");
    await daemon.exited;
    const rows = readAll(dir);
    assert.ok(rows.length >= 10, `${rows.length} rows in the new database`);
    assert.ok(
      rows.every((row) => row.seq > lastBefore),
      `none of the rows up to seq ${lastBefore} (read before the fault) went into the new database`,
    );
    // counted against what arrived: from the new database's first row on, every defect event published over MQTT
    // (each frame is a defect) has its row, and no frame is recorded twice
    const recorded = new Set(rows.map((row) => row.seq));
    assert.equal(recorded.size, rows.length, "no frame recorded twice");
    const firstNew = Math.min(...recorded);
    const arrived = publishedSeqs().filter((seq) => seq >= firstNew);
    assert.ok(arrived.length >= 10, `${arrived.length} events published after the new database began`);
    const unrecorded = arrived.filter((seq) => !recorded.has(seq));
    assert.deepEqual(unrecorded, [], `every one of the ${arrived.length} events has its row`);
    t.diagnostic(`after: ${JSON.stringify(after)}`);
  } finally {
    await close();
  }
});

test("the records folder deleted while running is recreated; inspection and MQTT go on", async () => {
  const dir = path.join(work, "deleted-records");
  const { daemon, records, published, close } = await startDaemon("records-deleted", dir);
  try {
    await scrapeWhen(records, "rows written", (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 5);
    // the daemon writes into it meanwhile: rm retries a folder that gained a file while it was being emptied
    await rm(dir, { recursive: true, maxRetries: 20, retryDelay: 10 });
    await waitFor("the deletion noticed", () =>
      daemon.hasLog(/was deleted while running; starting a new one/),
    );
    await stillPublishing(published);
    const m = await scrapeWhen(
      records,
      "a recovery counted",
      (s) => s['recoveries_total{kind="deleted"}'] === 1,
    );
    assert.ok(m.rows! > 0);
    daemon.child.kill("SIGTERM");
    await daemon.exited;
    const rows = readAll(dir);
    assert.ok(rows.length > 0, "the new database holds the rows written since");
    for (const row of rows) if (row.image !== null) assert.ok(existsSync(path.join(dir, row.image)));
  } finally {
    await close();
  }
});

test("SIGKILL mid-batch: every record committed before the kill is readable, the database is intact, and a restarted daemon goes on with it", async (t) => {
  // a writer process killed at a moment it does not choose: whatever it reported committed must be there
  const dir = path.join(work, "killed-writer");
  const child = spawn(process.execPath, ["dist/test/helpers/records-writer-child.js", dir], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let committed = 0;
  child.stdout!.on("data", (d: Buffer) => {
    for (const m of d.toString().matchAll(/committed (\d+)/g)) committed = Number(m[1]);
  });
  await waitFor("2000 rows committed", () => committed >= 2000, 60_000);
  await sleep(3 + Math.floor(Math.random() * 20));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  const rows = readAll(dir);
  t.diagnostic(`reported committed ${committed}, readable after SIGKILL ${rows.length}`);
  assert.ok(rows.length >= committed, `${rows.length} rows readable, ${committed} reported committed`);
  assert.equal(rows.length % 50, 0, "a batch is all there or not at all");
  assert.deepEqual(
    rows.map((row) => row.seq),
    Array.from({ length: rows.length }, (_, i) => i),
    "no row lost or doubled",
  );
  const sample = rows[1230]!;
  const job = recordJob(1230, { verdict: "defect" });
  assert.deepEqual(
    [sample.camera, sample.ts, sample.verdict, sample.score],
    [job.row.camera, job.row.ts, job.row.verdict, job.row.score],
  );

  // the daemon itself killed while it writes: it opens the same database again (not "corrupt"), and goes on
  const daemonDir = path.join(work, "killed-daemon");
  const first = await startDaemon("records-killed", daemonDir);
  const before = await scrapeWhen(
    first.records,
    "rows written",
    (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 20,
  );
  await first.close();
  const afterKill = readAll(daemonDir);
  assert.ok(
    afterKill.length >= before['rows_total{outcome="written"}']!,
    "every row counted written is there",
  );
  const second = await startDaemon("records-killed", daemonDir);
  try {
    await stillPublishing(second.published);
    await scrapeWhen(
      second.records,
      "rows written after the restart",
      (m) => (m['rows_total{outcome="written"}'] ?? 0) >= 5,
    );
    assert.ok(!second.daemon.hasLog(/is corrupt/), "a killed writer never leaves a corrupt database");
    assert.ok(second.daemon.hasLog(new RegExp(`part record opened .* \\(${afterKill.length} rows\\)`)));
  } finally {
    await second.close();
  }
});
