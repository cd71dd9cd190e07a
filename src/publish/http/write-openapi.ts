/**
 * `npm run api:openapi`: writes `docs/records-openapi.json`, the OpenAPI 3.1 description of the part record's HTTP
 * API, from the TypeBox definitions the server validates requests with (`records-api.ts`), so the file cannot
 * describe another API than the one served. The file is committed; `test/publish/http/openapi.test.ts` fails when
 * it is stale.
 */
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { TObject, TSchema } from "@sinclair/typebox";
import { repoFile } from "../../config/write-schema.js";
import { AuditPageSchema, AuditQuerySchema } from "../audit-api.js";
import {
  ExportQuerySchema,
  HourlyQuerySchema,
  HourlyReplySchema,
  LabelReplySchema,
  LabelRequestSchema,
  MaskReplySchema,
  MaskRequestSchema,
  RecordsPageSchema,
  RecordsQuerySchema,
  ReviewCountsSchema,
  UnlabelReplySchema,
} from "../records-api.js";

export const OPENAPI_FILE = repoFile("docs/records-openapi.json");

/** A TypeBox schema as plain JSON Schema (TypeBox's symbol keys dropped). */
function plain(schema: TSchema): Record<string, unknown> {
  return JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
}

/** Each property of a query object as an OpenAPI query parameter. */
function parameters(query: TObject): Record<string, unknown>[] {
  return Object.entries(query.properties).map(([name, schema]) => {
    const { description, ...rest } = plain(schema);
    return {
      name,
      in: "query",
      required: (query.required ?? []).includes(name) && rest.default === undefined,
      description,
      schema: rest,
    };
  });
}

const TEXT_ERROR = (description: string) => ({
  description,
  content: { "text/plain": { schema: { type: "string" } } },
});

const RECORD_ID = {
  name: "id",
  in: "path",
  required: true,
  description: "The record's `id`.",
  schema: { type: "integer", minimum: 0 },
};

/** A record's image route: the record's `id` in the path, a PNG back. */
function filePath(description: string): Record<string, unknown> {
  return {
    get: {
      summary: description,
      parameters: [RECORD_ID],
      responses: {
        "200": {
          description: "The PNG",
          content: { "image/png": { schema: { type: "string", contentEncoding: "binary" } } },
        },
        "404": TEXT_ERROR(
          "No such record, or it has no such image (only defects, errors and sampled good frames do), or the file is gone.",
        ),
        "503": TEXT_ERROR("The part record cannot be read now."),
      },
    },
  };
}

/** An export route: the range of `stpmd records export`, streamed as a download. */
function exportPath(format: "CSV" | "JSON lines", mediaType: string): Record<string, unknown> {
  return {
    get: {
      summary: `The records of a time range as ${format}, oldest first (a download)`,
      description:
        'Byte for byte what `stpmd records export` writes for the same range (CSV: a header row, RFC 4180 quoting, CRLF, regions as JSON in one column). Streamed in chunks as the client reads, with `Content-Disposition: attachment; filename="stpmd-records-<from>-<to>.<ext>"`; each export runs on a thread of its own on a read-only snapshot. At most 2 exports run at once.',
      parameters: parameters(ExportQuerySchema),
      responses: {
        "200": {
          description: `The records as ${format}`,
          content: { [mediaType]: { schema: { type: "string" } } },
        },
        "400": TEXT_ERROR("A parameter is invalid; the body names it."),
        "404": TEXT_ERROR("The part record is off (records.enabled: false)."),
        "503": TEXT_ERROR(
          "2 exports are running already (`Retry-After` says when to try again), or no database yet, or it cannot be read now; the body says which.",
        ),
      },
    },
  };
}

/** The answers every label change may give besides its 200. */
const CHANGE_REFUSALS = {
  "400": TEXT_ERROR("The body is not JSON or not valid; the body names the field."),
  "401": TEXT_ERROR("Wrong or missing user name or password (HTTP Basic, or the console's session)."),
  "403": TEXT_ERROR("No operators are configured, or a cross-site request."),
  "404": TEXT_ERROR("No such record (unknown, or deleted by retention)."),
  "429": TEXT_ERROR("Too many failed logins from this address; try again later."),
  "503": TEXT_ERROR(
    "The audit log, the database or the files could not be written; nothing was changed (the body says which).",
  ),
};

function jsonBody(schema: TSchema): Record<string, unknown> {
  return { required: true, content: { "application/json": { schema: plain(schema) } } };
}

function jsonReply(description: string, schema: TSchema): Record<string, unknown> {
  return { description, content: { "application/json": { schema: plain(schema) } } };
}

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "stpmd part record API",
      version: "1",
      description:
        "The part record of an stpmd daemon (docs/records.md): every inspected frame, queried over the daemon's HTTP server (`http.enabled`), the review console's labels, and its audit log of state changes (docs/audit.md). Reading needs no login; a label needs an operator. Generated from src/publish/records-api.ts and src/publish/audit-api.ts by `npm run api:openapi`.",
    },
    paths: {
      "/api/records": {
        get: {
          summary: "Records, newest first, filtered and paged",
          description:
            "Every filter is optional and they combine with AND. Pages follow `next_cursor` (keyset paging: a page costs the same however deep, and rows written meanwhile never shift one).",
          parameters: parameters(RecordsQuerySchema),
          responses: {
            "200": {
              description: "A page of records",
              content: { "application/json": { schema: plain(RecordsPageSchema) } },
            },
            "400": TEXT_ERROR("A parameter is invalid; the body names it."),
            "404": TEXT_ERROR("The part record is off (records.enabled: false)."),
            "503": TEXT_ERROR("No database yet, or it cannot be read now; the body says which."),
          },
        },
      },
      "/api/records/{id}/image.png": filePath(
        "The record's frame (PNG): at the ROI's own resolution with records.images.native, else as the model saw it.",
      ),
      "/api/records/{id}/map.png": filePath(
        "The record's anomaly map: an 8-bit grey PNG on the frame's grid, 128 = the threshold.",
      ),
      "/api/records/{id}/label": {
        post: {
          summary: "Label a record: a false alarm or a confirmed defect",
          description:
            "Needs an operator (`http.console.users`) and `Content-Type: application/json`. A false alarm's frame is copied to `<collection.dir>/<camera>/<name>_false-alarm.png` (read by `stpmd retrain --frames`) and to `<records.labelled_dir>/<camera>/test/good/`; a confirmed defect's to `test/<defect_type>/` with a draft mask in `ground_truth/<defect_type>/` (MVTec AD layout, read by `stpmd eval --data`). A record with another label is relabelled: the old label's files are removed. Audited (`label`).",
          parameters: [RECORD_ID],
          requestBody: jsonBody(LabelRequestSchema),
          responses: {
            "200": jsonReply("The record with its new label, and the files written", LabelReplySchema),
            ...CHANGE_REFUSALS,
            "409": TEXT_ERROR(
              "The record has no stored frame (only defects, errors and sampled good frames do).",
            ),
          },
        },
        delete: {
          summary: "Undo a record's label",
          description:
            "Removes exactly the files the label wrote; the label's history stays in the database. Audited (`unlabel`).",
          parameters: [RECORD_ID],
          responses: {
            "200": jsonReply("The record without its label, and the files removed", UnlabelReplySchema),
            ...CHANGE_REFUSALS,
            "409": TEXT_ERROR("The record is not labelled."),
          },
        },
      },
      "/api/records/{id}/mask": {
        post: {
          summary: "Accept a confirmed defect's draft mask",
          description:
            "The draft is the record's anomaly map at its threshold, at the frame's resolution. Acceptance is recorded in the database; `stpmd eval` reads the mask either way. Audited (`accept_mask`).",
          parameters: [RECORD_ID],
          requestBody: jsonBody(MaskRequestSchema),
          responses: {
            "200": jsonReply("The mask and who accepted it when", MaskReplySchema),
            ...CHANGE_REFUSALS,
            "409": TEXT_ERROR("The record is not a confirmed defect."),
          },
        },
      },
      "/api/review/counts": {
        get: {
          summary: "Frames labelled now, per camera and label",
          parameters: [],
          responses: { "200": jsonReply("Counts of the labels in force", ReviewCountsSchema) },
        },
      },
      "/api/audit": {
        get: {
          summary: "The audit log: every state change, newest first, filtered and paged",
          description:
            "Thresholds, enables, collection, reloads and review labels, with who asked, through which interface, the values before and after, and whether the change was made or refused (docs/audit.md). Reads across the rotated files. Every filter is optional and they combine with AND; pages follow `next_cursor`.",
          parameters: parameters(AuditQuerySchema),
          responses: {
            "200": {
              description: "A page of entries",
              content: { "application/json": { schema: plain(AuditPageSchema) } },
            },
            "400": TEXT_ERROR("A parameter is invalid; the body names it."),
            "503": TEXT_ERROR("The audit log cannot be read now; the body names the file and the problem."),
          },
        },
      },
      "/api/records/hourly": {
        get: {
          summary: "Parts per verdict per hour per camera",
          description:
            "For shift reports: one row per hour and camera that saw frames, oldest first. Counted as rows are written and kept apart from them, so retention deleting old rows leaves the hours' counts.",
          parameters: parameters(HourlyQuerySchema),
          responses: {
            "200": {
              description: "Hourly counts",
              content: { "application/json": { schema: plain(HourlyReplySchema) } },
            },
            "400": TEXT_ERROR("A parameter is invalid; the body names it."),
            "404": TEXT_ERROR("The part record is off (records.enabled: false)."),
            "503": TEXT_ERROR("No database yet, or it cannot be read now."),
          },
        },
      },
      "/api/records/export.csv": exportPath("CSV", "text/csv"),
      "/api/records/export.jsonl": exportPath("JSON lines", "application/x-ndjson"),
    },
  };
}

export function openApiText(): string {
  return `${JSON.stringify(openApiDocument(), null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OPENAPI_FILE, openApiText());
  console.log(`wrote ${OPENAPI_FILE}`);
}
