import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import { createLogger } from "../../../src/core/log.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { RecordWriter } from "../../../src/publish/records/record-writer.js";
import {
  type HourlyReply,
  HourlyReplySchema,
  type RecordsPage,
  RecordsPageSchema,
} from "../../../src/publish/records-api.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";
import { recordJob, writerOptionsFor } from "../../helpers/records.js";
import { tempDir } from "../../helpers/tiny-data.js";

const T0 = Date.UTC(2026, 11, 6, 13, 50, 0);
/** What the server answers is what the OpenAPI file promises: the same definitions validate it. */
const ajv = new Ajv({ strict: false });
const validPage = ajv.compile(RecordsPageSchema);
const validHourly = ajv.compile(HourlyReplySchema);

describe("GET /api/records and /api/records/hourly on the HTTP server", () => {
  let http: HttpInterface;
  let base: string;
  let dir: string;

  before(async () => {
    dir = await tempDir("stpmd-records-http-");
    const writer = new RecordWriter(writerOptionsFor(dir), createLogger("silent"));
    // 40 frames a minute apart from 13:50: two cameras, every 4th a defect, one part id
    await writer.write(
      Array.from({ length: 40 }, (_, i) =>
        recordJob(i, {
          camera: i % 2 === 0 ? "cam1" : "cam2",
          verdict: i % 4 === 0 ? "defect" : "ok",
          ts: T0 + i * 60_000,
          image: i % 4 === 0,
          ...(i === 13 ? { partId: "B1764-10" } : {}),
        }),
      ),
    );
    writer.close();
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
  });

  const get = async (query: string): Promise<{ status: number; body: string }> => {
    const response = await fetch(`${base}${query}`);
    return { status: response.status, body: await response.text() };
  };
  const page = async (query: string): Promise<RecordsPage> => {
    const { status, body } = await get(query);
    assert.equal(status, 200, body);
    const parsed = JSON.parse(body) as RecordsPage;
    assert.ok(validPage(parsed), ajv.errorsText(validPage.errors));
    return parsed;
  };

  test("filters narrow the records, pages follow the cursor newest first", async () => {
    const defects = await page("/api/records?camera=cam1&verdict=defect&limit=3");
    assert.deepEqual(
      defects.records.map((r) => r.seq),
      [36, 32, 28],
    );
    assert.equal(defects.records[0]!.time, new Date(T0 + 36 * 60_000).toISOString());
    assert.deepEqual(defects.records[0]!.regions, [
      { bbox: [8, 8, 1, 1], area: 1, peak: 0.9, centroid: [8, 8] },
    ]);
    const next = await page(`/api/records?camera=cam1&verdict=defect&limit=3&cursor=${defects.next_cursor}`);
    const last = await page(`/api/records?camera=cam1&verdict=defect&limit=3&cursor=${next.next_cursor}`);
    assert.deepEqual(
      [...next.records, ...last.records].map((r) => r.seq),
      [24, 20, 16, 12, 8, 4, 0].slice(0, 3 + last.records.length),
    );
    const all: number[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const p: RecordsPage = await page(
        `/api/records?camera=cam1&verdict=defect&limit=4${cursor ? `&cursor=${cursor}` : ""}`,
      );
      all.push(...p.records.map((r) => r.seq));
      cursor = p.next_cursor;
    }
    assert.deepEqual(all, [36, 32, 28, 24, 20, 16, 12, 8, 4, 0]);
    const from = encodeURIComponent(new Date(T0 + 10 * 60_000).toISOString());
    assert.deepEqual(
      (await page(`/api/records?from=${from}&to=${T0 + 13 * 60_000}`)).records.map((r) => r.seq),
      [12, 11, 10],
    );
    assert.equal((await page("/api/records?score_min=0.5&score_max=1&limit=1000")).records.length, 10);
    assert.deepEqual(
      (await page("/api/records?part_id=B1764-10")).records.map((r) => [r.seq, r.part_id]),
      [[13, "B1764-10"]],
    );
    // a part's page asks for its record by id
    const one = defects.records[1]!;
    assert.deepEqual((await page(`/api/records?id=${one.id}`)).records, [one]);
    assert.deepEqual((await page("/api/records?id=999999")).records, []);
    assert.equal((await page("/api/records?model_version=20261201T000000Z")).records.length, 40);
    assert.equal((await page("/api/records?label=none")).records.length, 40);
    assert.equal((await page("/api/records?label=false_alarm")).records.length, 0);
    assert.equal((await page("/api/records")).records.length, 40, "default limit 100");
  });

  test("parts per verdict per hour per camera", async () => {
    const { status, body } = await get("/api/records/hourly");
    assert.equal(status, 200, body);
    const reply = JSON.parse(body) as HourlyReply;
    assert.ok(validHourly(reply), ajv.errorsText(validHourly.errors));
    const { hours } = reply;
    // 13:50–13:59 (seq 0–9), 14:00–14:29 (seq 10–39)
    assert.deepEqual(hours, [
      { camera: "cam1", hour: "2026-12-06T13:00:00.000Z", ok: 2, defect: 3, error: 0, parts: 5 },
      { camera: "cam2", hour: "2026-12-06T13:00:00.000Z", ok: 5, defect: 0, error: 0, parts: 5 },
      { camera: "cam1", hour: "2026-12-06T14:00:00.000Z", ok: 8, defect: 7, error: 0, parts: 15 },
      { camera: "cam2", hour: "2026-12-06T14:00:00.000Z", ok: 15, defect: 0, error: 0, parts: 15 },
    ]);
    const cam2 = JSON.parse(
      (await get("/api/records/hourly?camera=cam2&from=2026-12-06T14:30:00Z")).body,
    ) as HourlyReply;
    assert.deepEqual(
      cam2.hours.map((h) => h.hour),
      ["2026-12-06T14:00:00.000Z"],
      "from: the hour holding it",
    );
  });

  test("a record's frame and map as PNG; 404 for a record without them or no record at all", async () => {
    const [defect] = (await page("/api/records?verdict=defect&limit=1")).records;
    const [good] = (await page("/api/records?verdict=ok&limit=1")).records;
    for (const which of ["image", "map"] as const) {
      const response = await fetch(`${base}/api/records/${defect!.id}/${which}.png`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "image/png");
      const png = Buffer.from(await response.arrayBuffer());
      assert.deepEqual(png, await readFile(path.join(dir, defect![which]!)), `${which}: the file on disk`);
    }
    const none = await get(`/api/records/${good!.id}/image.png`);
    assert.equal(none.status, 404);
    assert.match(none.body, new RegExp(`record ${good!.id} has no image`));
    assert.equal((await get("/api/records/999999/map.png")).status, 404);
    assert.equal((await get("/api/records/1/thumb.png")).status, 404, "only image and map");
  });

  test("a bad parameter is a 400 naming it", async () => {
    for (const [query, message] of [
      ["/api/records?limit=0", /^parameter limit: must be >= 1/],
      ["/api/records?limit=many", /^parameter limit: must be integer/],
      [
        "/api/records?verdict=maybe",
        /^parameter verdict: must be equal to constant|^parameter verdict: must match/,
      ],
      ["/api/records?from=yesterday", /^from: "yesterday" is not an ISO 8601 time/],
      ["/api/records?cursor=abc", /^parameter cursor: must match pattern/],
      ["/api/records?colour=red", /^parameter colour: is not a parameter of this route/],
      ["/api/records?camera=a&camera=b", /^parameter camera: given 2 times/],
      ["/api/records/hourly?verdict=ok", /^parameter verdict: is not a parameter/],
    ] as const) {
      const { status, body } = await get(query);
      assert.equal(status, 400, `${query}: ${body}`);
      assert.match(body, message, query);
    }
    const post = await fetch(`${base}/api/records`, { method: "POST" });
    assert.equal(post.status, 405);
  });

  test("without a database yet: 503 saying so", async () => {
    const port = await freeLoopbackPort();
    const config = testConfig({ http: { enabled: true, port }, records: { dir: path.join(dir, "none") } });
    const empty = new HttpInterface({
      config: config.http,
      control: new TestLineControl(),
      logger: createLogger("silent"),
      processMetrics: false,
      records: config.records,
    });
    await empty.start();
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/records`);
      assert.equal(response.status, 503);
      assert.match(await response.text(), /no part record yet: .*records\.db does not exist/);
    } finally {
      await empty.stop();
    }
  });
});
