import { appendFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { createLogger } from "../../src/core/log.js";
import type { AuditEntry, AuditTrail } from "../../src/publish/audit.js";
import { HttpInterface } from "../../src/publish/http/http.js";
import { RecordWriter } from "../../src/publish/records/record-writer.js";
import { testConfig } from "./config.js";
import { TestLineControl } from "./line-control.js";
import { freeLoopbackPort } from "./mosquitto.js";
import { recordJob, writerOptionsFor } from "./records.js";

/**
 * A small real audit trail for the review tests: JSON lines appended to `file`, each resolved once written. The
 * daemon's durable one is in src/publish/audit/; this one fails the way a file does (a missing folder: ENOENT).
 */
export class JsonLinesAudit implements AuditTrail {
  constructor(readonly file: string) {}

  async append(entry: Omit<AuditEntry, "ts">): Promise<void> {
    await appendFile(this.file, `${JSON.stringify({ ts: new Date().toISOString(), ...entry })}\n`, {
      flag: "a",
    });
  }
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
export async function reviewServer(work: string, audit: AuditTrail | undefined): Promise<ReviewServer> {
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
