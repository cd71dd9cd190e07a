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
  HourlyQuerySchema,
  HourlyReplySchema,
  RecordsPageSchema,
  RecordsQuerySchema,
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

/** A record's image route: the record's `id` in the path, a PNG back. */
function filePath(description: string): Record<string, unknown> {
  return {
    get: {
      summary: description,
      parameters: [
        {
          name: "id",
          in: "path",
          required: true,
          description: "The record's `id`.",
          schema: { type: "integer", minimum: 0 },
        },
      ],
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

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "stpmd part record API",
      version: "1",
      description:
        "The part record of an stpmd daemon (docs/records.md): every inspected frame, queried over the daemon's HTTP server (`http.enabled`), and its audit log of state changes (docs/audit.md). Reading needs no login. Generated from src/publish/records-api.ts and src/publish/audit-api.ts by `npm run api:openapi`.",
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
      "/api/records/{id}/image.png": filePath("The record's frame as inspected (PNG)."),
      "/api/records/{id}/map.png": filePath(
        "The record's anomaly map: an 8-bit grey PNG on the frame's grid, 128 = the threshold.",
      ),
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
