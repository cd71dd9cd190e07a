import { writeFile } from "node:fs/promises";
import path from "node:path";
import { createLogger } from "../../src/core/log.js";
import { AuditLog } from "../../src/publish/audit/audit-log.js";
import type { AuditStore } from "../../src/publish/audit.js";
import { HttpInterface } from "../../src/publish/http/http.js";
import { RecordWriter } from "../../src/publish/records/record-writer.js";
import { testConfig } from "./config.js";
import { TestLineControl } from "./line-control.js";
import { freeLoopbackPort } from "./mosquitto.js";
import { recordJob, writerOptionsFor } from "./records.js";

/** The daemon's own audit log (JSON lines, fsync per entry) at `file`, for the review tests. */
export function testAuditLog(file: string): AuditLog {
  return new AuditLog({ file, maxBytes: 1 << 20, keep: 1, fileMode: 0o640 }, createLogger("silent"));
}

export const OPERATOR = { user: "alice", password: "s3cret pass" };
export const T0 = Date.UTC(2026, 11, 6, 14, 0, 0);

/**
 * The records the review tests label, written by the real records writer: on cam1, seq 0, 1, 2 are defects with
 * their frame and map, seq 3 a good frame without an image, seq 4 a sampled good frame (an image, no map); seq 5 a
 * defect on cam2. 16×16 noise frames whose map peaks (0.9 at threshold 0.5) at pixel (8, 8) alone.
 */
export async function writeReviewRecords(recordsDir: string): Promise<void> {
  const writer = new RecordWriter(writerOptionsFor(recordsDir), createLogger("silent"));
  await writer.write([
    recordJob(0, { verdict: "defect", ts: T0, image: true }),
    recordJob(1, { verdict: "defect", ts: T0 + 1000, image: true }),
    recordJob(2, { verdict: "defect", ts: T0 + 2000, image: true }),
    recordJob(3, { verdict: "ok", ts: T0 + 3000 }),
    recordJob(4, { verdict: "ok", ts: T0 + 4000, image: true }),
    recordJob(5, { camera: "cam2", verdict: "defect", ts: T0 + 5000, image: true }),
  ]);
  writer.close();
}

export interface ReviewServer {
  http: HttpInterface;
  base: string;
  dirs: { records: string; labelled: string; collection: string };
}

/** A real HTTP interface with the console's one operator, serving the records and labels of `work`. */
export async function reviewServer(work: string, audit: AuditStore | undefined): Promise<ReviewServer> {
  const dirs = {
    records: path.join(work, "records"),
    labelled: path.join(work, "labelled"),
    collection: path.join(work, "frames"),
  };
  const passwordFile = path.join(work, "alice.pass");
  await writeFile(passwordFile, `${OPERATOR.password}\n`, { mode: 0o600 });
  const port = await freeLoopbackPort();
  const config = testConfig({
    http: {
      enabled: true,
      port,
      console: { enabled: true, users: [{ username: OPERATOR.user, password_file: passwordFile }] },
    },
    records: { dir: dirs.records, labelled_dir: dirs.labelled },
    collection: { dir: dirs.collection },
  });
  const http = new HttpInterface({
    config: config.http,
    control: new TestLineControl(),
    logger: createLogger("silent"),
    processMetrics: false,
    records: config.records,
    collection: config.collection,
    ...(audit !== undefined ? { audit } : {}),
  });
  await http.start();
  return { http, base: `http://127.0.0.1:${port}`, dirs };
}

export function basicAuth(user = OPERATOR.user, password = OPERATOR.password): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
