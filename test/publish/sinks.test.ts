import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import { Publisher } from "../../src/publish/mqtt/publisher.js";
import { createLineInterfaces } from "../../src/publish/sinks.js";
import { testConfig } from "../helpers/config.js";
import { TestLineControl } from "../helpers/line-control.js";

const logger = createLogger("silent");

test("createLineInterfaces builds the MQTT commands and the HTTP server only when their config enables them", () => {
  const control = new TestLineControl();
  const names = (partial: Parameters<typeof testConfig>[0]) => {
    const config = testConfig(partial);
    const mqtt = new Publisher(config.mqtt, logger); // never started: the interfaces are only built here
    return createLineInterfaces(config, control, logger, { mqtt }).map((i) => i.name);
  };
  assert.deepEqual(names({}), [], "both are off by default");
  assert.deepEqual(names({ mqtt: { url: "mqtt://127.0.0.1:1", commands: { enabled: true } } }), [
    "mqtt-commands",
  ]);
  assert.deepEqual(names({ http: { enabled: true } }), ["http"]);
});
