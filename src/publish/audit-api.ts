/**
 * The audit log's query API, defined once: `GET /api/audit` validates its parameters with these TypeBox schemas and
 * `docs/records-openapi.json` describes the route from the same ones (`http/write-openapi.ts`).
 */
import { type Static, Type } from "@sinclair/typebox";
import type { AuditQuery } from "./audit.js";
import { parseTime } from "./records-api.js";

const Time = (description: string) =>
  Type.String({
    description: `${description} ISO 8601 (\`2026-12-06T14:02:00Z\`) or milliseconds since the epoch.`,
    minLength: 1,
  });

/** `GET /api/audit`: every filter is optional; pages are newest first. */
export const AuditQuerySchema = Type.Object(
  {
    since: Type.Optional(Time("Only changes made at or after this time.")),
    until: Type.Optional(Time("Only changes made before this time.")),
    user: Type.Optional(Type.String({ description: "Only changes asked for by this user.", minLength: 1 })),
    action: Type.Optional(
      Type.String({
        description:
          "Only this action: `start`, `set_threshold`, `enable_camera`, `disable_camera`, `collection`, `select_recipe`, `reload`, `reload_result`, `label`, `unlabel`, `accept_mask`.",
        minLength: 1,
      }),
    ),
    camera: Type.Optional(Type.String({ description: "Only changes to this camera.", minLength: 1 })),
    limit: Type.Integer({ description: "Most entries per page.", minimum: 1, maximum: 1000, default: 100 }),
    cursor: Type.Optional(
      Type.Integer({
        description: "Where the page starts: the `next_cursor` of the previous page.",
        minimum: 1,
      }),
    ),
  },
  { additionalProperties: false },
);
export type AuditQueryParams = Static<typeof AuditQuerySchema>;

const ChangeSourceSchema = Type.Union(
  ["config", "sighup", "file-watch", "mqtt", "opcua", "sparkplug", "http"].map((v) => Type.Literal(v)),
  { description: "The interface the change came through." },
);

export const AuditEntrySchema = Type.Object(
  {
    seq: Type.Integer({ description: "The entry's number: grows by one with every entry, across restarts." }),
    ts: Type.String({ description: "When the change was made, ISO 8601 UTC." }),
    user: Type.Union([Type.String(), Type.Null()], {
      description:
        "Who asked: the console or OPC UA user, the MQTT client; null for the config, a SIGHUP or a file watch.",
    }),
    via: ChangeSourceSchema,
    action: Type.String({ description: "What changed (see the `action` parameter)." }),
    camera: Type.Optional(Type.String()),
    target: Type.Optional(
      Type.String({ description: "What the change applied to beyond a camera (a record id)." }),
    ),
    before: Type.Optional(Type.Unknown({ description: "The value before the change." })),
    after: Type.Optional(Type.Unknown({ description: "The value after it (or asked for, when refused)." })),
    outcome: Type.Union([Type.Literal("ok"), Type.Literal("refused")]),
    detail: Type.Optional(Type.String({ description: "Why it was refused, or what a reload could not do." })),
  },
  { additionalProperties: false },
);

export const AuditPageSchema = Type.Object(
  {
    entries: Type.Array(AuditEntrySchema, { description: "Newest first." }),
    next_cursor: Type.Union([Type.Integer(), Type.Null()], {
      description: "Pass as `cursor` for the next (older) page; null on the last page.",
    }),
  },
  { additionalProperties: false },
);

/** Validated parameters as the log's query (times parsed; the schema has refused what does not parse as text). */
export function auditQuery(params: AuditQueryParams): AuditQuery | string {
  const query: AuditQuery = { limit: params.limit };
  for (const key of ["since", "until"] as const) {
    const text = params[key];
    if (text === undefined) continue;
    const ms = parseTime(text);
    if (ms === undefined) return `parameter ${key}: "${text}" is not an ISO 8601 time or milliseconds`;
    query[key] = ms;
  }
  if (params.user !== undefined) query.user = params.user;
  if (params.action !== undefined) query.action = params.action;
  if (params.camera !== undefined) query.camera = params.camera;
  if (params.cursor !== undefined) query.cursor = params.cursor;
  return query;
}
