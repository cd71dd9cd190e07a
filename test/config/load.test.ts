import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { parse as parseYaml } from "yaml";
import {
  editDistance,
  formatConfigSummary,
  loadConfig,
  loadConfigSchema,
  redactUrl,
  type StpmdConfig,
  suggestKeys,
} from "../../src/config/index.js";
import { isStpmdError } from "../../src/core/errors.js";
import { ortProviders } from "../../src/onnx/ort.js";

/** dist/test/config/load.test.js → the repository root. */
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const configDir = path.join(repoRoot, "config");
const sharedDir = process.env.STPMD_SHARED ?? path.resolve(repoRoot, "../shared");

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stpmd-config-test-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

let fileCounter = 0;
/** Writes `text` to a fresh file (in `subdir` of a fresh directory when given) and returns its path. */
function writeTemp(text: string, name = "stpmd.yaml", subdir = ""): string {
  const dir = path.join(tmpRoot, `case${fileCounter++}`, subdir);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** 1-based number of the first line of `text` containing `needle`, found independently of the loader. */
function lineOf(text: string, needle: string): number {
  const index = text.split("\n").findIndex((line) => line.includes(needle));
  assert.ok(index >= 0, `fixture has no line with ${needle}`);
  return index + 1;
}

/** Runs loadConfig expecting ERR_CONFIG_INVALID and returns the message's problem lines. */
function configProblems(
  file: string,
  env: Record<string, string> = {},
): { header: string; problems: string[] } {
  try {
    loadConfig(file, env);
  } catch (err) {
    assert.ok(isStpmdError(err), `expected StpmdError, got ${String(err)}`);
    assert.equal(err.code, "ERR_CONFIG_INVALID");
    const [header = "", ...problems] = err.message.split("\n");
    return { header, problems: problems.map((line) => line.trim()) };
  }
  assert.fail(`loadConfig(${file}) did not throw`);
}

const MINIMAL = [
  "model:",
  "  bundle: /opt/models/bottle",
  "cameras:",
  "  - id: line1",
  "    source: videotestsrc",
  "mqtt:",
  "  url: mqtt://broker:1883",
  "",
].join("\n");

describe("schema", () => {
  test("documents every property and rejects unknown keys at every level", () => {
    const undocumented: string[] = [];
    const open: string[] = [];
    const walk = (node: Record<string, unknown>, at: string) => {
      const properties = node.properties as Record<string, Record<string, unknown>> | undefined;
      if (properties !== undefined && node.additionalProperties !== false && node.oneOf === undefined)
        open.push(at);
      for (const [key, child] of Object.entries(properties ?? {})) {
        if (typeof child.description !== "string" || child.description === "")
          undocumented.push(`${at}.${key}`);
        walk(child, `${at}.${key}`);
      }
      if (node.items !== undefined) walk(node.items as Record<string, unknown>, `${at}[]`);
      (node.oneOf as Record<string, unknown>[] | undefined)?.forEach((branch, i) => {
        if (branch.additionalProperties !== false) open.push(`${at}.oneOf[${i}]`);
        walk(branch, `${at}.oneOf[${i}]`);
      });
    };
    walk(loadConfigSchema() as Record<string, unknown>, "(root)");
    assert.deepEqual(undocumented, []);
    assert.deepEqual(open, []);
  });

  test("example.yaml, replay-bottle.yaml and recipes.yaml validate against the schema as written", () => {
    const ajv = new Ajv({ allErrors: true, discriminator: true, strict: false });
    const validate = ajv.compile(loadConfigSchema());
    for (const name of ["example.yaml", "replay-bottle.yaml", "recipes.yaml"]) {
      const data: unknown = parseYaml(fs.readFileSync(path.join(configDir, name), "utf8"));
      assert.ok(validate(data), `${name}: ${ajv.errorsText(validate.errors)}`);
    }
  });
});

describe("loadConfig defaults", () => {
  test("a minimal file gets every documented default", () => {
    const cfg = loadConfig(writeTemp(MINIMAL), {});
    const expected: StpmdConfig = {
      model: { bundle: "/opt/models/bottle", watch: true, watch_debounce_ms: 2000 },
      inference: {
        providers: [{ name: "cpu" }],
        intra_op_threads: 0,
        max_batch: 8,
        max_wait_ms: 20,
        queue_size: 32,
      },
      cameras: [
        {
          id: "line1",
          source: "videotestsrc",
          trigger: "free_run",
          stall_timeout_s: 10,
          restart_backoff: { initial_ms: 500, max_ms: 30000, factor: 2 },
          enabled: true,
        },
      ],
      mqtt: {
        url: "mqtt://broker:1883",
        client_id: `stpmd-${os.hostname()}`,
        prefix: "stpmd",
        result_qos: 0,
        event_qos: 1,
        snapshot: "topic",
        snapshot_quality: 80,
        reconnect_period_ms: 2000,
        protocol_version: 5,
        status_interval_s: 10,
        commands: { enabled: false },
        outbox: {
          dir: "/var/lib/stpmd/outbox",
          max_messages: 10000,
          max_bytes: 512 * 1024 * 1024,
          file_mode: "0640",
          dir_mode: "0750",
        },
      },
      sparkplug: {
        enabled: false,
        edge_node_id: os.hostname(),
        bdseq_file: "/var/lib/stpmd/sparkplug-bdseq",
        report_interval_ms: 1000,
        reconnect_period_ms: 2000,
        history: {
          dir: "/var/lib/stpmd/sparkplug-history",
          max_messages: 10000,
          max_bytes: 64 * 1024 * 1024,
          file_mode: "0640",
          dir_mode: "0750",
        },
      },
      collection: {
        enabled: false,
        dir: "/var/lib/stpmd/frames",
        max_long_side: 2048,
        score_quantile: 0.5,
        min_interval_s: 60,
        max_frames_per_camera: 1000,
        max_bytes: 2 * 1024 ** 3,
        file_mode: "0640",
        dir_mode: "0750",
      },
      records: {
        enabled: true,
        dir: "/var/lib/stpmd/records",
        labelled_dir: "/var/lib/stpmd/labelled",
        images: { defects: true, native: true, native_mb: 128, png_compression: 6, normal_sample: 1000 },
        retention: { max_age_days: 30, max_rows: 20000000, max_bytes: 8589934592 },
        file_mode: "0640",
        dir_mode: "0750",
      },
      audit: { file: "/var/lib/stpmd/audit.jsonl", max_bytes: 10485760, keep: 5, file_mode: "0640" },
      candidates: {
        dir: "/var/lib/stpmd/candidates",
        retrain: { epochs: 50, time_budget_min: 120, threads: 1, nice: 19, min_frames: 20 },
        shadow: { share: 0.25, max_frames: 5000, max_hours: 24, queue: 16, disagreement_images: 200 },
        gates: {
          recall_at_least_live: true,
          alarm_rate_at_most_live: true,
          min_shadow_frames: 200,
          enforce: true,
        },
      },
      opcua: {
        enabled: false,
        port: 4840,
        bind: "0.0.0.0",
        security: {
          policies: ["Basic256Sha256"],
          modes: ["SignAndEncrypt"],
          accept_unknown_certificates: false,
        },
        users: [],
        allow_anonymous: false,
        pki_dir: "/var/lib/stpmd/opcua-pki",
        result_queue: 16,
        trigger_timeout_ms: 2000,
        machine_vision: { enabled: false },
      },
      log: { level: "info" },
      health: { watchdog: true },
      http: {
        enabled: false,
        bind: "127.0.0.1",
        port: 9464,
        console: { enabled: true, users: [], max_clients: 8, session_idle_min: 720 },
      },
      recipes: {},
    };
    assert.deepEqual(cfg, expected);
  });

  test("provider defaults are filled per provider kind", () => {
    const text = MINIMAL.replace(
      "cameras:",
      "inference:\n  providers: [{name: tensorrt}, {name: cuda}, {name: cpu}]\ncameras:",
    );
    const cfg = loadConfig(writeTemp(text), {});
    assert.deepEqual(cfg.inference.providers, [
      { name: "tensorrt", device_id: 0 },
      { name: "cuda", device_id: 0 },
      { name: "cpu" },
    ]);
  });

  test("TensorRT keys that never reached ONNX Runtime are refused with the reason, not as a typo", () => {
    const text = MINIMAL.replace(
      "cameras:",
      "inference:\n  providers: [{name: tensorrt, fp16: true, engine_cache_dir: /trt}]\ncameras:",
    );
    const message = configProblems(writeTemp(text)).problems.join("\n");
    assert.match(
      message,
      /inference\.providers\[0\] \(name "tensorrt"\)\.fp16: was removed: onnxruntime-node cannot switch TensorRT to fp16 \(it passes only device_id\)/,
    );
    assert.match(
      message,
      /\.engine_cache_dir: was removed: onnxruntime-node cannot give TensorRT an engine cache/,
    );
  });

  test("the providers reach ONNX Runtime as its binding takes them: device_id as deviceId", () => {
    const text = MINIMAL.replace(
      "cameras:",
      "inference:\n  providers: [{name: tensorrt, device_id: 1}, {name: cuda, device_id: 2}, {name: cpu}]\ncameras:",
    );
    const cfg = loadConfig(writeTemp(text), {});
    assert.deepEqual(ortProviders(cfg.inference.providers), [
      { name: "tensorrt", deviceId: 1 },
      { name: "cuda", deviceId: 2 },
      "cpu",
    ]);
  });

  test("webgpu reaches ONNX Runtime as the binding takes it: the bare name, no device", () => {
    const text = MINIMAL.replace(
      "cameras:",
      "inference:\n  providers: [{name: webgpu}, {name: cpu}]\ncameras:",
    );
    const cfg = loadConfig(writeTemp(text), {});
    assert.deepEqual(cfg.inference.providers, [{ name: "webgpu" }, { name: "cpu" }]);
    assert.deepEqual(ortProviders(cfg.inference.providers), ["webgpu", "cpu"]);
  });

  test("JSON files load too", () => {
    const json = JSON.stringify(
      { model: { bundle: "/m" }, cameras: [{ id: "c", source: "videotestsrc" }], mqtt: { url: "ws://b" } },
      null,
      "\t",
    );
    const cfg = loadConfig(writeTemp(json, "stpmd.json"), {});
    assert.equal(cfg.mqtt.url, "ws://b");
    assert.equal(cfg.cameras[0]!.stall_timeout_s, 10);
  });
});

describe("shipped configs", () => {
  test("example.yaml loads with its systemd credential and CA file provided", () => {
    const credentials = fs.mkdtempSync(path.join(tmpRoot, "creds-"));
    fs.writeFileSync(path.join(credentials, "mqtt_password"), "from-credential\n");
    const ca = writeTemp("-----BEGIN CERTIFICATE-----\n", "ca.pem");
    const cfg = loadConfig(path.join(configDir, "example.yaml"), {
      CREDENTIALS_DIRECTORY: credentials,
      STPMD_CONFIG__MQTT__TLS__CA: ca,
    });
    assert.deepEqual(
      cfg.inference.providers.map((p) => p.name),
      ["tensorrt", "cuda", "cpu"],
    );
    assert.deepEqual(
      cfg.cameras.map((c) => [c.id, c.trigger, c.stall_timeout_s]),
      [
        ["line1-top", "free_run", 10],
        ["line1-side", "hardware", 0],
      ],
    );
    assert.match(cfg.cameras[0]!.source, /^nvarguscamerasrc /);
    assert.match(cfg.cameras[1]!.source, /^rtspsrc location=rtsp:\/\//);
    assert.equal(cfg.mqtt.password, "from-credential");
    assert.equal(cfg.mqtt.password_file, path.join(credentials, "mqtt_password"));
    assert.equal(cfg.mqtt.tls?.ca, ca);
    assert.equal(cfg.mqtt.url, "mqtts://broker.plant.local:8883");
  });

  test("replay-bottle.yaml replays the bottle images to a local broker", (t) => {
    const cfg = loadConfig(path.join(configDir, "replay-bottle.yaml"), {});
    assert.equal(cfg.mqtt.url, "mqtt://127.0.0.1:1883");
    assert.equal(cfg.model.bundle, path.join(repoRoot, "models/bottle"));
    const source = cfg.cameras[0]!.source;
    assert.match(
      source,
      /^multifilesrc location=\S+%03d\.png index=0 loop=true .*! pngdec ! identity sync=true$/,
    );
    const locations = cfg.cameras.map((camera) => /location=(\S+)/.exec(camera.source)![1]!);
    assert.deepEqual(locations, [
      "../shared/data/mvtec_ad/bottle/test/broken_large/%03d.png",
      "../shared/data/mvtec_ad/bottle/test/good/%03d.png",
    ]);
    assert.deepEqual([cfg.http.enabled, cfg.http.bind, cfg.http.console.enabled], [true, "127.0.0.1", true]);
    if (!fs.existsSync(sharedDir)) {
      t.skip(`shared data not found at ${sharedDir}`);
      return;
    }
    // GStreamer opens the location relative to the daemon's cwd, which the file documents as the repository root.
    for (const location of locations) {
      const firstFrame = path.resolve(repoRoot, location.replace("%03d", "000"));
      assert.ok(fs.existsSync(firstFrame), `${firstFrame} missing`);
    }
  });
});

describe("loadConfig error messages", () => {
  test("unknown keys get a did-you-mean with the YAML line", () => {
    const text = `${MINIMAL}  qos: 1\n  snapshot_quailty: 70\ncolection: {}\n`;
    const { header, problems } = configProblems(writeTemp(text));
    assert.match(header, /has 3 problems:$/);
    assert.deepEqual(problems, [
      `mqtt.qos: unknown key (did you mean result_qos or event_qos?) (line ${lineOf(text, "qos: 1")})`,
      `mqtt.snapshot_quailty: unknown key (did you mean snapshot_quality?) (line ${lineOf(text, "quailty")})`,
      `colection: unknown key (did you mean collection?) (line ${lineOf(text, "colection")})`,
    ]);
  });

  test("camelCase keys are pointed at their snake_case spelling; hopeless ones list what is allowed", () => {
    const text = MINIMAL.replace("  bundle:", "  watchDebounceMs: 5\n  zzz: 1\n  bundle:");
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      "model.watchDebounceMs: unknown key (did you mean watch_debounce_ms?) (line 2)",
      "model.zzz: unknown key (allowed: bundle, watch, watch_debounce_ms) (line 3)",
    ]);
  });

  test("wrong types, with a hint for YAML 1.1 booleans", () => {
    const text = MINIMAL.replace("cameras:", "inference:\n  max_batch: '8'\ncameras:").replace(
      "    source: videotestsrc",
      "    source: videotestsrc\n    enabled: yes",
    );
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `inference.max_batch: must be an integer (got "8") (line ${lineOf(text, "max_batch")})`,
      `cameras[0] (id "line1").enabled: must be a boolean (got "yes"); write true or false (line ${lineOf(text, "enabled")})`,
    ]);
  });

  test("out-of-range values name the camera by id and index", () => {
    const text = `${MINIMAL.replace(
      "mqtt:",
      "  - id: line2\n    source: videotestsrc\n    stall_timeout_s: -3\n    restart_backoff: {factor: 0.5}\nmqtt:",
    )}  snapshot_quality: 101\n  result_qos: 3\n`;
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `cameras[1] (id "line2").stall_timeout_s: must be >= 0 (got -3) (line ${lineOf(text, "stall_timeout_s")})`,
      `cameras[1] (id "line2").restart_backoff.factor: must be >= 1 (got 0.5) (line ${lineOf(text, "factor")})`,
      `mqtt.snapshot_quality: must be <= 100 (got 101) (line ${lineOf(text, "snapshot_quality")})`,
      `mqtt.result_qos: must be one of 0, 1, 2 (got 3) (line ${lineOf(text, "result_qos")})`,
    ]);
  });

  test("unions, duplicates, tuples: one line saying what to write, never the schema's own wording", () => {
    const text = MINIMAL.replace(
      "    source: videotestsrc\n",
      [
        "    source: videotestsrc",
        "    threshold: {sigma: 500}",
        "    ignore:",
        "      polygons: [[[1, 2, 3], [4, 5], [6, 7]]]",
        "  - id: line2",
        "    source: videotestsrc",
        "    threshold: {sigma: 3, value: 0.2}",
        "opcua:",
        "  security:",
        "    policies: [None, None]",
        "",
      ].join("\n"),
    );
    const { problems } = configProblems(writeTemp(text));
    const rules = "{value: x > 0}, {sigma: 0 <= k <= 100} or {false_alarm_rate: 0 < p < 1}";
    assert.deepEqual(problems, [
      `cameras[0] (id "line1").threshold: must be ${rules} (got {"sigma":500}) (line ${lineOf(text, "sigma: 500")})`,
      `cameras[0] (id "line1").ignore.polygons[0][0]: must list at most 2 items (got 3) (line ${lineOf(text, "polygons")})`,
      `cameras[1] (id "line2").threshold: must be ${rules} (got {"sigma":3,"value":0.2}) (line ${lineOf(text, "sigma: 3")})`,
      `opcua.security.policies: lists "None" twice; name each value once (line ${lineOf(text, "policies")})`,
    ]);
    for (const problem of problems)
      assert.doesNotMatch(problem, /must NOT|must match|anyOf|Image-score threshold/);
  });

  test("duplicate and malformed camera ids", () => {
    const text = MINIMAL.replace(
      "mqtt:",
      "  - id: line 2\n    source: videotestsrc\n  - id: line1\n    source: videotestsrc\nmqtt:",
    );
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `cameras[1].id: must contain only letters, digits, "_" and "-" (it is an MQTT topic level) (got "line 2") (line ${lineOf(text, "line 2")})`,
      `cameras[2].id: duplicate camera id "line1" (also cameras[0]) (line ${lineOf(text, "- id: line1") + 4})`,
    ]);
  });

  test("a camera called `command` is refused only while MQTT commands are on (their topic level)", () => {
    const named = MINIMAL.replace("id: line1", "id: command");
    assert.equal(loadConfig(writeTemp(named), {}).cameras[0]!.id, "command");
    const text = `${named}  commands:\n    enabled: true\n`;
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `cameras[0].id: "command" is the topic level of MQTT commands (mqtt.commands.enabled); rename the camera (line ${lineOf(text, "id: command")})`,
    ]);
  });

  test("missing required keys and an empty camera list", () => {
    const text = "model: {}\ncameras: []\nmqtt:\n  prefix: a/\n";
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      "model.bundle: required key is missing (line 1)",
      "cameras: must list at least 1 item (got an array) (line 2)",
      "mqtt.url: required key is missing (line 3)",
      'mqtt.prefix: must not contain "+" or "#", start or end with "/", or start with "$" (got "a/") (line 4)',
    ]);
  });

  test("cross-field rules: credentials in pairs, cert with key, queue fits a batch, backoff cap", () => {
    const text = MINIMAL.replace("cameras:", "inference:\n  max_batch: 64\ncameras:")
      .replace(
        "    source: videotestsrc",
        "    source: videotestsrc\n    restart_backoff: {initial_ms: 5000, max_ms: 1000}",
      )
      .replace(
        "mqtt://broker:1883",
        "mqtts://broker:8883\n  username: inspector\n  tls:\n    cert: /etc/ssl/client.pem",
      );
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `inference.queue_size: must be >= inference.max_batch (64) so a full batch fits (got 32, the default) (line ${lineOf(text, "inference:")})`,
      `cameras[0] (id "line1").restart_backoff.max_ms: must be >= restart_backoff.initial_ms (5000) (got 1000) (line ${lineOf(text, "restart_backoff")})`,
      `mqtt.username: set without mqtt.password or mqtt.password_file (line ${lineOf(text, "username")})`,
      `mqtt.tls.cert: set without mqtt.tls.key (a client certificate needs its key) (line ${lineOf(text, "cert:")})`,
      `mqtt.tls.cert: cannot read /etc/ssl/client.pem: no such file (ENOENT) (line ${lineOf(text, "cert:")})`,
    ]);
  });

  test("sparkplug: ids must be topic levels, group_id is required when enabled, credentials in pairs", () => {
    const text = `${MINIMAL}sparkplug:\n  enabled: true\n  edge_node_id: a/b\n  primary_host_id: "scada+1"\n  username: sp\n`;
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `sparkplug.group_id: is required when sparkplug.enabled is true (line ${lineOf(text, "sparkplug:")})`,
      `sparkplug.edge_node_id: must not contain "/", "+", "#" or whitespace (it is a Sparkplug topic level) (got "a/b") (line ${lineOf(text, "edge_node_id")})`,
      `sparkplug.primary_host_id: must not contain "/", "+", "#" or whitespace (it is a Sparkplug topic level) (got "scada+1") (line ${lineOf(text, "primary_host_id")})`,
      `sparkplug.username: set without sparkplug.password or sparkplug.password_file (line ${lineOf(text, "username: sp")})`,
    ]);
  });

  test("sparkplug: paths resolve against the config file, password_file is read", () => {
    const file = writeTemp(
      `${MINIMAL}sparkplug:\n  enabled: true\n  group_id: line-7\n  bdseq_file: state/bdseq\n  username: sp\n  password_file: sp-pw\n`,
    );
    fs.writeFileSync(path.join(path.dirname(file), "sp-pw"), "sp-secret\n");
    const cfg = loadConfig(file, {});
    assert.equal(cfg.sparkplug.bdseq_file, path.join(path.dirname(file), "state/bdseq"));
    assert.equal(cfg.sparkplug.password, "sp-secret");
    assert.equal(cfg.sparkplug.edge_node_id, os.hostname());
    const summary = formatConfigSummary(cfg);
    assert.match(
      summary,
      /^sparkplug: {2}spBv1\.0\/line-7\/\.\.\.\/.+ on mqtt's broker, user "sp", no primary host/m,
    );
    assert.ok(!summary.includes("sp-secret"));
  });

  test("a password without user, and TLS settings next to a plain URL", () => {
    const text = `${MINIMAL}  password: hunter2\n  tls:\n    reject_unauthorized: false\n`;
    const { problems } = configProblems(writeTemp(text));
    assert.deepEqual(problems, [
      `mqtt.password: set without mqtt.username (line ${lineOf(text, "password")})`,
      `mqtt.tls: is set but mqtt.url "mqtt://broker:1883" is not encrypted; use mqtts:// or wss:// (line ${lineOf(text, "tls:")})`,
    ]);
  });

  test("passwords are never echoed, not even in a URL", () => {
    const text =
      MINIMAL.replace("mqtt://broker:1883", "http://inspector:hunter2@broker") +
      "  username: u\n  password: 12345\n";
    const { problems } = configProblems(writeTemp(text));
    assert.ok(!problems.join("\n").includes("hunter2"));
    assert.ok(!problems.join("\n").includes("12345"));
    assert.ok(
      problems.includes(`mqtt.password: must be a string (got a number) (line ${lineOf(text, "password")})`),
    );
    assert.equal(redactUrl("mqtts://u:p@host:8883/x"), "mqtts://u:***@host:8883/x");
  });

  test("YAML syntax errors give line and column", () => {
    const text = "model:\n  bundle: /m\n  watch: [true\ncameras: []\n";
    const { header, problems } = configProblems(writeTemp(text));
    assert.match(header, /^config file .*stpmd\.yaml has \d+ problems?:$/);
    assert.match(problems[0]!, /^YAML syntax error at line [34], column \d+: /);
    const duplicate = configProblems(writeTemp("model:\n  bundle: /a\n  bundle: /b\n"));
    assert.match(duplicate.problems[0]!, /^YAML syntax error at line 3, column 3: Map keys must be unique/);
  });

  test("missing, unreadable and non-mapping files", () => {
    const missing = path.join(tmpRoot, "nope", "stpmd.yaml");
    assert.throws(() => loadConfig(missing, {}), {
      name: "StpmdError",
      code: "ERR_CONFIG_INVALID",
      message: `cannot read config file ${missing}: no such file (ENOENT)`,
    });
    const dir = path.dirname(writeTemp(""));
    assert.throws(() => loadConfig(dir, {}), {
      message: `cannot read config file ${dir}: it is a directory`,
    });
    assert.deepEqual(configProblems(writeTemp("- a\n")).problems, [
      'the file must hold a mapping of keys such as "model:" (got an array)',
    ]);
    assert.deepEqual(configProblems(writeTemp("")).problems, [
      "model: required key is missing",
      "cameras: required key is missing",
      "mqtt: required key is missing",
    ]);
  });
});

describe("environment overrides", () => {
  test("named and generic overrides, with values read as JSON where they parse", () => {
    const cfg = loadConfig(writeTemp(MINIMAL), {
      STPMD_MQTT_URL: "mqtts://other:8883",
      STPMD_MQTT_USERNAME: "1234",
      STPMD_MQTT_PASSWORD: "true",
      STPMD_CONFIG__MQTT__PREFIX: "line7",
      STPMD_CONFIG__MQTT__CLIENT_ID: "4711",
      STPMD_CONFIG__INFERENCE__MAX_BATCH: "4",
      STPMD_CONFIG__MODEL__WATCH: "false",
      STPMD_CONFIG__COLLECTION__SCORE_QUANTILE: "0.25",
      STPMD_CONFIG__CAMERAS__0__STALL_TIMEOUT_S: "2.5",
      STPMD_CONFIG__INFERENCE__PROVIDERS: '[{"name":"cuda","device_id":1},{"name":"cpu"}]',
      STPMD_CONFIG__LOG__LEVEL: "",
      UNRELATED: "x",
    });
    assert.equal(cfg.mqtt.url, "mqtts://other:8883");
    // Named secrets and string-typed keys stay text even when they look like JSON.
    assert.equal(cfg.mqtt.username, "1234");
    assert.equal(cfg.mqtt.password, "true");
    assert.equal(cfg.mqtt.client_id, "4711");
    assert.equal(cfg.mqtt.prefix, "line7");
    assert.equal(cfg.inference.max_batch, 4);
    assert.equal(cfg.model.watch, false);
    assert.equal(cfg.collection.score_quantile, 0.25);
    assert.equal(cfg.cameras[0]!.stall_timeout_s, 2.5);
    assert.deepEqual(cfg.inference.providers, [{ name: "cuda", device_id: 1 }, { name: "cpu" }]);
    assert.equal(cfg.log.level, "info", "an empty variable counts as unset");
  });

  test("overridden values are validated and the message names the variable", () => {
    const { problems } = configProblems(writeTemp(MINIMAL), {
      STPMD_CONFIG__INFERENCE__MAX_BATCH: "100",
      STPMD_CONFIG__MQTT__QOS: "1",
      STPMD_CONFIG__MODEL__WATCH: "maybe",
      STPMD_CONFIG__MQTT__URL__HOST: "x",
      STPMD_CONFIG__CAMERAS__5__ENABLED: "false",
    });
    assert.deepEqual(problems.sort(), [
      "environment variable STPMD_CONFIG__CAMERAS__5__ENABLED: cannot set it, cameras has no item [5]",
      "environment variable STPMD_CONFIG__MQTT__URL__HOST: cannot set it, mqtt.url is not an object or a list",
      "inference.max_batch: must be <= 64 (got 100) (from environment variable STPMD_CONFIG__INFERENCE__MAX_BATCH)",
      'model.watch: must be a boolean (got "maybe") (from environment variable STPMD_CONFIG__MODEL__WATCH)',
      "mqtt.qos: unknown key (did you mean result_qos or event_qos?) (from environment variable STPMD_CONFIG__MQTT__QOS)",
    ]);
  });

  test("an environment password replaces a password_file from the file", () => {
    const text = `${MINIMAL}  username: u\n  password_file: /nonexistent/secret\n`;
    const cfg = loadConfig(writeTemp(text), { STPMD_MQTT_PASSWORD: "env-secret" });
    assert.equal(cfg.mqtt.password, "env-secret");
    assert.equal(cfg.mqtt.password_file, undefined);
  });
});

describe("paths and secrets", () => {
  test("relative paths resolve against the config file's directory, sources stay untouched", () => {
    const text = MINIMAL.replace("/opt/models/bottle", "./models/bottle")
      .replace("source: videotestsrc", "source: multifilesrc location=frames/%03d.png ! pngdec")
      .replace("cameras:", "inference:\n  providers: [{name: tensorrt}]\ncameras:")
      .replace(
        "mqtt://broker:1883",
        "mqtts://broker:8883\n  tls: {ca: ../certs/ca.pem}\n  outbox: {dir: ../outbox}",
      )
      .concat("collection: {dir: /abs/frames}\n");
    const file = writeTemp(text, "stpmd.yaml", "etc");
    const base = path.dirname(file);
    fs.mkdirSync(path.join(base, "../certs"));
    fs.writeFileSync(path.join(base, "../certs/ca.pem"), "pem");
    // A different cwd must not matter.
    const cfg = loadConfig(path.relative(process.cwd(), file), {});
    assert.equal(cfg.model.bundle, path.join(base, "models/bottle"));
    assert.equal(cfg.mqtt.tls?.ca, path.join(path.dirname(base), "certs/ca.pem"));
    assert.equal(cfg.mqtt.tls?.reject_unauthorized, true);
    assert.equal(cfg.mqtt.outbox.dir, path.join(path.dirname(base), "outbox"));
    assert.equal(cfg.collection.dir, "/abs/frames");
    assert.equal(cfg.cameras[0]!.source, "multifilesrc location=frames/%03d.png ! pngdec");
  });

  test("password_file is read (without the trailing newline), relative or via a systemd credential", () => {
    const file = writeTemp(`${MINIMAL}  username: u\n  password_file: secrets/pw\n`);
    fs.mkdirSync(path.join(path.dirname(file), "secrets"));
    fs.writeFileSync(path.join(path.dirname(file), "secrets/pw"), "p@ss word\n\n");
    assert.equal(loadConfig(file, {}).mqtt.password, "p@ss word");

    const credentials = fs.mkdtempSync(path.join(tmpRoot, "creds-"));
    fs.writeFileSync(path.join(credentials, "mqtt_password"), "cred");
    const viaSystemd = writeTemp(
      `${MINIMAL}  username: u\n  password_file: \${CREDENTIALS_DIRECTORY}/mqtt_password\n`,
    );
    const cfg = loadConfig(viaSystemd, { CREDENTIALS_DIRECTORY: credentials });
    assert.equal(cfg.mqtt.password, "cred");
    assert.equal(cfg.mqtt.password_file, path.join(credentials, "mqtt_password"));
    assert.ok(!formatConfigSummary(cfg).includes("cred\n"));
  });

  test("password_file problems: unset variable, missing file, empty file, both password and file", () => {
    const unset = `${MINIMAL}  username: u\n  password_file: \${CREDENTIALS_DIRECTORY}/pw\n`;
    assert.deepEqual(configProblems(writeTemp(unset)).problems, [
      `mqtt.password_file: uses \${CREDENTIALS_DIRECTORY} but that environment variable is not set (systemd sets it for units with LoadCredential=) (line ${lineOf(unset, "password_file")})`,
    ]);
    const missingFile = writeTemp(`${MINIMAL}  username: u\n  password_file: pw\n`);
    assert.deepEqual(configProblems(missingFile).problems, [
      `mqtt.password_file: cannot read ${path.join(path.dirname(missingFile), "pw")}: no such file (ENOENT) (line 9)`,
    ]);
    const emptyFile = writeTemp(`${MINIMAL}  username: u\n  password_file: pw\n`);
    fs.writeFileSync(path.join(path.dirname(emptyFile), "pw"), "\n");
    assert.match(configProblems(emptyFile).problems[0]!, /^mqtt\.password_file: .*pw is empty \(line 9\)$/);
    const both = writeTemp(`${MINIMAL}  username: u\n  password: a\n  password_file: pw\n`);
    assert.ok(
      configProblems(both).problems.includes(
        "mqtt.password_file: set together with mqtt.password; use one of them (line 10)",
      ),
    );
  });

  test("mqtt and sparkplug logins follow one rule, in the same words", () => {
    // each section alone, so the expected lines are the rule's own; the wording must not drift between them
    const sectionText = (section: "mqtt" | "sparkplug", keys: string): string =>
      section === "mqtt"
        ? `${MINIMAL}${keys.replace(/^/gm, "  ")}\n`
        : `${MINIMAL}sparkplug:\n  enabled: true\n  group_id: g\n${keys.replace(/^/gm, "  ")}\n`;
    for (const section of ["mqtt", "sparkplug"] as const) {
      const cases: [string, string, string][] = [
        [
          "username: u",
          "username",
          `${section}.username: set without ${section}.password or ${section}.password_file`,
        ],
        ["password: p", "password", `${section}.password: set without ${section}.username`],
        ["password_file: pw", "password_file", `${section}.password_file: set without ${section}.username`],
        [
          "username: u\npassword: p\npassword_file: pw",
          "password_file",
          `${section}.password_file: set together with ${section}.password; use one of them`,
        ],
      ];
      for (const [keys, lineKey, expected] of cases) {
        const text = sectionText(section, keys);
        const file = writeTemp(text);
        fs.writeFileSync(path.join(path.dirname(file), "pw"), "secret\n");
        const line = text.split("\n").findLastIndex((l) => l.trimStart().startsWith(`${lineKey}:`)) + 1;
        assert.deepEqual(
          configProblems(file).problems,
          [`${expected} (line ${line})`],
          `${section}: ${keys}`,
        );
      }
      const empty = writeTemp(sectionText(section, "username: u\npassword_file: pw"));
      fs.writeFileSync(path.join(path.dirname(empty), "pw"), "\n");
      assert.match(
        configProblems(empty).problems[0]!,
        new RegExp(`^${section}\\.password_file: \\S+pw is empty \\(line \\d+\\)$`),
      );
    }
  });

  test("unreadable TLS files are reported under their own key", () => {
    const text = MINIMAL.replace(
      "mqtt://broker:1883",
      "mqtts://broker:8883\n  tls:\n    ca: ca.pem\n    cert: c.pem\n    key: k.pem",
    );
    const file = writeTemp(text);
    const dir = path.dirname(file);
    fs.writeFileSync(path.join(dir, "c.pem"), "cert");
    fs.mkdirSync(path.join(dir, "k.pem"));
    assert.deepEqual(configProblems(file).problems, [
      `mqtt.tls.ca: cannot read ${path.join(dir, "ca.pem")}: no such file (ENOENT) (line ${lineOf(text, "ca:")})`,
      `mqtt.tls.key: ${path.join(dir, "k.pem")} is a directory, not a file (line ${lineOf(text, "key:")})`,
    ]);
  });
});

describe("helpers", () => {
  test("editDistance counts insertions, deletions, substitutions and transpositions", () => {
    assert.equal(editDistance("kitten", "sitting"), 3);
    assert.equal(editDistance("", "abc"), 3);
    assert.equal(editDistance("prefix", "prefix"), 0);
    assert.equal(editDistance("perfix", "prefix"), 1);
  });

  test("suggestKeys prefers typos, then the snake_case spelling, then containment", () => {
    const mqttKeys = ["url", "client_id", "username", "result_qos", "event_qos", "snapshot"];
    assert.deepEqual(suggestKeys("usrname", mqttKeys), ["username"]);
    assert.deepEqual(suggestKeys("clientId", mqttKeys), ["client_id"]);
    assert.deepEqual(suggestKeys("qos", mqttKeys), ["result_qos", "event_qos"]);
    assert.deepEqual(suggestKeys("xyzzy", mqttKeys), []);
  });

  test("formatConfigSummary names cameras, model, broker and providers but never the password", () => {
    const text = MINIMAL.replace(
      "mqtt://broker:1883",
      "mqtt://inspector:hunter2@broker:1883\n  username: inspector\n  password: hunter2",
    ).replace("cameras:", "inference:\n  providers: [{name: tensorrt, device_id: 1}, {name: cpu}]\ncameras:");
    const summary = formatConfigSummary(loadConfig(writeTemp(text), {}));
    assert.ok(!summary.includes("hunter2"), summary);
    assert.match(summary, /^model: +\/opt\/models\/bottle /m);
    assert.match(summary, /^providers: +tensorrt \(device 1\) -> cpu$/m);
    assert.match(summary, /^cameras: +1 \(1 enabled\)$/m);
    assert.match(summary, /^ +line1 +free_run, stall 10 s: videotestsrc$/m);
    assert.match(
      summary,
      /^broker: +mqtt:\/\/inspector:\*\*\*@broker:1883 as "stpmd-.+" over MQTT 5, user "inspector" \(password set\)$/m,
    );
  });
});
