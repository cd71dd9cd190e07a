/**
 * Feedback is training data: the review console's labels, undo and mask acceptance (docs/records.md, Labels).
 *
 * A label's way, in the order that leaves nothing half done:
 * 1. the record and its current label are read (the database thread, review-db-worker.ts);
 * 2. the files are written (labelled-files.ts), whole or not at all, and removed again if a later step fails;
 * 3. the change is appended to the audit trail: a failed append refuses the label (503) — no unaudited change;
 * 4. the event goes into the database; should that fail after the audit entry, a `refused` entry follows it.
 * A relabel is one `label` event; the old label's files are removed after it is committed. An undo appends its audit
 * entry and its event before removing the files, since a removal cannot be taken back.
 *
 * Where a mask's acceptance is kept: the database (an `accept_mask` event). The mask file is the same before and
 * after, and `stpmd eval --data` reads it either way: an unaccepted draft is evaluated as it stands.
 */
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { Gauge, type Registry } from "prom-client";
import type { CollectionConfig, RecordsConfig } from "../../config/index.js";
import { DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, parseMode } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { jsonTime } from "../../core/time.js";
import type { AuditEntry, AuditTrail } from "../audit.js";
import { RECORDS_DB } from "../record-store.js";
import {
  DEFAULT_DEFECT_TYPE,
  LABELS,
  type Label,
  type LabelReply,
  type MaskReply,
  type PartRecord,
  type UnlabelReply,
} from "../records-api.js";
import type { LabelCounts, LabelEvent } from "./label-store.js";
import {
  draftMask,
  insideRecords,
  type LabelledDirs,
  plannedFiles,
  removeLabelFiles,
  writeLabelFiles,
} from "./labelled-files.js";
import type { RecordState, ReviewDbAsk, ReviewDbReply, ReviewDbRequest } from "./review-db-worker.js";

/** A refused request: the HTTP status and one line naming the record and why. */
export class ReviewError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ReviewError";
  }
}

/** A database request not answered in this long is given up (the thread may be waiting on a stuck disk). */
const DB_TIMEOUT_MS = 15_000;

export interface ReviewOptions {
  records: RecordsConfig;
  collection: CollectionConfig;
  audit: AuditTrail | undefined;
  logger: Logger;
  /** Where `stpmd_review_labels` is registered (the HTTP interface's registry). */
  registry?: Registry;
}

export class ReviewService {
  private readonly dirs: LabelledDirs;
  private readonly audit: AuditTrail | undefined;
  private readonly logger: Logger;
  private readonly file: string;
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, (reply: ReviewDbReply) => void>();
  private counts: LabelCounts = {};
  /** One change at a time: two clicks on one record must not both read "no label" and both write files. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: ReviewOptions) {
    const { records, collection } = options;
    const mode = (text: string | undefined, fallback: number) =>
      text === undefined ? fallback : parseMode(text);
    this.dirs = {
      records: records.dir,
      labelled: records.labelled_dir,
      collection: collection.dir,
      labelledModes: {
        file: mode(records.file_mode, DEFAULT_FILE_MODE),
        dir: mode(records.dir_mode, DEFAULT_DIR_MODE),
      },
      collectionModes: {
        file: mode(collection.file_mode, DEFAULT_FILE_MODE),
        dir: mode(collection.dir_mode, DEFAULT_DIR_MODE),
      },
    };
    this.audit = options.audit;
    this.logger = options.logger.child({ component: "review" });
    this.file = path.join(records.dir, RECORDS_DB);
    if (options.registry !== undefined) {
      const service = this;
      new Gauge({
        name: "stpmd_review_labels",
        help: "Frames labelled in the review console now (undone labels not counted), per camera and label.",
        labelNames: ["camera", "label"],
        registers: [options.registry],
        collect() {
          this.reset();
          for (const [camera, counts] of Object.entries(service.counts))
            for (const label of LABELS) this.set({ camera, label }, counts[label]);
        },
      });
    }
  }

  /** Reads the counts (none yet without a database: they come with the first label). */
  async start(): Promise<void> {
    const reply = await this.request({ op: "counts" });
    if (reply.ok) this.counts = reply.body as LabelCounts;
    else if (!reply.missing)
      this.logger.warn({ file: this.file }, `could not read the review labels: ${reply.message}`);
  }

  /** Closes the database connection (within a second), then ends its thread. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (worker === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.request({ op: "close" }),
      new Promise((resolve) => {
        timer = setTimeout(resolve, 1000);
      }),
    ]);
    clearTimeout(timer);
    this.worker = undefined;
    await worker.terminate();
  }

  /** Labelled frames now, per camera. */
  labelCounts(): LabelCounts {
    return this.counts;
  }

  label(id: number, label: Label, defectType: string | undefined, user: string): Promise<LabelReply> {
    return this.serial(() => this.applyLabel(id, label, defectType ?? DEFAULT_DEFECT_TYPE, user));
  }

  unlabel(id: number, user: string): Promise<UnlabelReply> {
    return this.serial(() => this.applyUnlabel(id, user));
  }

  acceptMask(id: number, user: string): Promise<MaskReply> {
    return this.serial(() => this.applyAcceptMask(id, user));
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async applyLabel(id: number, label: Label, defectType: string, user: string): Promise<LabelReply> {
    const { record, current } = await this.state(id);
    const image = record.image === null ? undefined : insideRecords(this.dirs, record.image);
    if (image === undefined) {
      throw new ReviewError(
        409,
        `record ${id} has no stored frame to label (only defects, errors and 1 in records.images.normal_sample ` +
          "good frames keep theirs)",
      );
    }
    if (
      current !== undefined &&
      current.label === label &&
      (label === "false_alarm" || current.defect_type === defectType)
    ) {
      // the same label again: nothing to change
      return { record, files: current.files };
    }
    let planned: ReturnType<typeof plannedFiles>;
    try {
      planned = plannedFiles(this.dirs, record, label, defectType);
    } catch (err) {
      throw new ReviewError(409, `record ${id}: ${errorMessage(err)}`);
    }
    const contents = new Map<"frame" | "mask", Uint8Array>();
    let frame: Buffer;
    try {
      frame = await readFile(image);
    } catch (err) {
      const gone = (err as NodeJS.ErrnoException).code === "ENOENT";
      throw new ReviewError(
        gone ? 409 : 503,
        `record ${id}: its frame ${record.image} ${gone ? "is gone (deleted by retention or by hand)" : `cannot be read: ${errorMessage(err)}`}`,
      );
    }
    contents.set("frame", frame);
    if (label === "confirmed_defect") {
      // a map deleted by hand leaves the regions to draw the draft from
      const map = record.map === null ? undefined : insideRecords(this.dirs, record.map);
      const mapThere =
        map !== undefined &&
        (await stat(map).then(
          () => true,
          () => false,
        ));
      try {
        contents.set("mask", await draftMask(frame, mapThere ? map : undefined, record.regions));
      } catch (err) {
        throw new ReviewError(503, `record ${id}: could not draw its draft mask: ${errorMessage(err)}`);
      }
    }
    let files: string[];
    try {
      files = await writeLabelFiles(planned, contents);
    } catch (err) {
      throw new ReviewError(503, `record ${id}: could not write the label's files: ${errorMessage(err)}`);
    }
    const before = current === undefined ? null : { label: current.label, defect_type: current.defect_type };
    const after = { label, defect_type: label === "confirmed_defect" ? defectType : null };
    await this.audited(record, "label", before, after, user, () => removeLabelFiles(files));
    const updated = await this.commit(
      record,
      "label",
      before,
      after,
      user,
      {
        record_id: id,
        camera: record.camera,
        action: "label",
        label,
        defect_type: after.defect_type,
        user,
        ts: Date.now(),
        undo: 0,
        files,
      },
      () => removeLabelFiles(files),
    );
    if (current !== undefined) await this.removeQuietly(current.files.filter((f) => !files.includes(f)));
    this.logger.info(
      { record: id, camera: record.camera, user, label, before: before?.label ?? null, files },
      `record ${id} of camera ${record.camera} labelled ${label} by ${user}`,
    );
    return { record: updated, files };
  }

  private async applyUnlabel(id: number, user: string): Promise<UnlabelReply> {
    const { record, current } = await this.state(id);
    if (current === undefined) throw new ReviewError(409, `record ${id} is not labelled: nothing to undo`);
    const before = { label: current.label, defect_type: current.defect_type };
    await this.audited(record, "unlabel", before, null, user);
    const updated = await this.commit(record, "unlabel", before, null, user, {
      record_id: id,
      camera: record.camera,
      action: "unlabel",
      label: current.label,
      defect_type: current.defect_type,
      user,
      ts: Date.now(),
      undo: 1,
      files: current.files,
    });
    let removed: string[];
    try {
      removed = await removeLabelFiles(current.files);
    } catch (err) {
      // the label is undone in the database; a file left behind is named so it can be deleted by hand
      throw new ReviewError(
        503,
        `record ${id}: the label is undone, but its files could not all be removed: ${errorMessage(err)}`,
      );
    }
    this.logger.info(
      { record: id, camera: record.camera, user, label: current.label, files_removed: removed },
      `record ${id} of camera ${record.camera}: label ${current.label} undone by ${user}`,
    );
    return { record: updated, files_removed: removed };
  }

  private async applyAcceptMask(id: number, user: string): Promise<MaskReply> {
    const { record, current, accepted } = await this.state(id);
    if (current?.label !== "confirmed_defect") {
      throw new ReviewError(
        409,
        `record ${id} is ${current === undefined ? "not labelled" : `labelled ${current.label}`}: only a confirmed defect has a mask`,
      );
    }
    const mask = current.files.find((f) => f.endsWith("_mask.png"))!;
    if (accepted !== undefined) {
      return { record, mask, accepted_by: accepted.user, accepted_at: jsonTime(accepted.ts) };
    }
    const state = { label: current.label, defect_type: current.defect_type, mask };
    await this.audited(
      record,
      "accept_mask",
      { ...state, accepted: false },
      { ...state, accepted: true },
      user,
    );
    const ts = Date.now();
    const updated = await this.commit(record, "accept_mask", null, { mask }, user, {
      record_id: id,
      camera: record.camera,
      action: "accept_mask",
      label: current.label,
      defect_type: current.defect_type,
      user,
      ts,
      undo: 0,
      files: [mask],
    });
    return { record: updated, mask, accepted_by: user, accepted_at: jsonTime(ts) };
  }

  /** The record and its label; 404 for an unknown id, 503 when the database cannot be read. */
  private async state(id: number): Promise<RecordState & { record: PartRecord }> {
    const reply = await this.request({ op: "state", record: id });
    if (!reply.ok) throw new ReviewError(503, `record ${id}: ${reply.message}`);
    const state = reply.body as RecordState;
    if (state.record === undefined)
      throw new ReviewError(404, `no record ${id} (unknown, or deleted by retention)`);
    return state as RecordState & { record: PartRecord };
  }

  /** Appends the audit entry; when it cannot be written, undoes `rollback` and refuses with 503. */
  private async audited(
    record: PartRecord,
    action: LabelEvent["action"],
    before: unknown,
    after: unknown,
    user: string,
    rollback?: () => Promise<unknown>,
  ): Promise<void> {
    const refuse = async (why: string): Promise<never> => {
      await rollback?.().catch(() => undefined);
      this.logger.warn(
        { record: record.id, action, user },
        `${action} of record ${record.id} refused: ${why}`,
      );
      throw new ReviewError(503, `record ${record.id}: ${action} refused: ${why}`);
    };
    if (this.audit === undefined) return refuse("no audit trail is configured (no unaudited change)");
    try {
      await this.audit.append({ ...labelEntry(record, action, before, after, user), outcome: "ok" });
    } catch (err) {
      await refuse(`the audit log could not be written (${errorMessage(err)}); no unaudited change is made`);
    }
  }

  /** Inserts the event; on a failure undoes `rollback`, appends a `refused` audit entry and answers 503. */
  private async commit(
    record: PartRecord,
    action: LabelEvent["action"],
    before: unknown,
    after: unknown,
    user: string,
    event: Omit<LabelEvent, "id">,
    rollback?: () => Promise<unknown>,
  ): Promise<PartRecord> {
    const reply = await this.request({ op: "append", event });
    if (reply.ok) {
      const body = reply.body as { record: PartRecord | undefined; counts: LabelCounts };
      this.counts = body.counts;
      return body.record ?? record;
    }
    await rollback?.().catch(() => undefined);
    await this.audit
      ?.append({
        ...labelEntry(record, action, before, after, user),
        outcome: "refused",
        detail: `the database write failed: ${reply.message}`,
      })
      .catch((err: unknown) =>
        this.logger.error({ err }, `could not audit the failed ${action} of record ${record.id}`),
      );
    throw new ReviewError(503, `record ${record.id}: ${action} not saved: ${reply.message}`);
  }

  private async removeQuietly(files: readonly string[]): Promise<void> {
    try {
      await removeLabelFiles(files);
    } catch (err) {
      this.logger.warn({ files }, `could not remove the replaced label's files: ${errorMessage(err)}`);
    }
  }

  private request(request: ReviewDbAsk): Promise<ReviewDbReply> {
    const worker = this.thread();
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({
          id,
          ok: false,
          missing: false,
          message: `the database did not answer within ${DB_TIMEOUT_MS / 1000} s`,
        });
      }, DB_TIMEOUT_MS);
      this.pending.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      worker.postMessage({ ...request, id } as ReviewDbRequest);
    });
  }

  private thread(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(new URL("./review-db-worker.js", import.meta.url), {
      workerData: { file: this.file },
    });
    worker.unref();
    worker.on("message", (reply: ReviewDbReply) => {
      const resolve = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      resolve?.(reply);
    });
    worker.on("error", (err) => this.logger.error({ err }, "the review labels' database thread failed"));
    worker.on("exit", () => {
      if (this.worker === worker) this.worker = undefined;
      for (const [id, resolve] of this.pending)
        resolve({ id, ok: false, missing: false, message: "the review labels' database thread exited" });
      this.pending.clear();
    });
    this.worker = worker;
    return worker;
  }
}

/** The audit entry of a label change on `record`, but its outcome. */
function labelEntry(
  record: PartRecord,
  action: LabelEvent["action"],
  before: unknown,
  after: unknown,
  user: string,
): Omit<AuditEntry, "ts" | "outcome"> {
  return { user, via: "http", action, camera: record.camera, target: String(record.id), before, after };
}
