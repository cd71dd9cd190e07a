/**
 * The one definition of the daemon's configuration: every key, its type, bounds, default and documentation.
 * `config/stpmd.schema.json` (the shipped JSON Schema, which editors and `check-config` use and which documents each
 * key) is written from it by `npm run config:schema`, and a test fails when the file is stale; the TypeScript types
 * below are derived from it, so adding a key is one edit here.
 *
 * Keys stay snake_case in the types, so what the code reads is spelled exactly as in the file. After loading (or
 * {@link completeConfig}) every key with a default is present, which is what the types say.
 */
import { type Static, type TSchema, Type } from "@sinclair/typebox";

/** A string or number from a fixed list, as JSON Schema's `enum` (whose errors name the allowed values). */
function Enum<const T extends readonly (string | number)[]>(
  values: T,
  options: Record<string, unknown> = {},
) {
  const type = typeof values[0] === "number" ? "integer" : "string";
  return Type.Unsafe<T[number]>({ type, enum: values, ...options });
}

/**
 * One of several object shapes selected by the value of `field` (Ajv's `discriminator`: an error names the
 * branch's own keys instead of every branch's).
 */
function Discriminated<const T extends TSchema[]>(
  field: string,
  fieldDescription: string,
  branches: T,
  options: Record<string, unknown> = {},
) {
  const names = branches.map(
    (branch) => (branch.properties as Record<string, { const: string }>)[field]!.const,
  );
  return Type.Unsafe<Static<T[number]>>({
    ...options,
    type: "object",
    required: [field],
    properties: { [field]: { description: fieldDescription, type: "string", enum: names } },
    discriminator: { propertyName: field },
    oneOf: branches,
  });
}

/**
 * Users who log in with a name and a password kept in a file (OPC UA users, console operators): one definition, so
 * both are configured, resolved and checked alike. The config keeps the path; the interface reads the file at start.
 */
function passwordUsers(itemDescription: string, description: string, credentialExample: string) {
  return Type.Array(
    Type.Object(
      {
        username: Type.String({ description: "User name a client logs in with.", minLength: 1 }),
        password_file: Type.String({
          description: `File whose content (without trailing newlines) is the user's password, e.g. \`\${CREDENTIALS_DIRECTORY}/${credentialExample}\` with systemd's LoadCredential=. \`\${NAME}\` is replaced by the environment variable NAME. Read at start.`,
          minLength: 1,
        }),
      },
      { description: itemDescription, additionalProperties: false },
    ),
    { description, default: [] },
  );
}

/** How a reload applies a key (see `reload.ts`): live, by restarting the cameras concerned, or at the next start. */
export const RELOAD_RULES = ["live", "camera", "restart"] as const;
export type ReloadRule = (typeof RELOAD_RULES)[number];

/**
 * A key's reload rule, declared on the key with the `x-reload` keyword: every key has one, its own or that of an
 * enclosing key declared as a whole (a test fails otherwise).
 */
function reloads(rule: ReloadRule): { "x-reload": ReloadRule } {
  return { "x-reload": rule };
}

/**
 * How an image's anomaly map becomes its score: the names a camera's `score_aggregation` accepts. The method
 * itself (and its parameters) is src/stpm/part-score.ts; the names live here because the config, the lowest
 * layer that needs them, may not import the method.
 */
export const PART_SCORE_AGGREGATIONS = ["max", "smoothed_max", "top_k_mean"] as const;

/**
 * The bounds of each threshold rule, in one place: the schema below, the one-line text of a refusal
 * ({@link THRESHOLD_RULE_TEXT}) and the interfaces' descriptions are all written from them.
 */
const THRESHOLD_RULE_BOUNDS = {
  value: { exclusiveMinimum: 0 },
  sigma: { minimum: 0, maximum: 100 },
  false_alarm_rate: { exclusiveMinimum: 0, exclusiveMaximum: 1 },
} as const;

/** The letter each rule's value goes by in the one-line text. */
const THRESHOLD_RULE_SYMBOL = { value: "x", sigma: "k", false_alarm_rate: "p" } as const;

type ThresholdRuleKind = keyof typeof THRESHOLD_RULE_BOUNDS;

/** `0 < p < 1`, `0 <= k <= 100`, `x > 0`: one rule's bounds as text. */
function boundsText(kind: ThresholdRuleKind): string {
  const b: { minimum?: number; maximum?: number; exclusiveMinimum?: number; exclusiveMaximum?: number } =
    THRESHOLD_RULE_BOUNDS[kind];
  const symbol = THRESHOLD_RULE_SYMBOL[kind];
  const low =
    b.minimum !== undefined
      ? `${b.minimum} <= `
      : b.exclusiveMinimum !== undefined
        ? `${b.exclusiveMinimum} < `
        : "";
  const high =
    b.maximum !== undefined
      ? ` <= ${b.maximum}`
      : b.exclusiveMaximum !== undefined
        ? ` < ${b.exclusiveMaximum}`
        : "";
  // a lower bound alone reads better after the symbol: `x > 0`
  if (high === "" && b.exclusiveMinimum !== undefined) return `${symbol} > ${b.exclusiveMinimum}`;
  if (high === "" && b.minimum !== undefined) return `${symbol} >= ${b.minimum}`;
  return `${low}${symbol}${high}`;
}

/** The accepted threshold rules with their bounds, in one line: `{value: x > 0}, {sigma: 0 <= k <= 100} or …`. */
export const THRESHOLD_RULE_TEXT = (Object.keys(THRESHOLD_RULE_BOUNDS) as ThresholdRuleKind[])
  .map((kind) => `{${kind}: ${boundsText(kind)}}`)
  .join(", ")
  .replace(/, ([^,]*)$/, " or $1");

/**
 * A camera's threshold rule, `{sigma}`, `{value}` or `{false_alarm_rate}`: one definition for the config file and
 * for the run-time interfaces that set it (MQTT `set_threshold`, OPC UA, Sparkplug, the console), so all accept
 * exactly the same rules.
 */
export function thresholdRuleSchema(description: string, options: Record<string, unknown> = {}) {
  return Type.Union(
    [
      Type.Object(
        {
          sigma: Type.Number({
            description:
              "mean + sigma·std of the bundle's validation image scores (the rule `stpmd retrain` applies with --threshold-sigma).",
            ...THRESHOLD_RULE_BOUNDS.sigma,
          }),
        },
        { additionalProperties: false },
      ),
      Type.Object(
        {
          value: Type.Number({
            description: "A fixed image-score threshold.",
            ...THRESHOLD_RULE_BOUNDS.value,
          }),
        },
        { additionalProperties: false },
      ),
      Type.Object(
        {
          false_alarm_rate: Type.Number({
            description:
              "The fraction of normal frames allowed to be flagged: the threshold is the (1 − rate) quantile of the bundle's validation scores (docs/stations-and-geometry.md, section Sensitivity at run time).",
            ...THRESHOLD_RULE_BOUNDS.false_alarm_rate,
          }),
        },
        { additionalProperties: false },
      ),
    ],
    // `expected`: what an error says a value that fits no rule must be (the description documents the key)
    { description, expected: THRESHOLD_RULE_TEXT, ...options },
  );
}

/** What differs between the two durable queues built on the outbox (MQTT defect events, Sparkplug history). */
interface OutboxSchemaText {
  description: string;
  dir: string;
  dirDescription: string;
  maxMessagesDescription: string;
  maxBytes: number;
  maxBytesDescription: string;
  fileModeDescription: string;
  dirModeDescription: string;
}

/** One definition of an outbox's keys, so both queues take the same settings as the one DurableQueue class. */
function outboxSchema(text: OutboxSchemaText) {
  return Type.Object(
    {
      dir: Type.String({ description: text.dirDescription, default: text.dir, minLength: 1 }),
      max_messages: Type.Integer({ description: text.maxMessagesDescription, default: 10000, minimum: 1 }),
      max_bytes: Type.Integer({ description: text.maxBytesDescription, default: text.maxBytes, minimum: 1 }),
      file_mode: Type.String({
        description: text.fileModeDescription,
        default: "0640",
        pattern: "^0?[0-7]{3}$",
        "x-pattern-message": 'must be an octal mode such as "0640"',
      }),
      dir_mode: Type.String({
        description: text.dirModeDescription,
        default: "0750",
        pattern: "^0?[0-7]{3}$",
        "x-pattern-message": 'must be an octal mode such as "0750"',
      }),
    },
    { description: text.description, default: {}, additionalProperties: false },
  );
}

/**
 * A Sparkplug id (group, edge node, host): one topic level, so no `/`, `+` or `#` (Sparkplug 3.0, topic namespace
 * elements), and printable characters only.
 */
function SparkplugId(description: string) {
  return Type.String({
    description,
    minLength: 1,
    pattern: "^[^/+#\\s]+$",
    "x-pattern-message": 'must not contain "/", "+", "#" or whitespace (it is a Sparkplug topic level)',
  });
}

/**
 * The keys of a camera's station that a recipe may override as well (docs/recipes.md): one definition, so a
 * recipe accepts exactly what a camera does.
 */
function cameraStationKeys() {
  return {
    roi: Type.Optional(
      Type.Object(
        {
          x: Type.Integer({ description: "Left edge, source pixels.", minimum: 0 }),
          y: Type.Integer({ description: "Top edge, source pixels.", minimum: 0 }),
          width: Type.Integer({ description: "Width, source pixels.", minimum: 16 }),
          height: Type.Integer({ description: "Height, source pixels.", minimum: 16 }),
        },
        {
          description:
            "Region of interest in source pixels: GStreamer crops the frame to it before scaling (videocrop), so the rest of the frame is never copied into the daemon. It must lie inside the source's frame. Train the camera's bundle on the same ROI (`stpmd retrain --roi x,y,w,h`); the daemon warns when the sizes or aspects differ.",
          additionalProperties: false,
          ...reloads("camera"),
        },
      ),
    ),
    ignore: Type.Optional(
      Type.Object(
        {
          polygons: Type.Array(
            Type.Array(Type.Tuple([Type.Number(), Type.Number()]), {
              description: "Corners [x, y] in ROI pixels (source pixels when there is no ROI).",
              minItems: 3,
            }),
            { description: "Polygons whose inside is ignored.", default: [] },
          ),
          mask: Type.Optional(
            Type.String({
              description:
                "Image file (PNG/JPEG) at the ROI's size or any size of the same aspect: pixels brighter than half are ignored. Relative to the config file.",
              minLength: 1,
            }),
          ),
        },
        {
          description:
            "Parts of the view to ignore (conveyor edges, labels, serial numbers): their anomaly-map pixels are set to 0 before the image score and the regions are computed.",
          additionalProperties: false,
          ...reloads("live"),
        },
      ),
    ),
    threshold: Type.Optional(
      thresholdRuleSchema(
        `Image-score threshold of this camera, applied at run time without retraining: ${THRESHOLD_RULE_TEXT}. Default: the bundle's own threshold.`,
        reloads("live"),
      ),
    ),
    score_aggregation: Type.Optional(
      Enum(PART_SCORE_AGGREGATIONS, {
        description:
          "How this camera's anomaly map becomes the part's score, instead of the bundle's own (its manifest's `score`; `max` for bundles before it): `max` (the largest pixel), `smoothed_max` (the largest pixel after a Gaussian blur of σ = 4 map pixels) or `top_k_mean` (the mean of the largest 1 % of the map). A threshold is made in one score and does not fit another: the threshold rule (or the bundle's own threshold) is applied to the bundle's validation scores under this aggregation, which bundles from `stpmd retrain` since issue 19 store; with an older bundle only a `threshold: {value}` rule is accepted, otherwise the camera keeps the bundle's aggregation and says so in one log line (docs/method-and-retraining.md).",
        ...reloads("live"),
      }),
    ),
  };
}

/** A recipe's or camera's name: a plain word, because interfaces carry it as a value and a topic may show it. */
const RECIPE_NAME_PATTERN = "^[A-Za-z0-9_.-]+$";

/** What a recipe may set for one camera; every key left out keeps the camera's own setting. */
function recipeCameraSchema() {
  return Type.Object(
    {
      bundle: Type.Optional(
        Type.String({
          description:
            "Model bundle directory this camera's station uses under the recipe (instead of its `model`, or model.bundle). Relative to the config file. Loaded, and checked by loading, before a switch to the recipe is acknowledged.",
          minLength: 1,
        }),
      ),
      enabled: Type.Optional(
        Type.Boolean({ description: "Whether the camera runs under the recipe (instead of its `enabled`)." }),
      ),
      ...cameraStationKeys(),
    },
    {
      description:
        "One camera's overrides under the recipe: bundle, enabled, roi, ignore, threshold, score_aggregation. Keys left out keep the camera's own setting.",
      additionalProperties: false,
    },
  );
}

export const configSchema = Type.Object(
  {
    model: Type.Object(
      {
        bundle: Type.String({
          description:
            "Model bundle directory (teacher.onnx, student.onnx and manifest.json as written by `stpmd retrain`).",
          minLength: 1,
          ...reloads("camera"),
        }),
        watch: Type.Boolean({
          description:
            "Reload the bundle when it changes on disk, e.g. after on-device retraining or a deployment copies a new one in.",
          default: true,
          ...reloads("restart"),
        }),
        watch_debounce_ms: Type.Integer({
          description:
            "Wait this long after the last change in the bundle directory before reloading, so that a bundle being copied file by file is read only once it is complete.",
          default: 2000,
          minimum: 0,
          maximum: 600000,
          ...reloads("restart"),
        }),
      },
      { description: "The STPM model bundle the daemon serves.", additionalProperties: false },
    ),
    inference: Type.Object(
      {
        providers: Type.Array(
          Discriminated(
            "name",
            "Which execution provider.",
            [
              Type.Object(
                {
                  name: Type.Literal("tensorrt", { description: "Selects TensorRT." }),
                  device_id: Type.Integer({ description: "CUDA device index.", default: 0, minimum: 0 }),
                },
                {
                  description:
                    "NVIDIA TensorRT, with ONNX Runtime's defaults: fp32 and no engine cache (each start builds the engine again, minutes on a Jetson). onnxruntime-node passes only the device to TensorRT, and on that path TensorRT ignores its ORT_TENSORRT_* environment variables, so fp16 and an engine cache cannot be set from here. Needs an ONNX Runtime build with TensorRT and libnvinfer 10; not verified on this project's machines.",
                  additionalProperties: false,
                },
              ),
              Type.Object(
                {
                  name: Type.Literal("cuda", { description: "Selects CUDA." }),
                  device_id: Type.Integer({ description: "CUDA device index.", default: 0, minimum: 0 }),
                },
                { description: "NVIDIA CUDA.", additionalProperties: false },
              ),
              Type.Object(
                {
                  name: Type.Literal("webgpu", { description: "Selects WebGPU." }),
                },
                {
                  description:
                    "WebGPU (Dawn over Vulkan), built into onnxruntime-node's linux-x64 package: needs a Vulkan driver (libvulkan.so.1 and a GPU's ICD); without one session creation fails with \"No supported adapters\" and the next provider is used. `stpmd doctor` says whether it works on this machine.",
                  additionalProperties: false,
                },
              ),
              Type.Object(
                {
                  name: Type.Literal("cpu", { description: "Selects the CPU." }),
                },
                {
                  description: "The CPU; always available, and the last resort.",
                  additionalProperties: false,
                },
              ),
            ],
            { description: "One execution provider, selected by `name`." },
          ),
          {
            description:
              "Execution providers in order of preference; ONNX Runtime falls back along the list for operators a provider cannot run. On a Jetson: tensorrt, then cuda, then cpu.",
            default: [{ name: "cpu" }],
            minItems: 1,
          },
        ),
        intra_op_threads: Type.Integer({
          description:
            "Threads ONNX Runtime may use inside one operator; 0 leaves the choice to ONNX Runtime.",
          default: 0,
          minimum: 0,
          maximum: 256,
        }),
        max_batch: Type.Integer({
          description:
            "Most frames (from any cameras) run through the model in one batch. Batches pay off on GPUs; on a CPU-only box 1 gives the same throughput at a third of the latency (docs/performance.md, section The daemon).",
          default: 8,
          minimum: 1,
          maximum: 64,
        }),
        max_wait_ms: Type.Integer({
          description:
            "Longest a frame waits for others to fill a batch before the batch runs anyway; 0 runs every frame as soon as the model is free.",
          default: 20,
          minimum: 0,
          maximum: 1000,
        }),
        queue_size: Type.Integer({
          description:
            "Frames that may wait for inference; when the queue is full the oldest frame is dropped (and counted), so a slow model never makes the cameras fall behind. Must be at least max_batch.",
          default: 32,
          minimum: 1,
          maximum: 4096,
        }),
      },
      {
        description: "ONNX Runtime session and batching.",
        default: {},
        additionalProperties: false,
        ...reloads("restart"),
      },
    ),
    cameras: Type.Array(
      Type.Object(
        {
          id: Type.String({
            description:
              "Camera id, unique in this file. It is an MQTT topic level, so only letters, digits, `_` and `-`.",
            pattern: "^[A-Za-z0-9_-]+$",
            "x-pattern-message": 'must contain only letters, digits, "_" and "-" (it is an MQTT topic level)',
            // a reload matches cameras by id: a new id is a new camera (started), a missing one is stopped
            ...reloads("camera"),
          }),
          source: Type.String({
            description:
              "GStreamer description of the source part of the pipeline, as for gst-launch-1.0 (e.g. `nvarguscamerasrc sensor-id=0 ! nvvidconv`). The daemon appends conversion to RGB at the model's input size and its appsink. File paths inside it are opened by GStreamer, relative to the daemon's working directory, not to this file.",
            minLength: 1,
            ...reloads("camera"),
          }),
          trigger: Enum(["free_run", "hardware"], {
            description:
              "`free_run`: the camera streams continuously. `hardware`: the camera sends a frame per external trigger (e.g. a light barrier), so gaps between frames are normal.",
            default: "free_run",
            ...reloads("camera"),
          }),
          stall_timeout_s: Type.Number({
            description:
              "Restart the source when no frame arrived for this many seconds; 0 disables the check (consider that for `trigger: hardware` with long gaps).",
            default: 10,
            minimum: 0,
            ...reloads("camera"),
          }),
          restart_backoff: Type.Object(
            {
              initial_ms: Type.Integer({
                description:
                  "Delay before the first restart (at least 1 ms: with 0 the backoff could never grow).",
                default: 500,
                minimum: 1,
              }),
              max_ms: Type.Integer({
                description: "Longest delay between restarts; at least initial_ms.",
                default: 30000,
                minimum: 0,
              }),
              factor: Type.Number({
                description: "Multiplier applied to the delay after each failed restart.",
                default: 2,
                minimum: 1,
              }),
            },
            {
              description:
                "Delay before restarting a failed or stalled source: initial_ms, multiplied by factor after each failed restart, capped at max_ms; reset once frames flow again.",
              default: {},
              additionalProperties: false,
              ...reloads("camera"),
            },
          ),
          enabled: Type.Boolean({
            description: "Set false to keep a camera in the file without running it.",
            default: true,
            ...reloads("camera"),
          }),
          model: Type.Optional(
            Type.String({
              description:
                "Model bundle directory of this camera's station (default: model.bundle). Cameras naming the same directory share one loaded model; batches never mix models. Each bundle is watched and reloaded on its own.",
              minLength: 1,
              ...reloads("camera"),
            }),
          ),
          ...cameraStationKeys(),
        },
        { description: "One camera.", additionalProperties: false },
      ),
      { description: "The cameras to inspect; at least one.", minItems: 1 },
    ),
    mqtt: Type.Object(
      {
        url: Type.String({
          description:
            "Broker URL: mqtt://, mqtts:// (TLS), ws:// or wss:// (WebSocket). Environment override: STPMD_MQTT_URL.",
          pattern: "^(mqtts?|wss?)://[^\\s/]+",
          "x-pattern-message": "must be a mqtt://, mqtts://, ws:// or wss:// URL with a host",
        }),
        client_id: Type.Optional(
          Type.String({
            description:
              "MQTT client id; must be unique on the broker. Default: `stpmd-<hostname>`, filled in by the loader.",
            minLength: 1,
          }),
        ),
        username: Type.Optional(
          Type.String({
            description:
              "Broker user name; needs password or password_file. Environment override: STPMD_MQTT_USERNAME.",
          }),
        ),
        password: Type.Optional(
          Type.String({
            description:
              "Broker password; needs username. Prefer password_file or the STPMD_MQTT_PASSWORD environment variable to keeping it in this file.",
          }),
        ),
        password_file: Type.Optional(
          Type.String({
            description:
              // biome-ignore lint/suspicious/noTemplateCurlyInString: documents the ${NAME} expansion the loader does
              "File whose content (without trailing newlines) is the broker password, instead of password; e.g. `${CREDENTIALS_DIRECTORY}/mqtt_password` with systemd's LoadCredential=. `${NAME}` is replaced by the environment variable NAME.",
            minLength: 1,
          }),
        ),
        tls: Type.Optional(
          Type.Object(
            {
              ca: Type.Optional(
                Type.String({
                  description:
                    "PEM file with the CA certificate(s) that signed the broker's certificate (default: the system's CAs).",
                  minLength: 1,
                }),
              ),
              cert: Type.Optional(
                Type.String({
                  description:
                    "PEM client certificate, for brokers that authenticate clients by certificate; needs key.",
                  minLength: 1,
                }),
              ),
              key: Type.Optional(
                Type.String({
                  description: "PEM private key of the client certificate; needs cert.",
                  minLength: 1,
                }),
              ),
              reject_unauthorized: Type.Boolean({
                description:
                  "Refuse brokers whose certificate does not verify against the CAs. Turn off only for testing.",
                default: true,
              }),
            },
            {
              description:
                // biome-ignore lint/suspicious/noTemplateCurlyInString: documents the ${NAME} expansion the loader does
                "TLS settings for mqtts:// and wss://. File paths may use `${NAME}` for environment variables; the loader checks each file is readable.",
              additionalProperties: false,
            },
          ),
        ),
        prefix: Type.String({
          description:
            "First level(s) of every topic the daemon publishes, e.g. `stpmd/<camera>/result`. No `+` or `#`, no leading or trailing `/`, and not starting with `$` (reserved by brokers).",
          default: "stpmd",
          pattern: "^[^/+#$](?:[^+#]*[^/+#])?$",
          "x-pattern-message": 'must not contain "+" or "#", start or end with "/", or start with "$"',
        }),
        result_qos: Enum([0, 1, 2], {
          description: "QoS of the per-frame result messages (frequent; losing one is harmless).",
          default: 0,
        }),
        event_qos: Enum([1, 2], {
          description: "QoS of defect events (rare; each must arrive, so at least 1).",
          default: 1,
        }),
        snapshot: Enum(["topic", "inline", "none"], {
          description:
            "JPEG snapshot of a defective frame: `topic` publishes it on its own topic, `inline` embeds it (base64) in the event, `none` sends no image.",
          default: "topic",
        }),
        snapshot_quality: Type.Integer({
          description: "JPEG quality of snapshots.",
          default: 80,
          minimum: 1,
          maximum: 100,
        }),
        reconnect_period_ms: Type.Integer({
          description: "Wait between attempts to reconnect to the broker.",
          default: 2000,
          minimum: 100,
          maximum: 600000,
        }),
        protocol_version: Enum([4, 5], {
          description:
            "MQTT protocol of the daemon's session: 5 (MQTT 5.0) or 4 (MQTT 3.1.1). 5 by default: commands then answer on a request's Response Topic with its Correlation Data, and the broker reports a publish it refuses (an ACL) instead of dropping it silently, so a refused defect event stays in the outbox. Mosquitto since 1.6, EMQX, HiveMQ and VerneMQ speak 5; a broker that refuses it is logged as such: set 4 for it. Sparkplug keeps its own 3.1.1 session.",
          default: 5,
        }),
        status_interval_s: Type.Number({
          description: "Seconds between status messages (per-camera frame rates, drops, model version).",
          default: 10,
          minimum: 1,
          maximum: 86400,
        }),
        commands: Type.Object(
          {
            enabled: Type.Boolean({
              description:
                "Accept commands (reload, set_threshold, enable_camera, collection, select_recipe, status, and the candidate commands retrain, cancel_retrain, shadow, promote, rollback, discard_candidate: docs/candidates.md) on `<prefix>/command/<name>` and answer on `<prefix>/command/<name>/response` (or on an MQTT 5 request's Response Topic, with its Correlation Data), over the daemon's own MQTT connection. Off by default: a command changes what the line rejects, so turn it on only with a broker whose ACL lets only operators publish `<prefix>/command/#` (deploy/mosquitto/stpmd.acl). With it on, no camera may be called `command`.",
              default: false,
            }),
          },
          {
            description:
              "Request/response commands over MQTT, each with an optional `transaction` echoed in its response (Zigbee2MQTT's bridge/request convention).",
            default: {},
            additionalProperties: false,
          },
        ),
        outbox: outboxSchema({
          description:
            "Defect events that cannot be delivered while the broker is unreachable are kept on disk and sent after reconnecting, oldest first. An event and its snapshot are one entry, stored whole or not at all. When a limit is reached, NEW events are refused (the queued ones are kept) and counted in status.outbox.overflowed; events whose write fails (disk full, I/O error) are counted in status.outbox.lost. If the directory is deleted it is recreated. One daemon per directory: a second one refuses to start (lock file .lock holding the pid).",
          dir: "/var/lib/stpmd/outbox",
          dirDescription: "Outbox directory.",
          maxMessagesDescription:
            "Most events kept. Counts events, not MQTT messages: an event and its snapshot are one (the name is kept so that existing configs stay valid).",
          maxBytes: 536870912,
          maxBytesDescription:
            "Most bytes kept (512 MiB by default), file sizes including snapshots. Keep it below the free space of the filesystem: events beyond the free space are lost rather than refused (a warning at start says so).",
          fileModeDescription:
            "Permission bits (octal) of the outbox files, which hold production images. Applied at creation regardless of the umask, and to files left by an earlier run; the files are owned by the daemon's user.",
          dirModeDescription:
            "Permission bits (octal) of the outbox directory (and its quarantine folder), set at start and whenever it is recreated.",
        }),
      },
      {
        description: "The MQTT broker that receives results, defect events and status.",
        ...reloads("restart"),
        additionalProperties: false,
      },
    ),
    sparkplug: Type.Object(
      {
        enabled: Type.Boolean({
          description: "Run the Sparkplug B edge node (its own MQTT session, next to the publisher's).",
          default: false,
        }),
        group_id: Type.Optional(
          SparkplugId(
            "Sparkplug group id (the topic's second level), e.g. the line's name; required when enabled.",
          ),
        ),
        edge_node_id: Type.Optional(
          SparkplugId(
            "Sparkplug edge node id; must be unique in the group. Default: the host name, filled in by the loader.",
          ),
        ),
        primary_host_id: Type.Optional(
          SparkplugId(
            "Host id of the primary host application (SCADA). When set, the node waits for its STATE `online: true` before the births, and holds defects on disk while it is offline (replayed as historical data when it returns).",
          ),
        ),
        url: Type.Optional(
          Type.String({
            description:
              "Broker URL of the Sparkplug session (mqtt://, mqtts://, ws://, wss://). Default: mqtt.url. TLS settings are mqtt.tls in both cases.",
            pattern: "^(mqtts?|wss?)://[^\\s/]+",
            "x-pattern-message": "must be a mqtt://, mqtts://, ws:// or wss:// URL with a host",
          }),
        ),
        username: Type.Optional(
          Type.String({
            description:
              "Broker user name of the Sparkplug session, with password or password_file; default: mqtt's credentials. A broker with `use_username_as_clientid` (as deploy/mosquitto ships) needs a user of its own here, or the two sessions take each other's place.",
            minLength: 1,
          }),
        ),
        password: Type.Optional(
          Type.String({
            description: "Password of sparkplug.username; prefer password_file to keeping it in this file.",
          }),
        ),
        password_file: Type.Optional(
          Type.String({
            description:
              // biome-ignore lint/suspicious/noTemplateCurlyInString: documents the ${NAME} expansion the loader does
              "File holding the password of sparkplug.username (trailing newlines dropped); `${NAME}` is replaced by the environment variable NAME.",
            minLength: 1,
          }),
        ),
        bdseq_file: Type.String({
          description:
            "Where the birth/death sequence number (bdSeq) of the last connect is kept, so that it grows across restarts as Sparkplug requires. Written atomically before every connect.",
          default: "/var/lib/stpmd/sparkplug-bdseq",
          minLength: 1,
        }),
        report_interval_ms: Type.Integer({
          description:
            "Least time between two reports of changed counters (fps, inspected, defects, outbox); defects themselves are reported at once.",
          default: 1000,
          minimum: 100,
          maximum: 60000,
        }),
        reconnect_period_ms: Type.Integer({
          description: "Wait between attempts to reconnect the Sparkplug session.",
          default: 2000,
          minimum: 100,
          maximum: 600000,
        }),
        history: outboxSchema({
          description:
            "Defect DDATA held on disk while the node is not born (broker unreachable, or the primary host offline), replayed oldest first with is_historical once the births are out. Full: new defects are refused and logged; the held ones are kept.",
          dir: "/var/lib/stpmd/sparkplug-history",
          dirDescription: "History directory (not the MQTT outbox's: each holds its own lock).",
          maxMessagesDescription: "Most defects held.",
          maxBytes: 67108864,
          maxBytesDescription:
            "Most bytes held (64 MiB by default); a defect's DDATA is a few hundred bytes.",
          fileModeDescription: "Permission bits (octal) of the history files.",
          dirModeDescription: "Permission bits (octal) of the history directory.",
        }),
      },
      {
        description:
          "Sparkplug B 3.0 edge node for SCADA: NBIRTH/NDATA/NDEATH for the daemon, DBIRTH/DDATA/DDEATH per camera, NCMD Rebirth and Reload Model, DCMD Threshold and Enabled.",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    collection: Type.Object(
      {
        enabled: Type.Boolean({ description: "Save frames at all.", default: false }),
        dir: Type.String({
          description:
            "Directory for saved frames, one folder per camera (station): <dir>/<camera>/<camera>_<capture time>_<seq>.png, so that `stpmd retrain --frames <dir>/<camera>` reads one station's frames directly. Frames are saved at the ROI's resolution (the whole frame without an ROI), capped by max_long_side, whatever the model's geometry, so a later retrain can choose another.",
          default: "/var/lib/stpmd/frames",
          minLength: 1,
        }),
        max_long_side: Type.Integer({
          description:
            "Longest side, in pixels, of a frame kept at the ROI's own resolution (a collected frame, and the part record's images with records.images.native): larger ROIs are scaled down with their aspect kept (a 4000×3000 frame is kept at 2048×1536 by default), smaller ones are kept as they are.",
          default: 2048,
          minimum: 32,
        }),
        score_quantile: Type.Number({
          description:
            "A frame is saved only if its anomaly score is below this quantile of the bundle's validation scores, i.e. normal with a margin.",
          default: 0.5,
          minimum: 0,
          maximum: 1,
        }),
        min_interval_s: Type.Number({
          description:
            "Least time between two saved frames of one camera, so the set covers the day rather than one minute of it.",
          default: 60,
          minimum: 0,
        }),
        max_frames_per_camera: Type.Integer({
          description: "Most frames kept per camera; the oldest are deleted beyond it.",
          default: 1000,
          minimum: 1,
        }),
        max_bytes: Type.Integer({
          description:
            "Most bytes kept over all cameras (2 GiB by default); the oldest frames are deleted beyond it.",
          default: 2147483648,
          minimum: 1,
        }),
        file_mode: Type.String({
          description:
            "Permission bits (octal) of saved frames, which are production images. Applied at creation regardless of the umask, and to frames left by an earlier run; the files are owned by the daemon's user.",
          default: "0640",
          pattern: "^0?[0-7]{3}$",
          "x-pattern-message": 'must be an octal mode such as "0640"',
        }),
        dir_mode: Type.String({
          description: "Permission bits (octal) of the frames directory, set when the collector starts.",
          default: "0750",
          pattern: "^0?[0-7]{3}$",
          "x-pattern-message": 'must be an octal mode such as "0750"',
        }),
      },
      {
        description: "Saving normal-looking frames for retraining the student on this line's own images.",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    records: Type.Object(
      {
        enabled: Type.Boolean({
          description:
            "Keep the part record: one row per inspected frame (camera, capture time, sequence, part id, bundle, model version, threshold and its rule, score, verdict, regions, latency) in an SQLite database, with images of defects and a sample of normal frames beside it (docs/records.md). Written off the frame path: a slow or full disk costs records, never inspection.",
          default: true,
        }),
        dir: Type.Optional(
          Type.String({
            description:
              "Directory holding `records.db` (with its `-wal` and `-shm` files) and `images/<camera>/<day>/`. Default: `records` beside `mqtt.outbox.dir` (/var/lib/stpmd/records with the default outbox), so the record lives with the daemon's other state. Put it on a real disk: on a tmpfs the record is lost at every power cut.",
            minLength: 1,
          }),
        ),
        labelled_dir: Type.Optional(
          Type.String({
            description:
              "Directory of the review console's labelled sets, one per camera in MVTec AD layout: `<labelled_dir>/<camera>/test/good/` (false alarms), `test/<defect type>/` (confirmed defects) and `ground_truth/<defect type>/<name>_mask.png` (their draft masks), so `stpmd eval --data <labelled_dir>/<camera>` reads it. Default: `labelled` beside `records.dir`. False alarms also go to `<collection.dir>/<camera>/`, where `stpmd retrain --frames` reads them (docs/records.md, Labels).",
            minLength: 1,
          }),
        ),
        images: Type.Object(
          {
            defects: Type.Boolean({
              description:
                "Save every defect's frame (at the ROI's own resolution with `native`, else as the model saw it) with its anomaly map on the model's grid (a grey PNG, 128 = the threshold), and the frame of every error verdict.",
              default: true,
            }),
            native: Type.Boolean({
              description:
                "Keep the saved frames at the ROI's own resolution, before the model's resize (the long side capped at `collection.max_long_side`): each camera's capture process then takes every frame a second time at that size (a second GStreamer branch) and holds the newest ones until their verdict. False: the frames the model saw (the model's input for a squashed bundle, the ROI at `--scale` for a tiled one). Costs capture CPU (docs/records.md, Native frames).",
              default: true,
            }),
            native_mb: Type.Integer({
              description:
                'Memory, per camera, for the native frames waiting for their verdict (in the camera\'s capture process). It holds at most as many frames as can wait for a verdict (inference.queue_size + 2 × inference.max_batch: 48 by default), so small frames take less; 128 MiB hold all 48 up to 960×960, 29 of 1500×1000. A defect whose frame is no longer held when its verdict comes (a full queue of large frames) is saved as the model saw it (counted: stpmd_records_images_total{outcome="native_missed"}).',
              default: 128,
              minimum: 1,
              maximum: 4096,
            }),
            png_compression: Type.Integer({
              description:
                "zlib level (0–9) of the saved frames' PNGs: lower encodes faster into larger files (one 900×900 bottle frame, timed once, not committed: 25 ms and 857 KiB at 6, 11 ms and 1.1 MiB at 1, 4 ms and 2.3 MiB at 0); with native frames at 10 % defects on a saturated 2-core box, 0.55 of the throughput without the record at 6, 0.70 at 1, 0.73 at 0 (docs/records.md, Measured). Maps are always level 6: they are small.",
              default: 6,
              minimum: 0,
              maximum: 9,
            }),
            normal_sample: Type.Integer({
              description:
                "Save the frame of 1 in this many frames judged good, per camera (0: none), so the record shows what normal looked like beside each defect.",
              default: 1000,
              minimum: 0,
            }),
          },
          {
            description: "Which frames are kept as images beside their rows.",
            default: {},
            additionalProperties: false,
          },
        ),
        retention: Type.Object(
          {
            max_age_days: Type.Number({
              description: "Rows (and their images) older than this many days are deleted, oldest first.",
              default: 30,
              exclusiveMinimum: 0,
            }),
            max_rows: Type.Integer({
              description:
                "Most rows kept; beyond it the oldest rows and their images are deleted (a 4-camera line at 10 fps writes 3.5 M rows a day).",
              default: 20000000,
              minimum: 1,
            }),
            max_bytes: Type.Integer({
              description:
                "Most bytes kept: the database's used pages plus the images (8 GiB by default); beyond it the oldest rows and their images are deleted. Freed pages are reused, so the database file does not shrink but stops growing.",
              default: 8589934592,
              minimum: 1048576,
            }),
          },
          {
            description:
              "How much record is kept. Every limit deletes the oldest rows first, with their images; what was deleted is counted (stpmd_records_deleted_total) and logged at most once a minute.",
            default: {},
            additionalProperties: false,
          },
        ),
        file_mode: Type.String({
          description:
            "Permission bits (octal) of the database and image files, which hold production images. Applied at creation regardless of the umask.",
          default: "0640",
          pattern: "^0?[0-7]{3}$",
          "x-pattern-message": 'must be an octal mode such as "0640"',
        }),
        dir_mode: Type.String({
          description: "Permission bits (octal) of the records directory and its image folders.",
          default: "0750",
          pattern: "^0?[0-7]{3}$",
          "x-pattern-message": 'must be an octal mode such as "0750"',
        }),
      },
      {
        description:
          "The part record: every inspected frame in an embedded database, with images of defects, queried over HTTP (`/api/records`) and exported with `stpmd records export`.",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    candidates: Type.Object(
      {
        dir: Type.Optional(
          Type.String({
            description:
              "Directory of the candidate models, one folder per camera: `<dir>/<camera>/candidate/` (the bundle a retrain job wrote, never the live one), `job.json` (the job's progress and outcome), `offline-eval.json` (both models on the camera's labelled set), `shadow/` (both verdicts on the shadowed live frames) and `previous/` (the bundle a promotion replaced, for a rollback) (docs/candidates.md). Default: `candidates` beside `mqtt.outbox.dir` (/var/lib/stpmd/candidates with the default outbox). It must be on the same file system as the cameras' bundles for a promotion to be a rename; elsewhere the bundle is copied first, then renamed.",
            minLength: 1,
          }),
        ),
        retrain: Type.Object(
          {
            epochs: Type.Integer({
              description:
                "Epoch ceiling of a retrain job; the stopping rule usually ends it sooner (as `stpmd retrain --epochs`).",
              default: 50,
              minimum: 1,
            }),
            time_budget_min: Type.Number({
              description:
                "Most minutes a retrain job may train (no epoch starts that would end past it), so a job started at the end of a shift is done before the next.",
              default: 120,
              exclusiveMinimum: 0,
            }),
            threads: Type.Integer({
              description:
                "ONNX Runtime threads of the retrain child process. One by default, so that on a 2-core box inspection keeps a core of its own while a job trains.",
              default: 1,
              minimum: 1,
            }),
            nice: Type.Integer({
              description:
                "Scheduling niceness of the retrain child process (0–19): 19, the lowest priority, gives inspection the CPU whenever both want it.",
              default: 19,
              minimum: 0,
              maximum: 19,
            }),
            min_frames: Type.Integer({
              description:
                "Fewest frames in `<collection.dir>/<camera>/` (collected normals and false alarms) a retrain job starts with; fewer is refused, naming the folder and the count.",
              default: 20,
              minimum: 2,
            }),
          },
          {
            description:
              "Retrain jobs: one at a time, in a child process at low priority, training a candidate from `<collection.dir>/<camera>/` with the live bundle's geometry, score and teacher.",
            default: {},
            additionalProperties: false,
          },
        ),
        shadow: Type.Object(
          {
            share: Type.Number({
              description:
                "Share of the camera's live frames the candidate also judges while it runs in shadow (0 < share ≤ 1). Its verdicts are recorded beside the live ones and never published.",
              default: 0.25,
              exclusiveMinimum: 0,
              maximum: 1,
            }),
            max_frames: Type.Integer({
              description: "Shadow stops by itself after the candidate has judged this many frames.",
              default: 5000,
              minimum: 1,
            }),
            max_hours: Type.Number({
              description:
                "Shadow stops by itself this many hours after it started (daemon restarts included).",
              default: 24,
              exclusiveMinimum: 0,
            }),
            queue: Type.Integer({
              description:
                "Frames waiting for the candidate; beyond it shadow frames are dropped (counted), never live ones: the candidate runs only when the live model has nothing queued.",
              default: 16,
              minimum: 1,
            }),
            disagreement_images: Type.Integer({
              description:
                "Most frames kept where live and candidate disagree, each with both anomaly maps, for the comparison page; later disagreements are counted, not kept.",
              default: 200,
              minimum: 0,
            }),
          },
          {
            description:
              "Running a candidate beside the live model on the same frames (docs/candidates.md, Shadow).",
            default: {},
            additionalProperties: false,
          },
        ),
        gates: Type.Object(
          {
            recall_at_least_live: Type.Boolean({
              description:
                "Gate: the candidate catches at least as many of the camera's confirmed defects as the live model.",
              default: true,
            }),
            alarm_rate_at_most_live: Type.Boolean({
              description:
                "Gate: on the shadowed frames, the candidate alarms no more often than the live model.",
              default: true,
            }),
            min_shadow_frames: Type.Integer({
              description:
                "Gate: the candidate has judged at least this many live frames in shadow (0: no shadow needed).",
              default: 200,
              minimum: 0,
            }),
            max_false_alarms_on_normals: Type.Optional(
              Type.Integer({
                description:
                  "Gate: most of the camera's confirmed normals (its labelled false alarms) the candidate may flag. Unset: no such gate.",
                minimum: 0,
              }),
            ),
            enforce: Type.Boolean({
              description:
                "Refuse a promotion while a gate fails, unless the request says `force` (audited as forced). False: gates are shown, never enforced.",
              default: true,
            }),
          },
          {
            description:
              "Promotion gates, shown pass/fail on the comparison page and in the evidence report.",
            default: {},
            additionalProperties: false,
          },
        ),
      },
      {
        description:
          "Candidate models: retrain as a job, run the candidate in shadow, compare, promote and roll back (docs/candidates.md).",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    audit: Type.Object(
      {
        file: Type.Optional(
          Type.String({
            description:
              "The audit log: one JSON line per state change (thresholds, enables, collection, reloads, review labels) with who asked, through which interface, before and after (docs/audit.md). Default: `audit.jsonl` beside `mqtt.outbox.dir` (/var/lib/stpmd/audit.jsonl with the default outbox): with the daemon's other state, not inside `records.dir`, because the audit must be kept when the part record is off, and the record's retention and its repairs (a corrupt database moved aside) must never touch it. Put it on a real disk: each entry is fsynced before the change is acknowledged.",
            minLength: 1,
          }),
        ),
        max_bytes: Type.Integer({
          description:
            "The log is rotated when the next entry would take it past this size: `audit.jsonl` becomes `audit.jsonl.1`, and so on. An entry is a few hundred bytes, so the default 10 MiB holds some 40 000 changes per file.",
          default: 10485760,
          minimum: 4096,
        }),
        keep: Type.Integer({
          description:
            "Rotated files kept (`audit.jsonl.1` … `audit.jsonl.<keep>`); the oldest beyond them is deleted. The API and `stpmd audit export` read across all of them.",
          default: 5,
          minimum: 0,
          maximum: 99,
        }),
        file_mode: Type.String({
          description:
            "Permission bits (octal) of the audit files, which name the operators. Applied at creation regardless of the umask.",
          default: "0640",
          pattern: "^0?[0-7]{3}$",
          "x-pattern-message": 'must be an octal mode such as "0640"',
        }),
      },
      {
        description:
          "The audit log of every state change, appended before a change is acknowledged (a change asked for by a person whose entry cannot be written is refused), read over HTTP (`/api/audit`) and exported with `stpmd audit export`.",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    opcua: Type.Object(
      {
        enabled: Type.Boolean({
          description: "Serve the OPC UA interface to the line's PLC (docs/line-integration/opcua.md).",
          default: false,
        }),
        port: Type.Integer({
          description: "TCP port of the OPC UA server (4840 is the IANA port for OPC UA).",
          default: 4840,
          minimum: 1,
          maximum: 65535,
        }),
        bind: Type.String({
          description:
            'Address the server listens on: "0.0.0.0" every IPv4 interface, "::" every interface, or one address such as the line network\'s (e.g. "192.168.10.5") so that the office network cannot reach it.',
          default: "0.0.0.0",
          minLength: 1,
        }),
        hostname: Type.Optional(
          Type.String({
            description:
              "Host name the endpoint URLs and the server certificate name (default: this machine's fully qualified name). Set it when PLCs reach the box by another name or by IP address.",
            minLength: 1,
          }),
        ),
        security: Type.Object(
          {
            policies: Type.Array(Enum(["None", "Basic256Sha256"]), {
              description:
                "Security policies offered. `None` sends everything, user passwords included, as plain text: offer it only on an isolated line network, together with mode None.",
              default: ["Basic256Sha256"],
              minItems: 1,
              uniqueItems: true,
            }),
            modes: Type.Array(Enum(["None", "Sign", "SignAndEncrypt"]), {
              description:
                "Message security modes offered. Policy None goes with mode None only, and Basic256Sha256 with Sign and SignAndEncrypt, so each list needs a partner in the other.",
              default: ["SignAndEncrypt"],
              minItems: 1,
              uniqueItems: true,
            }),
            accept_unknown_certificates: Type.Boolean({
              description:
                "Trust every client certificate on first contact. Off: a new client's certificate lands in `<pki_dir>/rejected/` and is refused until it is moved to `<pki_dir>/trusted/certs/`. Turn on only for commissioning.",
              default: false,
            }),
          },
          { description: "Secure channels the server offers.", default: {}, additionalProperties: false },
        ),
        users: passwordUsers(
          "One OPC UA user.",
          "Users that may log in with user name and password. Every logged-in user may trigger, acknowledge and call the methods.",
          "opcua_plc",
        ),
        allow_anonymous: Type.Boolean({
          description:
            "Let clients in without a user (they may then trigger and call the methods too). Off unless the line network is isolated.",
          default: false,
        }),
        pki_dir: Type.String({
          description:
            "Certificate store: the server's own certificate and key (created on first start, self-signed), and trusted/ and rejected/ client certificates.",
          default: "/var/lib/stpmd/opcua-pki",
          minLength: 1,
        }),
        result_queue: Type.Integer({
          description:
            "Per camera, most triggers that may be outstanding: accepted but not yet acknowledged by the PLC (waiting for their frame, or their result waiting behind earlier ones). When it is reached, TriggerReady is false and a further Trigger is refused with BadResourceUnavailable (counted in TriggersRefused); results already owed are never dropped.",
          default: 16,
          minimum: 1,
          maximum: 1024,
        }),
        trigger_timeout_ms: Type.Integer({
          description:
            "A trigger whose frame has not been inspected this long after it was accepted is answered with an error result (Error true, ErrorCode 1) in its place in the queue.",
          default: 2000,
          minimum: 10,
          maximum: 600000,
        }),
        machine_vision: Type.Object(
          {
            enabled: Type.Boolean({
              description:
                "Also serve the OPC 40100 (Machine Vision) view: a VisionSystem with its state machine, recipe management over the recipes and result management with a ResultReadyEvent per inspected part (docs/line-integration/opcua.md). Off by default: loading the Machine Vision and DI nodesets adds to the server's start (measured there).",
              default: false,
            }),
          },
          { description: "The OPC 40100 Machine Vision view.", default: {}, additionalProperties: false },
        ),
      },
      {
        description:
          "OPC UA server for the line's PLC: a trigger/result handshake per camera, and methods to reload the model, set a threshold and enable a camera.",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    log: Type.Object(
      {
        level: Enum(["fatal", "error", "warn", "info", "debug", "trace"], {
          description: "Least severe level that is logged.",
          default: "info",
        }),
      },
      {
        description: "Logging (JSON lines on stderr, which journald collects).",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    health: Type.Object(
      {
        watchdog: Type.Boolean({
          description:
            "Ping the systemd watchdog while the pipeline makes progress (effective only when the unit sets WatchdogSec=).",
          default: true,
        }),
      },
      { description: "Liveness reporting.", default: {}, additionalProperties: false, ...reloads("restart") },
    ),
    http: Type.Object(
      {
        enabled: Type.Boolean({
          description:
            "Serve Prometheus metrics on `/metrics` and health on `/healthz` (the process serves) and `/readyz` (model loaded and frames flowing: 200, else 503 with the reason).",
          default: false,
        }),
        bind: Type.String({
          description:
            "Address to listen on. The default serves this host only; `0.0.0.0` (or `::`) lets a Prometheus on another machine scrape it. There is no authentication, and the metrics name cameras and model versions.",
          default: "127.0.0.1",
          minLength: 1,
        }),
        port: Type.Integer({
          description: "TCP port of the HTTP server.",
          default: 9464,
          minimum: 1,
          maximum: 65535,
        }),
        console: Type.Object(
          {
            enabled: Type.Boolean({
              description:
                "Serve the web console on `/` (each camera's live score, last frame and last defect with the anomaly heatmap; the node's state) with its JSON and event-stream API under `/api/`. Viewing needs no login, like the metrics; changing anything does.",
              default: true,
            }),
            users: passwordUsers(
              "One console operator.",
              "Operators who may change state from the console (`POST /api/command/<name>`: thresholds, enables, collection, recipes, reload; review labels): the console logs in with a cookie session (`POST /api/session`), scripts send HTTP Basic. Without users the console is read-only. Passwords travel in clear over plain HTTP: keep http.bind on loopback or put a TLS proxy in front.",
              "console_operator",
            ),
            max_clients: Type.Integer({
              description:
                "Most live event streams (`/api/events`, one per open console) served at once; further ones are answered 503.",
              default: 8,
              minimum: 1,
              maximum: 256,
            }),
            session_idle_min: Type.Integer({
              description:
                "Minutes a console login stays valid without being used (every request from the page renews it); the default is a 12-hour shift. Sessions live in the daemon's memory: a restart logs every operator out.",
              default: 720,
              minimum: 1,
              maximum: 10080,
            }),
          },
          { description: "The web console.", default: {}, additionalProperties: false },
        ),
      },
      {
        description:
          "Metrics, health and the web console over HTTP (plain node:http, no TLS: put a reverse proxy in front for that).",
        ...reloads("restart"),
        default: {},
        additionalProperties: false,
      },
    ),
    recipes: Type.Record(
      Type.String({ pattern: RECIPE_NAME_PATTERN }),
      Type.Record(Type.String({ pattern: "^[A-Za-z0-9_-]+$" }), recipeCameraSchema(), {
        description: "The recipe's overrides per camera id (every id must be one of `cameras`).",
        additionalProperties: false,
      }),
      {
        description:
          "Products the line switches between (docs/recipes.md): each recipe names, per camera, what differs from the camera's own settings (bundle, enabled, roi, ignore, threshold, score_aggregation). A PLC, SCADA, an MQTT/HTTP command or the console selects one at run time (`select_recipe`); every bundle it needs is loaded before the switch is acknowledged, and each camera switches between two frames. Recipe names: letters, digits, `_`, `-` and `.`.",
        default: {},
        additionalProperties: false,
        ...reloads("live"),
      },
    ),
    active_recipe: Type.Optional(
      Type.String({
        description:
          "The recipe in force at start (one of `recipes`). Default: none, each camera judges by its own settings. A recipe selected at run time holds over a reload until this key's value changes in the file.",
        pattern: RECIPE_NAME_PATTERN,
        ...reloads("live"),
      }),
    ),
  },
  {
    description:
      "One YAML or JSON file configures the daemon. This schema drives validation, the defaults the loader fills in, and the documentation. Relative paths (model bundle, directories, TLS and password files) are resolved against the config file's directory; camera sources are GStreamer descriptions and are passed through unchanged.",
    additionalProperties: false,
    title: "stpmd daemon configuration",
    $id: "urn:stpmd:config",
    $schema: "http://json-schema.org/draft-07/schema#",
  },
);

export type StpmdConfig = Static<typeof configSchema> & {
  /** `stpmd-<hostname>` unless set: the loader fills it in. */
  mqtt: { client_id: string };
  /** The host name unless set: the loader fills it in. */
  sparkplug: { edge_node_id: string };
  /** `records` beside `mqtt.outbox.dir` unless set: the loader fills it in. */
  records: { dir: string; labelled_dir: string };
  /** `audit.jsonl` beside `mqtt.outbox.dir` unless set: the loader fills it in. */
  audit: { file: string };
  /** `candidates` beside `mqtt.outbox.dir` unless set: the loader fills it in. */
  candidates: { dir: string };
};
export type ModelConfig = StpmdConfig["model"];
export type InferenceConfig = StpmdConfig["inference"];
export type ExecutionProviderConfig = InferenceConfig["providers"][number];
export type CameraConfig = StpmdConfig["cameras"][number];
export type RoiConfig = NonNullable<CameraConfig["roi"]>;
export type IgnoreConfig = NonNullable<CameraConfig["ignore"]>;
export type ThresholdRule = NonNullable<CameraConfig["threshold"]>;
export type MqttConfig = StpmdConfig["mqtt"];
export type MqttOutboxConfig = MqttConfig["outbox"];
export type MqttTlsConfig = NonNullable<MqttConfig["tls"]>;
export type MqttCommandsConfig = MqttConfig["commands"];
export type HttpConfig = StpmdConfig["http"];
export type SparkplugConfig = StpmdConfig["sparkplug"];
export type CollectionConfig = StpmdConfig["collection"];
export type OpcuaConfig = StpmdConfig["opcua"];
export type RecordsConfig = StpmdConfig["records"];
export type AuditConfig = StpmdConfig["audit"];
export type CandidatesConfig = StpmdConfig["candidates"];
export type OpcuaUserConfig = OpcuaConfig["users"][number];
export type ConsoleConfig = HttpConfig["console"];
export type LogLevel = StpmdConfig["log"]["level"];
export type RecipeConfig = StpmdConfig["recipes"][string];
export type RecipeCameraConfig = RecipeConfig[string];

/**
 * The schema as `config/stpmd.schema.json` holds it: plain JSON, and a key with a default is not listed as
 * required (the loader fills it in, so a file may leave it out).
 */
export function configSchemaJson(): Record<string, unknown> {
  const json = JSON.parse(JSON.stringify(configSchema)) as Record<string, unknown>;
  const strip = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) strip(item);
      return;
    }
    if (typeof node !== "object" || node === null) return;
    const object = node as { properties?: Record<string, { default?: unknown }>; required?: string[] };
    if (object.properties && object.required) {
      const properties = object.properties;
      object.required = object.required.filter((key) => properties[key]?.default === undefined);
      if (object.required.length === 0) delete object.required;
    }
    for (const value of Object.values(node)) strip(value);
  };
  strip(json);
  return json;
}
