import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { connectAsync, type IClientOptions, type MqttClient } from "mqtt";
import type { Level } from "pino";
import { createLogger } from "../../../src/core/log.js";
import { MAX_PENDING_COMMANDS } from "../../../src/publish/commands.js";
import type { NodeSnapshot } from "../../../src/publish/control.js";
import { MqttCommands } from "../../../src/publish/mqtt/commands.js";
import { Publisher } from "../../../src/publish/mqtt/publisher.js";
import { type CommandResponsePayload, Topics } from "../../../src/publish/topics.js";
import { mqttConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { capturingLogger } from "../../helpers/logs.js";
import { MosquittoBroker } from "../../helpers/mosquitto.js";
import { waitFor } from "../../helpers/wait.js";

const logger = createLogger((process.env.STPMD_TEST_LOG_LEVEL as Level | undefined) ?? "silent");
const WAIT_MS = 5000;

interface Response {
  topic: string;
  payload: CommandResponsePayload;
}

/** A real mqtt.js client that sends command requests and collects every response. */
class Operator {
  readonly responses: Response[] = [];
  private constructor(
    readonly client: MqttClient,
    readonly prefix: string,
  ) {
    client.on("message", (topic, payload) => {
      if (!topic.endsWith("/response")) return;
      this.responses.push({ topic, payload: JSON.parse(payload.toString("utf8")) as CommandResponsePayload });
    });
  }

  static async connect(url: string, options: IClientOptions = {}, prefix = "stpmd"): Promise<Operator> {
    // MQTT 3.1.1 unless told otherwise: the topic convention is what a 3.1.1 client has
    const client = await connectAsync(url, { reconnectPeriod: 0, protocolVersion: 4, ...options });
    // as a latency-minded HMI would: otherwise its own PUBACKs hold its next packet back (Nagle, ~40 ms)
    (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
    const operator = new Operator(client, prefix);
    await client.subscribeAsync(`${prefix}/command/+/response`, { qos: 1 });
    return operator;
  }

  /**
   * Publishes `body` (JSON-encoded unless a string) to `<prefix>/command/<name>`; resolves with the next response,
   * skipping those that name another transaction than the body's: another client's responses on the same topic
   * (this one subscribes to all of them) may still be arriving. A refused request's response may name none.
   */
  async send(name: string, body: unknown): Promise<CommandResponsePayload> {
    const seen = this.responses.length;
    const payload = typeof body === "string" ? body : JSON.stringify(body);
    const transaction =
      typeof body === "object" && body !== null && "transaction" in body ? body.transaction : undefined;
    await this.client.publishAsync(`${this.prefix}/command/${name}`, payload, { qos: 1 });
    const topic = `${this.prefix}/command/${name}/response`;
    const response = await waitFor(
      `a response on ${topic}`,
      () =>
        this.responses
          .slice(seen)
          .find(
            (r) =>
              r.topic === topic &&
              (transaction === undefined ||
                r.payload.transaction === undefined ||
                r.payload.transaction === transaction),
          ),
      WAIT_MS,
    );
    return response.payload;
  }

  /** Sends `status` until one is answered: the daemon's SUBSCRIBE may reach the broker after our first PUBLISH. */
  async awaitDaemon(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const seen = this.responses.length;
      await this.client.publishAsync(
        `${this.prefix}/command/status`,
        JSON.stringify({ transaction: `probe-${attempt}` }),
      );
      const answered = await waitFor("a probe response", () => this.responses.length > seen, 200).catch(
        () => false,
      );
      if (answered) return;
      assert.ok(attempt < 50, "the daemon never answered a status command");
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

function okData(response: CommandResponsePayload): unknown {
  assert.equal(response.status, "ok", JSON.stringify(response));
  return "data" in response ? response.data : undefined;
}

function errorOf(response: CommandResponsePayload): string {
  assert.equal(response.status, "error", JSON.stringify(response));
  return response.status === "error" ? response.error : "";
}

/** The snapshot without its clock, for comparing state before and after a refused request. */
function state(control: TestLineControl): Omit<NodeSnapshot, "uptime_s"> {
  const { uptime_s: _, ...rest } = control.snapshot();
  return rest;
}

describe("MQTT commands on the publisher's session, against a real mosquitto", () => {
  let broker: MosquittoBroker;
  let outboxRoot: string;
  let publisher: Publisher;
  let commands: MqttCommands;
  let control: TestLineControl;
  let operator: Operator;

  before(async () => {
    // as deploy/mosquitto/stpmd.conf sets it
    broker = await MosquittoBroker.start({ extraConfig: ["set_tcp_nodelay true"] });
    outboxRoot = await mkdtemp(path.join(os.tmpdir(), "stpmd-commands-test-"));
    publisher = new Publisher(
      mqttConfig({
        url: broker.url,
        client_id: `stpmd-commands-${process.pid}`,
        reconnect_period_ms: 150,
        outbox: { dir: path.join(outboxRoot, "outbox") },
      }),
      logger,
      { stopTimeoutMs: 1000 },
    );
    await publisher.start();
    control = new TestLineControl(["cam1", "cam2"], 0.5);
    commands = new MqttCommands({ session: publisher, topics: new Topics("stpmd"), control, logger });
    await commands.start();
    operator = await Operator.connect(broker.url);
    await operator.awaitDaemon();
  });

  after(async () => {
    await operator?.close();
    await commands?.stop();
    await publisher?.stop();
    await broker?.close();
    await rm(outboxRoot, { recursive: true, force: true });
  });

  test("each command answers ok with its transaction echoed, and goes through the control as via mqtt", async () => {
    control.calls.length = 0;
    const threshold = await operator.send("set_threshold", {
      transaction: "t-1",
      camera: "cam1",
      threshold: { value: 0.8 },
    });
    assert.equal(threshold.transaction, "t-1");
    assert.deepEqual(okData(threshold), {
      camera: "cam1",
      threshold_rule: { value: 0.8 },
      old: 0.5,
      new: 0.8,
    });

    // a bare number is shorthand for {value: n}; a numeric transaction is echoed as a number
    const bare = await operator.send("set_threshold", { transaction: 42, camera: "cam2", threshold: 1.25 });
    assert.equal(bare.transaction, 42);
    assert.deepEqual(okData(bare), { camera: "cam2", threshold_rule: { value: 1.25 }, old: 0.5, new: 1.25 });

    const enable = await operator.send("enable_camera", {
      transaction: "t-3",
      camera: "cam2",
      enabled: false,
    });
    assert.equal(enable.transaction, "t-3");
    assert.deepEqual(okData(enable), { camera: "cam2", enabled: false });

    const collection = await operator.send("collection", { transaction: "t-4", enabled: true });
    assert.deepEqual(okData(collection), { enabled: true });

    // an empty payload (mosquitto_pub -n) is a request without keys and without a transaction
    const reload = await operator.send("reload", "");
    assert.equal(reload.transaction, undefined);
    assert.deepEqual(okData(reload), { config_applied: true, problems: [], swapped: [], failed: [] });

    const status = await operator.send("status", { transaction: "t-6" });
    assert.equal(status.transaction, "t-6");
    const snapshot = okData(status) as NodeSnapshot;
    assert.deepEqual(
      snapshot.cameras.map((c) => [c.id, c.threshold, c.enabled, c.state]),
      [
        ["cam1", 0.8, true, "streaming"],
        ["cam2", 1.25, false, "disabled"],
      ],
    );
    assert.equal(snapshot.collection.enabled, true);

    assert.deepEqual(control.calls, [
      { method: "setThreshold", args: ["cam1", { value: 0.8 }], by: { via: "mqtt" } },
      { method: "setThreshold", args: ["cam2", { value: 1.25 }], by: { via: "mqtt" } },
      { method: "enableCamera", args: ["cam2", false], by: { via: "mqtt" } },
      { method: "setCollection", args: [true], by: { via: "mqtt" } },
      { method: "reload", args: [], by: { via: "mqtt" } },
    ]);
  });

  test("malformed requests get an error that says what to send, and nothing reaches the control", async () => {
    control.calls.length = 0;
    const before = state(control);
    const setThresholdExample = '; send e.g. {"transaction":"t-1","camera":"cam1","threshold":0.7}';
    const thresholdRules =
      "a number > 0, {value: x > 0}, {sigma: 0 <= k <= 100} or {false_alarm_rate: 0 < p < 1}";
    const cases: [name: string, body: unknown, error: string | RegExp][] = [
      [
        "set_threshold",
        '{"camera": "cam1", "threshold": ',
        `the request is not valid JSON (Unexpected end of JSON input)${setThresholdExample}`,
      ],
      [
        "collection",
        "[true]",
        'the request must be a JSON object with the command\'s keys (got [true]); send e.g. {"transaction":"c-1","enabled":true}',
      ],
      [
        "collection",
        "true",
        'the request must be a JSON object with the command\'s keys (got true); send e.g. {"transaction":"c-1","enabled":true}',
      ],
      [
        "self_destruct",
        { transaction: "x" },
        'there is no command "self_destruct"; the commands are reload, status, set_threshold, enable_camera, collection, select_recipe, retrain, cancel_retrain, shadow, promote, rollback, discard_candidate',
      ],
      [
        "enable_camera",
        { camera: "cam1", enabled: "no" },
        'enable_camera refused: enabled: must be a boolean (got "no"); write true or false; send e.g. {"transaction":"e-1","camera":"cam1","enabled":false}',
      ],
      [
        "enable_camera",
        { camera: "cam1", enable: false },
        'enable_camera refused: enabled: required key is missing; enable: unknown key (did you mean enabled?); send e.g. {"transaction":"e-1","camera":"cam1","enabled":false}',
      ],
      [
        "set_threshold",
        { threshold: 0.7 },
        `set_threshold refused: camera: required key is missing${setThresholdExample}`,
      ],
      [
        "set_threshold",
        { camera: "cam1", threshold: -1 },
        `set_threshold refused: threshold: must be ${thresholdRules} (got -1)${setThresholdExample}`,
      ],
      [
        "set_threshold",
        { camera: "cam1", threshold: { sigma: 500 } },
        `set_threshold refused: threshold: must be ${thresholdRules} (got {"sigma":500})${setThresholdExample}`,
      ],
      [
        "set_threshold",
        { camera: "cam1", threshold: "0.7" },
        `set_threshold refused: threshold: must be ${thresholdRules} (got "0.7")${setThresholdExample}`,
      ],
      [
        "set_threshold",
        { camera: 7, threshold: 0.7 },
        `set_threshold refused: camera: must be a string (got 7)${setThresholdExample}`,
      ],
      [
        "set_threshold",
        { camera: "", threshold: 0.7 },
        `set_threshold refused: camera: must not be empty${setThresholdExample}`,
      ],
      [
        "collection",
        { enabled: true, transaction: { id: 1 } },
        'collection refused: transaction: must be a string of at most 256 characters or a number (got {"id":1}); send e.g. {"transaction":"c-1","enabled":true}',
      ],
      [
        "collection",
        JSON.stringify({ enabled: true, note: "x".repeat(70_000) }),
        'the request is 70026 bytes, more than the 65536 a command takes; send e.g. {"transaction":"c-1","enabled":true}',
      ],
      [
        "reload",
        { now: true },
        'reload refused: now: unknown key (allowed: transaction); send e.g. {"transaction":"r-1"}',
      ],
    ];
    for (const [name, body, expected] of cases) {
      const response = await operator.send(name, body);
      const error = errorOf(response);
      if (typeof expected === "string") assert.equal(error, expected, `${name} ${JSON.stringify(body)}`);
      else assert.match(error, expected, `${name} ${JSON.stringify(body)}`);
      // no schema-speak: Ajv's own wording, a schema description or a JSON pointer never reaches a person
      assert.doesNotMatch(error, /must NOT|must match|anyOf|Echoed in the response|\/threshold|instancePath/);
    }
    // the transaction of a request that is an object comes back even when the request was refused
    const refused = await operator.send("collection", { transaction: "bad-1", enabled: 1 });
    assert.equal(refused.transaction, "bad-1");
    assert.match(errorOf(refused), /enabled: must be a boolean \(got 1\)/);
    // an over-long transaction is refused, neither echoed nor quoted back in full
    const long = await operator.send("collection", { transaction: "t".repeat(5000), enabled: true });
    assert.equal(long.transaction, undefined);
    assert.match(
      errorOf(long),
      /transaction: must be a string of at most 256 characters or a number \(got "t{79}… \(5002 characters\)\); send e\.g\. /,
    );
    assert.ok(JSON.stringify(long).length < 400, "the response stays small");
    assert.deepEqual(control.calls, [], "no malformed request reached the control");
    assert.deepEqual(state(control), before, "and nothing changed");
  });

  test("a request the control refuses (unknown camera, unsupported rule) answers with its message and changes nothing", async () => {
    const before = state(control);
    const unknown = await operator.send("enable_camera", {
      transaction: "u-1",
      camera: "cam9",
      enabled: false,
    });
    assert.equal(unknown.transaction, "u-1");
    assert.equal(errorOf(unknown), 'unknown camera "cam9" (known: cam1, cam2)');
    const threshold = await operator.send("set_threshold", { camera: "cam9", threshold: 0.9 });
    assert.equal(errorOf(threshold), 'unknown camera "cam9" (known: cam1, cam2)');
    const sigma = await operator.send("set_threshold", { camera: "cam1", threshold: { sigma: 3 } });
    assert.equal(errorOf(sigma), "the test control applies only {value} thresholds");
    assert.deepEqual(state(control), before);
  });

  test("MQTT 5: a request with a Response Topic is answered there with its Correlation Data; without one, on the convention's topic", async () => {
    const v5 = await connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
    const received: { topic: string; payload: CommandResponsePayload; correlation?: Buffer }[] = [];
    v5.on("message", (topic, payload, packet) => {
      received.push({
        topic,
        payload: JSON.parse(payload.toString("utf8")) as CommandResponsePayload,
        ...(packet.properties?.correlationData ? { correlation: packet.properties.correlationData } : {}),
      });
    });
    try {
      await v5.subscribeAsync(["stpmd/response/hmi-7", "stpmd/command/+/response"], { qos: 1 });
      control.calls.length = 0;
      const seenByOperator = operator.responses.length;
      // binary correlation data, as the standard allows: it must come back byte for byte
      const correlation = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f]);
      await v5.publishAsync(
        "stpmd/command/set_threshold",
        JSON.stringify({ transaction: "v5-1", camera: "cam1", threshold: 0.65 }),
        { qos: 1, properties: { responseTopic: "stpmd/response/hmi-7", correlationData: correlation } },
      );
      const answer = await waitFor(
        "the response on the Response Topic",
        () => received.find((r) => r.payload.transaction === "v5-1"),
        WAIT_MS,
      );
      assert.equal(answer.topic, "stpmd/response/hmi-7");
      assert.deepEqual(answer.correlation, correlation);
      assert.equal(okData(answer.payload) !== undefined, true);
      assert.deepEqual(control.calls, [
        { method: "setThreshold", args: ["cam1", { value: 0.65 }], by: { via: "mqtt" } },
      ]);
      // a refused request is answered the same way, with what to send
      await v5.publishAsync(
        "stpmd/command/enable_camera",
        JSON.stringify({ transaction: "v5-2", camera: "cam1" }),
        {
          qos: 1,
          properties: { responseTopic: "stpmd/response/hmi-7", correlationData: Buffer.from("req-2") },
        },
      );
      const refused = await waitFor(
        "the refusal on the Response Topic",
        () => received.find((r) => r.payload.transaction === "v5-2"),
        WAIT_MS,
      );
      assert.equal(refused.topic, "stpmd/response/hmi-7");
      assert.equal(refused.correlation?.toString("utf8"), "req-2");
      assert.match(errorOf(refused.payload), /enabled/);

      // an MQTT 5 request without a Response Topic, and a 3.1.1 client's, get the convention's topic
      await v5.publishAsync("stpmd/command/status", JSON.stringify({ transaction: "v5-3" }), { qos: 1 });
      const plain = await waitFor(
        "the MQTT 5 request without a Response Topic answered",
        () => received.find((r) => r.payload.transaction === "v5-3"),
        WAIT_MS,
      );
      assert.equal(plain.topic, "stpmd/command/status/response");
      assert.equal(plain.correlation, undefined);
      // a Response Topic that is one of the daemon's own (a result, a request) is not answered on: the answer
      // would pose as a result or as a new request
      for (const [tx, responseTopic] of [
        ["v5-own-1", "stpmd/cam1/result"],
        ["v5-own-2", "stpmd/command/status"],
      ] as const) {
        await v5.publishAsync("stpmd/command/status", JSON.stringify({ transaction: tx }), {
          qos: 1,
          properties: { responseTopic, correlationData: Buffer.from(tx) },
        });
        const own = await waitFor(
          `the answer to ${tx}`,
          () => received.find((r) => r.payload.transaction === tx),
          WAIT_MS,
        );
        assert.equal(own.topic, "stpmd/command/status/response", tx);
        assert.equal(own.correlation?.toString("utf8"), tx, "the correlation data still comes back");
      }
      const old = await operator.send("status", { transaction: "v311-1" });
      okData(old);
      // responses go out in request order on one connection: by the time the 3.1.1 client has its answer, a
      // response to v5-1 or v5-2 on the convention's topic would have reached it first
      assert.deepEqual(
        operator.responses
          .slice(seenByOperator)
          .map((r) => [r.topic, r.payload.transaction])
          .filter(([, tx]) => tx !== undefined && String(tx).startsWith("v")),
        [
          ["stpmd/command/status/response", "v5-3"],
          ["stpmd/command/status/response", "v5-own-1"],
          ["stpmd/command/status/response", "v5-own-2"],
          ["stpmd/command/status/response", "v311-1"],
        ],
      );
    } finally {
      await v5.endAsync(true);
    }
  });

  test("select_recipe goes through the control: ok with the recipe before and after, null for none; an unknown recipe or a wrong type is refused", async () => {
    control.calls.length = 0;
    const selected = await operator.send("select_recipe", { transaction: "r-1", recipe: "B" });
    assert.deepEqual(okData(selected), { old: null, new: "B" });
    const none = await operator.send("select_recipe", { recipe: null });
    assert.deepEqual(okData(none), { old: "B", new: null });
    const unknown = await operator.send("select_recipe", { recipe: "Z" });
    assert.equal(errorOf(unknown), 'unknown recipe "Z" (known: A, B)');
    const wrong = await operator.send("select_recipe", { recipe: 7 });
    assert.equal(wrong.status, "error");
    assert.match(
      wrong.error ?? "",
      /recipe: must be a recipe's name or null \(every camera's own settings\) \(got 7\)/,
    );
    assert.deepEqual(
      control.calls.map((c) => [c.method, c.args, c.by]),
      [
        ["selectRecipe", ["B"], { via: "mqtt" }],
        ["selectRecipe", [null], { via: "mqtt" }],
        ["selectRecipe", ["Z"], { via: "mqtt" }],
      ],
    );
  });

  test("a command is answered within milliseconds: the daemon's socket does not wait out Nagle's algorithm", async () => {
    // With Nagle on the daemon's socket its response, written right after the PUBACK of the request, waits for
    // the broker's delayed ACK: a 40-50 ms round trip (measured) instead of about 2 ms.
    const rtts: number[] = [];
    for (let i = 0; i < 9; i++) {
      const started = performance.now();
      okData(await operator.send("status", { transaction: `rtt-${i}` }));
      rtts.push(performance.now() - started);
    }
    rtts.sort((a, b) => a - b);
    assert.ok(
      rtts[4]! < 20,
      `median round trip ${rtts[4]!.toFixed(1)} ms (all: ${rtts.map((t) => t.toFixed(1))})`,
    );
  });

  test("requests are answered in the order they were sent", async () => {
    const seen = operator.responses.length;
    for (let i = 0; i < 20; i++) {
      await operator.client.publishAsync(
        "stpmd/command/set_threshold",
        JSON.stringify({ transaction: i, camera: "cam1", threshold: 1 + i / 100 }),
        { qos: 1 },
      );
    }
    await waitFor("20 responses", () => operator.responses.length >= seen + 20, WAIT_MS);
    const answered = operator.responses.slice(seen).map((r) => r.payload.transaction);
    assert.deepEqual(answered, [...Array(20).keys()]);
    assert.equal(control.snapshot().cameras[0]!.threshold, 1.19);
  });

  test("beyond MAX_PENDING_COMMANDS waiting behind a slow one, requests are refused as busy, not queued", async () => {
    // a reload that takes until the test releases it, under its own prefix on the same session
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = new TestLineControl(["cam1"]);
    const reload = slow.reload.bind(slow);
    slow.reload = async (by) => {
      await gate;
      return reload(by);
    };
    const gated = new MqttCommands({
      session: publisher,
      topics: new Topics("gated"),
      control: slow,
      logger,
    });
    await gated.start();
    const client = await Operator.connect(broker.url, {}, "gated");
    try {
      await client.awaitDaemon();
      client.responses.length = 0; // the probes' answers
      const total = MAX_PENDING_COMMANDS + 3;
      for (let i = 0; i < total; i++) {
        await client.client.publishAsync("gated/command/reload", JSON.stringify({ transaction: i }), {
          qos: 1,
        });
      }
      // the refusals come at once, while the first reload still waits
      await waitFor("3 busy responses", () => client.responses.length >= 3, WAIT_MS);
      assert.deepEqual(
        client.responses.map((r) => [r.payload.transaction, errorOf(r.payload)]),
        [0, 1, 2].map((i) => [
          MAX_PENDING_COMMANDS + i,
          `busy: ${MAX_PENDING_COMMANDS} commands already queued; try again later`,
        ]),
      );
      release();
      await waitFor("every response", () => client.responses.length >= total, WAIT_MS);
      const ok = client.responses.slice(3).map((r) => [r.payload.transaction, r.payload.status]);
      assert.deepEqual(
        ok,
        [...Array(MAX_PENDING_COMMANDS).keys()].map((i) => [i, "ok"]),
      );
      assert.equal(slow.calls.length, MAX_PENDING_COMMANDS);
    } finally {
      release();
      await client.close();
      await gated.stop();
    }
  });

  test("stop() does not wait more than 2 s for a response the broker never acknowledges (broker hung)", async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = new TestLineControl(["cam1"]);
    const reload = slow.reload.bind(slow);
    let taken = false;
    slow.reload = async (by) => {
      taken = true;
      await gate;
      return reload(by);
    };
    const { logger: captured, lines } = capturingLogger("warn");
    const hung = new MqttCommands({
      session: publisher,
      topics: new Topics("hung"),
      control: slow,
      logger: captured,
    });
    await hung.start();
    const client = await Operator.connect(broker.url, {}, "hung");
    try {
      await client.awaitDaemon();
      await client.client.publishAsync("hung/command/reload", JSON.stringify({ transaction: 1 }), { qos: 1 });
      await waitFor("the request taken by the daemon", () => taken, WAIT_MS);
      // the broker stops answering, then the reload finishes: its QoS 1 response is never acknowledged
      broker.freeze(true);
      release();
      const started = Date.now();
      await hung.stop();
      const waited = Date.now() - started;
      assert.ok(waited >= 1_900 && waited < 3_500, `stop() took ${waited} ms`);
      assert.equal(lines.length, 1, lines.map((l) => l.msg).join("\n"));
      assert.match(
        lines[0]!.msg,
        /^stopping without waiting longer for 1 of 1 command responses: the broker has not acknowledged them within 2000 ms$/,
      );
    } finally {
      release();
      broker.freeze(false);
      await client.close();
      await hung.stop();
    }
  });

  test("commands work again after the broker restarted (the publisher resubscribes)", async () => {
    await operator.close();
    await broker.restart();
    await waitFor("publisher reconnected", () => publisher.isConnected, 10_000);
    operator = await Operator.connect(broker.url);
    await operator.awaitDaemon();
    const response = await operator.send("collection", { transaction: "after-restart", enabled: false });
    assert.deepEqual(okData(response), { enabled: false });
    assert.equal(control.collection, false);
  });
});

describe("deploy/mosquitto/stpmd.acl with commands", () => {
  test("only the operator's commands reach the daemon; the daemon still publishes and answers", async () => {
    const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-commands-acl-"));
    const passwords = path.join(work, "passwords");
    execFileSync("mosquitto_passwd", ["-c", "-b", passwords, "stpmd", "daemon-pw"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "operator", "operator-pw"]);
    execFileSync("mosquitto_passwd", ["-b", passwords, "scada", "scada-pw"]);
    const broker = await MosquittoBroker.start({
      passwordFile: passwords,
      extraConfig: [
        `acl_file ${path.resolve("deploy/mosquitto/stpmd.acl")}`,
        "use_username_as_clientid true",
      ],
    });
    const publisher = new Publisher(
      mqttConfig({
        url: broker.url,
        username: "stpmd",
        password: "daemon-pw",
        reconnect_period_ms: 150,
        outbox: { dir: path.join(work, "outbox") },
      }),
      logger,
      { stopTimeoutMs: 1000 },
    );
    const control = new TestLineControl(["cam1"], 0.5);
    const commands = new MqttCommands({ session: publisher, topics: new Topics("stpmd"), control, logger });
    const clients: Operator[] = [];
    try {
      await publisher.start();
      await commands.start();
      const operator = await Operator.connect(broker.url, { username: "operator", password: "operator-pw" });
      clients.push(operator);
      const scada = await Operator.connect(broker.url, { username: "scada", password: "scada-pw" });
      clients.push(scada);
      const statuses: string[] = [];
      const cameraTopics = new Set<string>();
      scada.client.on("message", (topic, payload) => {
        if (topic === "stpmd/status") statuses.push(JSON.parse(payload.toString("utf8")).state as string);
        else if (topic.startsWith("stpmd/cam1/")) cameraTopics.add(topic);
      });
      await scada.client.subscribeAsync(["stpmd/status", "stpmd/cam1/+"], { qos: 1 });
      await operator.awaitDaemon();

      // the reader's forged command is dropped by the broker; acknowledged before the operator's goes out, so
      // had it been forwarded it would have reached the daemon first
      await scada.client.publishAsync("stpmd/command/enable_camera", '{"camera":"cam1","enabled":false}', {
        qos: 1,
      });
      const response = await operator.send("set_threshold", {
        transaction: "op",
        camera: "cam1",
        threshold: 0.7,
      });
      assert.equal(response.transaction, "op");
      okData(response);
      assert.deepEqual(
        control.calls.map((c) => c.method),
        ["setThreshold"],
        "only the operator's command arrived",
      );
      assert.equal(control.snapshot().cameras[0]!.enabled, true);
      // readers see the operator's response too, and the daemon's retained status
      await waitFor("scada saw the response", () =>
        scada.responses.some((r) => r.payload.transaction === "op"),
      );
      // MQTT 5: the daemon may answer on a Response Topic under stpmd/response/, and nowhere else
      const v5 = await connectAsync(broker.url, {
        protocolVersion: 5,
        reconnectPeriod: 0,
        username: "operator",
        password: "operator-pw",
      });
      try {
        const answers: [string, string | number | undefined][] = [];
        v5.on("message", (topic, payload) => {
          if (!topic.includes("response")) return; // results, status, the retained JPEG snapshot
          answers.push([topic, (JSON.parse(payload.toString("utf8")) as CommandResponsePayload).transaction]);
        });
        await v5.subscribeAsync("stpmd/#", { qos: 1 });
        for (const [tx, responseTopic] of [
          ["outside", "elsewhere/operator"],
          ["inside", "stpmd/response/operator"],
        ]) {
          await v5.publishAsync("stpmd/command/status", JSON.stringify({ transaction: tx }), {
            qos: 1,
            properties: { responseTopic, correlationData: Buffer.from(tx!) },
          });
        }
        await waitFor("the answer on the allowed Response Topic", () =>
          answers.find(([, tx]) => tx === "inside"),
        );
        assert.deepEqual(
          answers,
          [["stpmd/response/operator", "inside"]],
          "the answer to the request whose Response Topic the ACL refuses goes nowhere",
        );
      } finally {
        await v5.endAsync(true);
      }
      await waitFor("scada saw the daemon online", () => statuses.includes("online"));
      // the daemon's narrowed rights still cover everything it publishes for a camera
      publisher.publishResult(control.emit("cam1", 0.9));
      await waitFor("result, defect and snapshot", () => cameraTopics.size === 3);
      assert.deepEqual([...cameraTopics].sort(), [
        "stpmd/cam1/defect",
        "stpmd/cam1/result",
        "stpmd/cam1/snapshot",
      ]);
    } finally {
      for (const client of clients) await client.close();
      await commands.stop();
      await publisher.stop();
      await broker.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe("a daemon on MQTT 3.1.1 (mqtt.protocol_version: 4)", () => {
  test("answers every request on the convention's topic, an MQTT 5 client's too", async () => {
    const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-commands-v4-"));
    const broker = await MosquittoBroker.start();
    const publisher = new Publisher(
      mqttConfig({
        url: broker.url,
        protocol_version: 4,
        reconnect_period_ms: 150,
        outbox: { dir: path.join(work, "outbox") },
      }),
      logger,
      { stopTimeoutMs: 1000 },
    );
    const control = new TestLineControl(["cam1"], 0.5);
    const commands = new MqttCommands({ session: publisher, topics: new Topics("stpmd"), control, logger });
    const v5 = await connectAsync(broker.url, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      await publisher.start();
      await commands.start();
      await waitFor("the daemon connected", () => publisher.isConnected, WAIT_MS);
      assert.equal(publisher.mqttClient?.options.protocolVersion, 4);
      const operator = await Operator.connect(broker.url, { protocolVersion: 5 });
      try {
        await operator.awaitDaemon();
        await v5.subscribeAsync("stpmd/response/#", { qos: 1 });
        const onResponseTopic: string[] = [];
        v5.on("message", (topic) => onResponseTopic.push(topic));
        // the broker drops the Response Topic on the way to a 3.1.1 subscriber, so the convention answers
        await operator.client.publishAsync("stpmd/command/status", JSON.stringify({ transaction: "v4-1" }), {
          qos: 1,
          properties: { responseTopic: "stpmd/response/x", correlationData: Buffer.from("c") },
        });
        const response = await waitFor(
          "the answer on the convention's topic",
          () => operator.responses.find((r) => r.payload.transaction === "v4-1"),
          WAIT_MS,
        );
        assert.equal(response.topic, "stpmd/command/status/response");
        okData(response.payload);
        assert.deepEqual(onResponseTopic, []);
      } finally {
        await operator.close();
      }
    } finally {
      await v5.endAsync(true);
      await commands.stop();
      await publisher.stop();
      await broker.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
