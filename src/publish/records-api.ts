/**
 * The part record's query API, defined once: the HTTP server validates requests with these TypeBox schemas, the
 * store's queries take the same types, and `docs/records-openapi.json` is generated from them
 * (`write-openapi.ts`; a test fails when the committed file is stale).
 */
import { type Static, Type } from "@sinclair/typebox";

const VERDICTS = ["ok", "defect", "error"] as const;

const Time = (description: string) =>
  Type.String({
    description: `${description} ISO 8601 (\`2026-12-06T14:02:00Z\`) or milliseconds since the epoch.`,
    minLength: 1,
  });

/** `GET /api/records`: every filter is optional; pages are newest first. */
export const RecordsQuerySchema = Type.Object(
  {
    id: Type.Optional(
      Type.Integer({ description: "Only the record with this id (a part's page).", minimum: 1 }),
    ),
    camera: Type.Optional(Type.String({ description: "Only this camera.", minLength: 1 })),
    from: Type.Optional(Time("Only frames captured at or after this time.")),
    to: Type.Optional(Time("Only frames captured before this time.")),
    verdict: Type.Optional(
      Type.Union(
        VERDICTS.map((v) => Type.Literal(v)),
        { description: "Only this verdict." },
      ),
    ),
    score_min: Type.Optional(Type.Number({ description: "Only scores at or above this." })),
    score_max: Type.Optional(Type.Number({ description: "Only scores at or below this." })),
    part_id: Type.Optional(
      Type.String({ description: "Only this part id (from a PLC trigger).", minLength: 1 }),
    ),
    model_version: Type.Optional(
      Type.String({ description: "Only frames judged by this model version.", minLength: 1 }),
    ),
    label: Type.Optional(
      Type.String({
        description:
          "Only frames with this review label (`none`: not reviewed). Labels are set by the review console; until then every frame is `none`.",
        minLength: 1,
      }),
    ),
    limit: Type.Integer({ description: "Most records per page.", minimum: 1, maximum: 1000, default: 100 }),
    cursor: Type.Optional(
      Type.String({
        description: "Where the page starts: the `next_cursor` of the previous page.",
        pattern: "^[0-9]+\\.[0-9]+$",
      }),
    ),
  },
  { additionalProperties: false },
);
export type RecordsQuery = Static<typeof RecordsQuerySchema>;

export const RegionSchema = Type.Object(
  {
    bbox: Type.Array(Type.Number(), {
      minItems: 4,
      maxItems: 4,
      description:
        "x, y, width, height in pixels of the model's grid (the map's): the frame image may be larger, kept at the ROI's own resolution.",
    }),
    area: Type.Number({ description: "Pixels in the blob." }),
    peak: Type.Number({ description: "Largest map value inside the blob." }),
    centroid: Type.Array(Type.Number(), { minItems: 2, maxItems: 2 }),
  },
  { additionalProperties: false },
);

export const PartRecordSchema = Type.Object(
  {
    id: Type.Integer({ description: "The row's id: increases with every row written." }),
    camera: Type.String(),
    time: Type.String({ description: "Capture time, ISO 8601 UTC." }),
    ts: Type.Integer({ description: "Capture time, milliseconds since the epoch." }),
    seq: Type.Integer({ description: "The camera's frame sequence number (from 0 at each daemon start)." }),
    part_id: Type.Union([Type.String(), Type.Null()], { description: "Part id from a PLC trigger, if any." }),
    recipe: Type.Union([Type.String(), Type.Null()], {
      description:
        "The recipe the frame was judged under (docs/recipes.md); null: the camera's own settings.",
    }),
    bundle: Type.Union([Type.String(), Type.Null()], {
      description: "The bundle directory the camera's model came from.",
    }),
    model_version: Type.String(),
    threshold: Type.Union([Type.Number(), Type.Null()]),
    threshold_rule: Type.Union([Type.String(), Type.Null()], {
      description: "How the threshold was set: `sigma 3`, `value 0.5`, `false_alarm_rate 0.001` or `bundle`.",
    }),
    score: Type.Union([Type.Number(), Type.Null()], {
      description: "Image score; null when not finite (verdict error).",
    }),
    verdict: Type.Union(VERDICTS.map((v) => Type.Literal(v))),
    error: Type.Union([Type.String(), Type.Null()], { description: "Why the frame could not be judged." }),
    regions: Type.Array(RegionSchema),
    latency_ms: Type.Number({ description: "Capture to verdict, milliseconds." }),
    image: Type.Union([Type.String(), Type.Null()], {
      description:
        "The frame, a PNG path relative to the records directory: at the ROI's own resolution with records.images.native, else as the model saw it.",
    }),
    map: Type.Union([Type.String(), Type.Null()], {
      description: "The anomaly map, a grey PNG (128 = the threshold), relative to the records directory.",
    }),
    label: Type.Union([Type.String(), Type.Null()], { description: "Review label; null until reviewed." }),
  },
  { additionalProperties: false },
);
export type PartRecord = Static<typeof PartRecordSchema>;

export const RecordsPageSchema = Type.Object(
  {
    records: Type.Array(PartRecordSchema),
    next_cursor: Type.Union([Type.String(), Type.Null()], {
      description: "Pass as `cursor` for the next (older) page; null on the last page.",
    }),
  },
  { additionalProperties: false },
);
export type RecordsPage = Static<typeof RecordsPageSchema>;

/** `GET /api/records/hourly`: parts per verdict per hour per camera. */
export const HourlyQuerySchema = Type.Object(
  {
    camera: Type.Optional(Type.String({ description: "Only this camera.", minLength: 1 })),
    from: Type.Optional(Time("First hour (the hour holding this time).")),
    to: Type.Optional(Time("End (exclusive). Default: now.")),
  },
  { additionalProperties: false },
);
export type HourlyQuery = Static<typeof HourlyQuerySchema>;

export const HourlyRowSchema = Type.Object(
  {
    camera: Type.String(),
    hour: Type.String({ description: "Start of the hour, ISO 8601 UTC." }),
    ok: Type.Integer(),
    defect: Type.Integer(),
    error: Type.Integer(),
    parts: Type.Integer({ description: "All frames inspected in that hour." }),
  },
  { additionalProperties: false },
);
export type HourlyRow = Static<typeof HourlyRowSchema>;

export const HourlyReplySchema = Type.Object(
  { hours: Type.Array(HourlyRowSchema) },
  { additionalProperties: false },
);
export type HourlyReply = Static<typeof HourlyReplySchema>;

const PointInTime = (description: string) =>
  Type.String({
    description: `${description} ISO 8601 (\`2026-12-06T14:02:00Z\`) or a duration back from now (\`90s\`, \`30m\`, \`8h\`, \`7d\`), as \`stpmd records export\` takes it.`,
    minLength: 1,
  });

/** `GET /api/records/export.csv` and `.jsonl`: the range of `stpmd records export`, oldest first. */
export const ExportQuerySchema = Type.Object(
  {
    since: PointInTime("Only frames captured at or after this time."),
    until: Type.Optional(PointInTime("Only frames captured before this time (default: now).")),
    camera: Type.Optional(Type.String({ description: "Only this camera.", minLength: 1 })),
  },
  { additionalProperties: false },
);
export type ExportQuery = Static<typeof ExportQuerySchema>;

/** Milliseconds since the epoch from an ISO time or a number of milliseconds; undefined when neither. */
export function parseTime(text: string): number | undefined {
  const ms = /^[0-9]+$/.test(text) ? Number(text) : Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}

/** The review console's labels (docs/records.md, Labels). */
export const LABELS = ["false_alarm", "confirmed_defect"] as const;
export type Label = (typeof LABELS)[number];

/**
 * A defect type names the labelled set's folders (`test/<type>/`, `ground_truth/<type>/`): a plain folder name,
 * never `good` (the false alarms' folder).
 */
export const DEFECT_TYPE_PATTERN = "^(?!good$)[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
export const DEFAULT_DEFECT_TYPE = "defect";

/** `POST /api/records/<id>/label`. */
export const LabelRequestSchema = Type.Object(
  {
    label: Type.Union(
      LABELS.map((l) => Type.Literal(l)),
      {
        description:
          "`false_alarm`: the frame is normal; it goes to the camera's normal set (what `stpmd retrain --frames` reads) and to the labelled set's `test/good/`. `confirmed_defect`: it goes to the labelled set's `test/<defect_type>/` with a draft mask.",
      },
    ),
    defect_type: Type.Optional(
      Type.String({
        description: `Folder of a confirmed defect in the labelled set (default \`${DEFAULT_DEFECT_TYPE}\`); letters, digits, \`_\` and \`-\`, not \`good\`.`,
        pattern: DEFECT_TYPE_PATTERN,
      }),
    ),
  },
  { additionalProperties: false },
);
export type LabelRequest = Static<typeof LabelRequestSchema>;

export const LabelReplySchema = Type.Object(
  {
    record: PartRecordSchema,
    files: Type.Array(Type.String(), { description: "The files this label wrote (absolute paths)." }),
  },
  { additionalProperties: false },
);
export type LabelReply = Static<typeof LabelReplySchema>;

export const UnlabelReplySchema = Type.Object(
  {
    record: PartRecordSchema,
    files_removed: Type.Array(Type.String(), {
      description: "The files the undone label had written, now removed (absolute paths).",
    }),
  },
  { additionalProperties: false },
);
export type UnlabelReply = Static<typeof UnlabelReplySchema>;

/** `POST /api/records/<id>/mask`. */
export const MaskRequestSchema = Type.Object(
  { accept: Type.Literal(true, { description: "Accept the confirmed defect's draft mask as it is." }) },
  { additionalProperties: false },
);
export type MaskRequest = Static<typeof MaskRequestSchema>;

export const MaskReplySchema = Type.Object(
  {
    record: PartRecordSchema,
    mask: Type.String({ description: "The mask file (absolute path)." }),
    accepted_by: Type.String(),
    accepted_at: Type.String({ description: "ISO 8601 UTC." }),
  },
  { additionalProperties: false },
);
export type MaskReply = Static<typeof MaskReplySchema>;

export const ReviewCountsSchema = Type.Object(
  {
    cameras: Type.Record(
      Type.String(),
      Type.Object(
        { false_alarm: Type.Integer(), confirmed_defect: Type.Integer() },
        { additionalProperties: false },
      ),
      { description: "Frames labelled now (undone labels not counted), per camera and label." },
    ),
  },
  { additionalProperties: false },
);
export type ReviewCounts = Static<typeof ReviewCountsSchema>;
