import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { createLogger } from "../../src/core/log.js";
import { RecordWriter } from "../../src/publish/records/record-writer.js";
import type { PartRecord } from "../../src/publish/records-api.js";
import { CSV_COLUMNS, pointInTime } from "../../src/publish/records-export-format.js";
import { STPMD_BIN } from "../helpers/daemon-process.js";
import { recordJob, writerOptionsFor } from "../helpers/records.js";
import { tempDir } from "../helpers/tiny-data.js";

const run = promisify(execFile);

/** Splits RFC 4180 CSV (quoted fields may hold commas, quotes and line breaks). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\r" && text[i + 1] === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      i++;
    } else field += c;
  }
  return rows;
}

test("--since takes an ISO time or a duration back from now; anything else is refused naming the option", () => {
  const now = Date.UTC(2026, 11, 6, 14, 0, 0);
  assert.equal(pointInTime("--since", "8h", now), now - 8 * 3_600_000);
  assert.equal(pointInTime("--since", "90s", now), now - 90_000);
  assert.equal(pointInTime("--since", "2026-12-06T06:00:00Z", now), Date.UTC(2026, 11, 6, 6));
  assert.throws(() => pointInTime("--since", "yesterday", now), /--since "yesterday": give an ISO 8601 time/);
});

test("stpmd records export reads the database while a writer holds it open: CSV and JSON lines of the range, oldest first", async () => {
  const dir = await tempDir("stpmd-records-export-");
  const now = Date.now();
  // a writer with its connection open and its last rows still in the WAL, as a running daemon has
  const writer = new RecordWriter(writerOptionsFor(dir), createLogger("silent"));
  await writer.write(
    Array.from({ length: 30 }, (_, i) =>
      recordJob(i, {
        camera: i % 3 === 0 ? "cam2" : "cam1",
        verdict: i % 5 === 0 ? "defect" : "ok",
        ts: now - (30 - i) * 5 * 60_000 + 150_000, // half a step off the range's edges
        ...(i === 29 ? { partId: 'B17,"64"' } : {}),
      }),
    ),
  );
  try {
    const { stdout, stderr } = await run(process.execPath, [
      STPMD_BIN,
      "records",
      "export",
      "--dir",
      dir,
      "--since",
      "1h",
      "--csv",
    ]);
    assert.match(stderr, /exported 12 records/);
    const rows = parseCsv(stdout);
    assert.deepEqual(rows[0], [...CSV_COLUMNS]);
    // within the last hour: 5-minute steps 12 back … 1 back, i.e. seq 18 … 29
    assert.deepEqual(
      rows.slice(1).map((r) => Number(r[3])),
      Array.from({ length: 12 }, (_, i) => 18 + i),
    );
    const last = Object.fromEntries(CSV_COLUMNS.map((c, i) => [c, rows.at(-1)![i]]));
    assert.equal(last.part_id, 'B17,"64"', "quoted and unquoted back");
    assert.equal(last.time, new Date(now - 150_000).toISOString());
    const defect = Object.fromEntries(CSV_COLUMNS.map((c, i) => [c, rows[1 + 2]![i]])); // seq 20
    assert.equal(defect.verdict, "defect");
    assert.deepEqual(JSON.parse(defect.regions!), [
      { bbox: [8, 8, 1, 1], area: 1, peak: 0.9, centroid: [8, 8] },
    ]);
    assert.equal(defect.score, "0.9");
    assert.equal(defect.label, "");

    const out = path.join(dir, "cam2.jsonl");
    const since = new Date(now - 100 * 60_000).toISOString();
    const until = new Date(now - 30 * 60_000).toISOString();
    await run(process.execPath, [
      STPMD_BIN,
      "records",
      "export",
      "--dir",
      dir,
      "--since",
      since,
      "--until",
      until,
      "--camera",
      "cam2",
      "--jsonl",
      "--out",
      out,
    ]);
    const records = (await readFile(out, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as PartRecord);
    // cam2 is every 3rd seq; from 100 min back (seq 10) to 30 min back (seq 24, exclusive)
    assert.deepEqual(
      records.map((r) => r.seq),
      [12, 15, 18, 21],
    );
    assert.ok(records.every((r) => r.camera === "cam2" && r.model_version === "20261201T000000Z"));
  } finally {
    writer.close();
  }
});

test("records export refuses a missing format, two sources or a missing database in one line", async () => {
  const dir = await tempDir("stpmd-records-export-");
  for (const [args, message] of [
    [["--dir", dir, "--since", "1h"], /give exactly one of --csv and --jsonl/],
    [
      ["--dir", dir, "--config", "x.yaml", "--since", "1h", "--csv"],
      /give exactly one of --config and --dir/,
    ],
    [["--dir", dir, "--since", "soon", "--csv"], /--since "soon": give an ISO 8601 time/],
    [["--dir", dir, "--since", "1h", "--csv"], /cannot read .*records\.db/],
  ] as const) {
    await assert.rejects(
      run(process.execPath, [STPMD_BIN, "records", "export", ...args]),
      (err: { stderr: string; code: number }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr, message);
        assert.equal(err.stderr.trim().split("\n").length, 1, err.stderr);
        return true;
      },
    );
  }
});
