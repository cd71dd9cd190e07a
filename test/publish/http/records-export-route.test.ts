import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createLogger } from "../../../src/core/log.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { MAX_EXPORTS, RecordsApi } from "../../../src/publish/http/records-routes.js";
import { RecordWriter } from "../../../src/publish/records/record-writer.js";
import type { PartRecord } from "../../../src/publish/records-api.js";
import { testConfig } from "../../helpers/config.js";
import { STPMD_BIN } from "../../helpers/daemon-process.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { capturingLogger } from "../../helpers/logs.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";
import { recordJob, writerOptionsFor } from "../../helpers/records.js";
import { tempDir } from "../../helpers/tiny-data.js";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`waited ${ms} ms for ${what}`);
    await sleep(20);
  }
}

describe("GET /api/records/export.{csv,jsonl} on the daemon's HTTP server", () => {
  let http: HttpInterface;
  let writer: RecordWriter;
  let base: string;
  let dir: string;
  const now = Date.now();

  before(async () => {
    dir = await tempDir("stpmd-records-export-http-");
    // a writer with its connection open and its last rows in the WAL, as a running daemon has: 30 frames five
    // minutes apart up to now, half a step off the hour's edge, one part id that needs CSV quoting
    writer = new RecordWriter(writerOptionsFor(dir), createLogger("silent"));
    await writer.write(
      Array.from({ length: 30 }, (_, i) =>
        recordJob(i, {
          camera: i % 3 === 0 ? "cam2" : "cam1",
          verdict: i % 5 === 0 ? "defect" : "ok",
          ts: now - (30 - i) * 5 * 60_000 + 150_000,
          ...(i === 29 ? { partId: 'B17,"64"' } : {}),
        }),
      ),
    );
    const port = await freeLoopbackPort();
    const config = testConfig({
      http: { enabled: true, port, console: { enabled: true } },
      records: { dir },
    });
    http = new HttpInterface({
      config: config.http,
      control: new TestLineControl(),
      logger: createLogger("silent"),
      processMetrics: false,
      records: config.records,
    });
    await http.start();
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await http.stop();
    writer.close();
  });

  test("the CSV is byte for byte what `stpmd records export --csv` writes for the same range", async () => {
    const since = new Date(now - 3_600_000).toISOString();
    const until = new Date(now).toISOString();
    const response = await fetch(
      `${base}/api/records/export.csv?since=${encodeURIComponent(since)}&until=${encodeURIComponent(until)}`,
    );
    const body = Buffer.from(await response.arrayBuffer());
    assert.equal(response.status, 200, body.toString());
    assert.equal(response.headers.get("content-type"), "text/csv; charset=utf-8");
    const stamp = (ms: number) =>
      new Date(ms)
        .toISOString()
        .replace(/[-:]/g, "")
        .replace(/\.[0-9]+Z$/, "Z");
    assert.equal(
      response.headers.get("content-disposition"),
      `attachment; filename="stpmd-records-${stamp(now - 3_600_000)}-${stamp(now)}.csv"`,
    );
    // streamed: chunked, no length known up front
    assert.equal(response.headers.get("transfer-encoding"), "chunked");
    const cli = await run(
      process.execPath,
      [STPMD_BIN, "records", "export", "--dir", dir, "--since", since, "--until", until, "--csv"],
      { encoding: "buffer" },
    );
    assert.equal(cli.stderr.toString(), "stpmd: exported 12 records\n");
    assert.equal(body.length, cli.stdout.length);
    assert.ok(body.equals(cli.stdout), "the route's CSV differs from the command's");
    assert.match(body.toString(), /"B17,""64"""/);
  });

  test("JSON lines parse, oldest first; since=1h leaves the older rows out; camera narrows", async () => {
    const response = await fetch(`${base}/api/records/export.jsonl?since=1h`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/x-ndjson; charset=utf-8");
    assert.match(response.headers.get("content-disposition") ?? "", /filename="stpmd-records-.*\.jsonl"/);
    const text = await response.text();
    assert.ok(text.endsWith("\n"));
    const records = text
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as PartRecord);
    // the rows of the last hour: 12 of the 30, seq 18 to 29, oldest first
    assert.deepEqual(
      records.map((r) => r.seq),
      Array.from({ length: 12 }, (_, i) => 18 + i),
    );
    assert.ok(records.every((r) => r.ts >= now - 3_600_000));
    const cam2 = await (await fetch(`${base}/api/records/export.jsonl?since=1h&camera=cam2`)).text();
    assert.deepEqual(
      cam2
        .trimEnd()
        .split("\n")
        .map((line) => (JSON.parse(line) as PartRecord).seq),
      [18, 21, 24, 27],
    );
    const csv = await (await fetch(`${base}/api/records/export.csv?since=8h&camera=none`)).text();
    assert.equal(
      csv,
      "id,time,camera,seq,part_id,recipe,bundle,model_version,threshold,threshold_rule,score,verdict,error,regions,latency_ms,image,map,label\r\n",
    );
  });

  test("a bad parameter is a 400 naming it; reading needs no login", async () => {
    const cases: [string, RegExp][] = [
      ["since=yesterday", /^parameter since "yesterday": give an ISO 8601 time/],
      ["since=1h&until=soon", /^parameter until "soon": give an ISO 8601 time/],
      ["", /^parameter since: is required/],
      ["since=1h&verdict=ok", /^parameter verdict: is not a parameter of this route/],
      ["since=1h&since=2h", /^parameter since: given 2 times/],
    ];
    for (const [query, message] of cases) {
      const response = await fetch(`${base}/api/records/export.csv?${query}`);
      assert.equal(response.status, 400, query);
      assert.match(await response.text(), message, query);
    }
  });
});

/** A GET whose response the test reads when it likes: paused, then resumed or dropped. */
function openExport(base: string, query: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/api/records/export.csv?${query}`, resolve);
    req.on("error", reject);
    req.end();
  });
}

describe("exports of a large record: threads, backpressure, limits", () => {
  const ROWS = 200_000;
  const T0 = Date.UTC(2026, 11, 6, 0, 0, 0);
  let api: RecordsApi;
  let server: Server;
  let base: string;
  const { logger, lines } = capturingLogger();

  before(async () => {
    const dir = await tempDir("stpmd-records-export-large-");
    const writer = new RecordWriter(writerOptionsFor(dir), createLogger("silent"));
    for (let start = 0; start < ROWS; start += 10_000) {
      await writer.write(
        Array.from({ length: 10_000 }, (_, i) => recordJob(start + i, { ts: T0 + (start + i) * 100 })),
        T0 + ROWS * 100,
      );
    }
    writer.close();
    api = new RecordsApi(testConfig({ records: { dir } }).records, logger);
    server = createServer((req, res) => {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (api.serves(path)) void api.handle(req, res, path);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    assert.ok(address !== null && typeof address === "object");
    base = `http://127.0.0.1:${address.port}`;
  });

  after(async () => {
    api.stop();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const iso = (ms: number) => encodeURIComponent(new Date(ms).toISOString());
  const RANGE = `since=${iso(T0)}&until=${iso(T0 + ROWS * 100)}`;

  test("a slow client holds the export thread, not memory: chunks of ~64 KiB, sent only as the client takes them", async () => {
    const before = api.exportStats();
    const response = await openExport(base, RANGE);
    assert.equal(response.statusCode, 200);
    response.pause();
    // the client takes nothing: the socket's buffers fill, then the thread waits
    await sleep(500);
    const held = api.exportStats().chunks - before.chunks;
    await sleep(500);
    assert.equal(
      api.exportStats().chunks - before.chunks,
      held,
      "chunks went on while the client read nothing",
    );
    assert.equal(
      api.exportStats().finished,
      before.finished,
      "the export ended while the client read nothing",
    );
    let bytes = 0;
    let lines = 0;
    response.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      for (const byte of chunk) if (byte === 10) lines += 1;
    });
    response.resume();
    await new Promise((resolve) => response.on("end", resolve));
    const stats = api.exportStats();
    assert.equal(lines, ROWS + 1, "header and every row");
    const chunks = stats.chunks - before.chunks;
    // a client reading nothing stopped the export after what the kernel's socket buffers took (loopback here:
    // 67 chunks, 4.4 MB of 20.8 MB), and in the daemon itself no more than two chunks ever waited for the socket
    assert.ok(
      held * 65_536 < bytes / 2,
      `${held} chunks of ${bytes} bytes were sent to a client reading nothing`,
    );
    assert.ok(stats.mostQueued <= 2 * (65_536 + 2048), `${stats.mostQueued} bytes queued in the daemon`);
    assert.ok(chunks >= bytes / 70_000, `${chunks} chunks for ${bytes} bytes`);
    assert.ok(stats.largestChunk < 65_536 + 2048, `largest chunk ${stats.largestChunk} bytes`);
    assert.equal(stats.finished, before.finished + 1);
    await until("the export thread to end", () => api.exportStats().running === 0);
  });

  test(`at most ${MAX_EXPORTS} exports at once: the next is a 503 with Retry-After; a client that hangs up ends its thread`, async () => {
    const before = api.exportStats();
    const held = await Promise.all([openExport(base, RANGE), openExport(base, RANGE)]);
    for (const response of held) {
      assert.equal(response.statusCode, 200);
      response.pause();
    }
    assert.equal(api.exportStats().running, 2);
    const third = await fetch(`${base}/api/records/export.csv?${RANGE}`);
    assert.equal(third.status, 503);
    assert.equal(third.headers.get("retry-after"), "10");
    assert.match(
      await third.text(),
      /^2 exports are running already \(at most 2 at once\); try again shortly/,
    );
    assert.equal(api.exportStats().refused, before.refused + 1);
    // both clients hang up mid-stream: their threads end, and an export can start again
    for (const response of held) response.destroy();
    await until("the hung-up exports' threads to end", () => api.exportStats().running === 0);
    assert.equal(api.exportStats().aborted, before.aborted + 2);
    assert.equal(
      lines.filter((line) =>
        /^records export stpmd-records-.*\.csv: the client hung up; its thread stopped$/.test(line.msg),
      ).length,
      2,
    );
    assert.equal(api.exportStats().finished, before.finished);
    const again = await fetch(`${base}/api/records/export.csv?since=${iso(T0)}&until=${iso(T0 + 1000)}`);
    assert.equal(again.status, 200);
    assert.equal((await again.text()).split("\r\n").length, 10 + 2);
  });
});

test("an export before the daemon wrote any record is a 503 saying so, and its thread ends", async () => {
  const dir = await tempDir("stpmd-records-export-empty-");
  const api = new RecordsApi(testConfig({ records: { dir } }).records, createLogger("silent"));
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    void api.handle(req, res, path);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const address = server.address();
    assert.ok(address !== null && typeof address === "object");
    const response = await fetch(`http://127.0.0.1:${address.port}/api/records/export.jsonl?since=1h`);
    assert.equal(response.status, 503);
    assert.match(await response.text(), /^no part record yet: .*records\.db cannot be opened\n$/);
    await until("the export thread to end", () => api.exportStats().running === 0);
  } finally {
    api.stop();
    await new Promise((resolve) => server.close(resolve));
  }
});
