import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { test } from "node:test";
import type { MqttClient } from "mqtt";
import { MqttConnector } from "../../src/publish/mqtt-session.js";
import { capturingLogger } from "../helpers/logs.js";
import { freeLoopbackPort, MosquittoBroker } from "../helpers/mosquitto.js";

const will = { topic: "t/status", payload: Buffer.from("offline"), qos: 1 as const, retain: true };

test("a broker that keeps refusing is one warning (then one a minute), not a line per reconnect attempt", async () => {
  const port = await freeLoopbackPort(); // nothing listens there: every attempt is refused
  const { logger, lines } = capturingLogger("debug");
  const connector = new MqttConnector({
    what: "Sparkplug",
    url: `mqtt://user:secret@127.0.0.1:${port}`,
    clientId: "connector-test",
    broker: {},
    reconnectPeriodMs: 50,
    logger,
    errorContext: () => ({ bd_seq: 7 }),
  });
  await connector.prepare();
  const client = connector.connect(will);
  try {
    const deadline = Date.now() + 5_000;
    while (lines.filter((l) => l.msg === "Sparkplug connection error").length < 5 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    client.end(true);
  }
  const warnings = lines.filter((l) => l.level === 40);
  const debug = lines.filter((l) => l.msg === "Sparkplug connection error");
  assert.ok(debug.length >= 5, `${debug.length} repeats logged at debug level`);
  assert.equal(warnings.length, 1, JSON.stringify(warnings));
  assert.equal(warnings[0]!.msg, "Sparkplug connection error; retrying");
  assert.equal(warnings[0]!.bd_seq, 7, "the owner's context rides along");
  assert.equal(warnings[0]!.url, `mqtt://user:***@127.0.0.1:${port}`, "the password never reaches the log");
  assert.ok((debug.at(-1)!.attempts as number) > (debug[0]!.attempts as number), "the repeats are counted");
  assert.match(connector.lastError ?? "", /ECONNREFUSED/);
});

test("a client it opens connects clean with its will, and a connect clears the last error", async () => {
  const broker = await MosquittoBroker.start();
  const { logger, lines } = capturingLogger("debug");
  const connector = new MqttConnector({
    what: "MQTT",
    url: broker.url,
    clientId: "connector-live",
    broker: {},
    reconnectPeriodMs: 100,
    logger,
  });
  await connector.prepare();
  const client = connector.connect(will);
  try {
    await new Promise<void>((resolve) => client.once("connect", () => resolve()));
    assert.equal(client.options.clean, true);
    assert.equal(client.options.clientId, "connector-live");
    assert.equal(client.options.will?.topic, "t/status");
    assert.equal(connector.lastError, undefined);
    assert.deepEqual(
      lines.filter((l) => l.level >= 40),
      [],
    );
  } finally {
    client.end(true);
    await broker.close();
  }
});

test("connect() before prepare() is a programming error, and an unusable URL names the connection", async () => {
  const { logger } = capturingLogger("silent" as "info");
  const connector = new MqttConnector({
    what: "Sparkplug",
    url: "broker-without-scheme",
    clientId: "x",
    broker: {},
    reconnectPeriodMs: 0,
    logger,
  });
  assert.throws(() => connector.connect(will), /before prepare/);
  await connector.prepare();
  assert.throws(
    () => connector.connect(will),
    /^StpmdError: Sparkplug url broker-without-scheme: Missing protocol/,
  );
});

test("MQTT 5 when asked for; a broker that speaks only 3.1.1 refuses it and the line says which key to set", async () => {
  // mosquitto speaks 5, so the refusal comes from a socket that answers as a 3.1.1-only broker must (MQTT 3.1.1
  // section 3.2.2.3: CONNACK return code 1, "unacceptable protocol version", then close)
  const refusing = net.createServer((socket) => {
    socket.once("data", () => socket.end(Buffer.from([0x20, 0x02, 0x00, 0x01])));
  });
  refusing.listen(0, "127.0.0.1");
  await once(refusing, "listening");
  const { port } = refusing.address() as net.AddressInfo;
  const broker = await MosquittoBroker.start();
  const { logger, lines } = capturingLogger("warn");
  const connectorFor = (url: string, version: 4 | 5) =>
    new MqttConnector({
      what: "MQTT",
      url,
      clientId: `connector-v${version}`,
      broker: {},
      reconnectPeriodMs: 100,
      protocol: { version, key: "mqtt.protocol_version" },
      logger,
    });
  const clients: MqttClient[] = [];
  try {
    for (const version of [4, 5] as const) {
      const connector = connectorFor(broker.url, version);
      await connector.prepare();
      const client = connector.connect(will);
      clients.push(client);
      await new Promise<void>((resolve) => client.once("connect", () => resolve()));
      assert.equal(client.options.protocolVersion, version);
    }
    assert.equal(lines.length, 0, "mosquitto 2 takes both");

    const connector = connectorFor(`mqtt://127.0.0.1:${port}`, 5);
    await connector.prepare();
    clients.push(connector.connect(will));
    const deadline = Date.now() + 5_000;
    while (connector.lastError === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await new Promise((resolve) => setTimeout(resolve, 500)); // a few more refused attempts, 100 ms apart
    const expected =
      "the broker does not accept MQTT 5 (Connection refused: Unacceptable protocol version); set mqtt.protocol_version: 4 for a broker that speaks only MQTT 3.1.1";
    assert.equal(connector.lastError, expected);
    assert.deepEqual(
      lines.map((l) => [l.msg, l.err]),
      [["MQTT connection error; retrying", expected]],
      "one line, however often it retries",
    );
  } finally {
    for (const client of clients) client.end(true);
    await broker.close();
    refusing.close();
  }
});
