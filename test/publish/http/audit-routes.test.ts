import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { Ajv } from "ajv";
import { createLogger } from "../../../src/core/log.js";
import { AuditLog } from "../../../src/publish/audit/audit-log.js";
import { AuditPageSchema } from "../../../src/publish/audit-api.js";
import { HttpInterface } from "../../../src/publish/http/http.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { freeLoopbackPort } from "../../helpers/mosquitto.js";
import { tempDir } from "../../helpers/tiny-data.js";

test("GET /api/audit: pages valid against the published schema; bad parameters are a 400 naming them; an unreadable log a 503 naming the file", async () => {
  const dir = await tempDir("stpmd-audit-routes-");
  const file = path.join(dir, "audit.jsonl");
  const audit = new AuditLog({ file, maxBytes: 1 << 20, keep: 1, fileMode: 0o640 }, createLogger("silent"));
  for (let i = 0; i < 12; i++) {
    audit.appendSync({
      user: i % 2 === 0 ? "alice" : null,
      via: i % 2 === 0 ? "http" : "sighup",
      action: i % 2 === 0 ? "set_threshold" : "reload",
      ...(i % 2 === 0 ? { camera: "cam1", before: { threshold: i }, after: { threshold: i + 1 } } : {}),
      outcome: "ok",
    });
  }
  const port = await freeLoopbackPort();
  const config = testConfig({ http: { enabled: true, port, console: { enabled: true } } });
  const http = new HttpInterface({
    config: config.http,
    control: new TestLineControl(),
    logger: createLogger("silent"),
    processMetrics: false,
    audit,
  });
  await http.start();
  const base = `http://127.0.0.1:${port}/api/audit`;
  const get = async (query: string) => {
    const res = await fetch(`${base}${query}`);
    return { status: res.status, text: await res.text() };
  };
  try {
    const validPage = new Ajv({ strict: false }).compile(AuditPageSchema);
    const page = await get("?limit=5&user=alice");
    assert.equal(page.status, 200);
    const body = JSON.parse(page.text) as { entries: { seq: number }[]; next_cursor: number };
    assert.ok(validPage(body), JSON.stringify(validPage.errors));
    assert.deepEqual(
      body.entries.map((e) => e.seq),
      [11, 9, 7, 5, 3],
    );
    const last = JSON.parse((await get(`?limit=5&user=alice&cursor=${body.next_cursor}`)).text);
    assert.deepEqual(last, JSON.parse((await get("?user=alice&until=9999999999999&cursor=3")).text));
    assert.equal(last.entries.length, 1);
    assert.equal(last.next_cursor, null);

    for (const [query, message] of [
      ["?limit=0", "parameter limit: must be >= 1\n"],
      ["?limit=5000", "parameter limit: must be <= 1000\n"],
      ["?cursor=x", "parameter cursor: must be integer\n"],
      ["?since=yesterday", 'parameter since: "yesterday" is not an ISO 8601 time or milliseconds\n'],
      ["?camera=a&camera=b", "parameter camera: given 2 times; give it once\n"],
      ["?verdict=ok", "parameter verdict: is not a parameter of this route\n"],
    ] as const) {
      assert.deepEqual(await get(query), { status: 400, text: message }, query);
    }
    const post = await fetch(base, { method: "POST" });
    assert.equal(post.status, 405);

    mkdirSync(`${file}.1`);
    const broken = await get("?limit=1000");
    assert.equal(broken.status, 503);
    assert.match(broken.text, /^audit log .*audit\.jsonl\.1: cannot read: EISDIR/);
  } finally {
    await http.stop();
  }
});
