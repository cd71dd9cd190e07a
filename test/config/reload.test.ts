import assert from "node:assert/strict";
import { test } from "node:test";
import {
  cameraChanges,
  changedKeys,
  keepRestartKeys,
  keysWithoutReloadRule,
  loadConfigSchema,
  RELOAD_RULE_TEXT,
  reloadRuleOf,
  reloadRules,
  type SchemaNode,
  schemaReloadRules,
} from "../../src/config/index.js";
import { testConfig } from "../helpers/config.js";

test("every key of the schema has a reload rule, its own or its enclosing key's", () => {
  assert.deepEqual(keysWithoutReloadRule(), []);
  const keys = reloadRules().map((r) => r.key);
  assert.ok(keys.length >= 20, `only ${keys.length} rules: the walk is broken`);
  assert.equal(new Set(keys).size, keys.length, "each key once");
  // the per-camera keys declare their own rules, one by one
  for (const key of ["id", "source", "roi", "ignore", "threshold", "enabled", "model", "restart_backoff"]) {
    assert.ok(keys.includes(`cameras[].${key}`), `cameras[].${key}`);
  }
  for (const r of reloadRules())
    assert.ok(RELOAD_RULE_TEXT[r.rule], `${r.key}: a rule the docs can describe`);
});

test("a key added without a reload rule is found (the check above can fail)", () => {
  const schema = structuredClone(loadConfigSchema());
  const camera = (schema.properties!.cameras!.items as SchemaNode).properties!;
  camera.focus = { type: "number", description: "A new per-camera key someone forgot to give a rule." };
  delete camera.roi!["x-reload"];
  schema.properties!.mqtt!["x-reload"] = "someday";
  const { missing } = schemaReloadRules(schema);
  assert.ok(missing.includes("cameras[].focus"), missing.join(", "));
  assert.ok(missing.includes("cameras[].roi.x"), "an undeclared object is looked into, key by key");
  assert.ok(missing.includes("mqtt.url"), "an unknown rule is no rule");
});

test("a key's rule covers what lies inside it", () => {
  assert.equal(reloadRuleOf("cameras[].threshold"), "live");
  assert.equal(reloadRuleOf("cameras[].restart_backoff.max_ms"), "camera");
  assert.equal(reloadRuleOf("mqtt.outbox.dir"), "restart");
  assert.equal(reloadRuleOf("model.bundle"), "camera");
  assert.equal(reloadRuleOf("model.watch"), "restart");
  assert.equal(reloadRuleOf("nonsense"), undefined);
});

test("changed keys are named down to the leaf that changed, with their rules", () => {
  const before = testConfig({ cameras: [{ id: "a", source: "videotestsrc" }] });
  const after = testConfig({
    model: { bundle: "/other/bundle", watch_debounce_ms: 5 },
    cameras: [{ id: "a", source: "videotestsrc" }],
    mqtt: { status_interval_s: 3, outbox: { max_messages: 7 } },
    inference: { providers: [{ name: "cuda" }, { name: "cpu" }] },
  });
  assert.deepEqual(
    changedKeys(before, after).sort((x, y) => x.key.localeCompare(y.key)),
    [
      { key: "inference.providers", rule: "restart" },
      { key: "model.bundle", rule: "camera" },
      { key: "model.watch_debounce_ms", rule: "restart" },
      { key: "mqtt.outbox.max_messages", rule: "restart" },
      { key: "mqtt.status_interval_s", rule: "restart" },
    ],
  );
  assert.deepEqual(changedKeys(before, structuredClone(before)), []);
  const cam = before.cameras[0]!;
  assert.deepEqual(
    cameraChanges(cam, {
      ...cam,
      restart_backoff: { ...cam.restart_backoff, max_ms: 1000 },
      threshold: { sigma: 2 },
    }),
    [
      { key: "cameras[].restart_backoff.max_ms", rule: "camera" },
      { key: "cameras[].threshold", rule: "live" },
    ],
  );
});

test("the config a reload puts in force keeps every restart key's running value and takes the rest", () => {
  const running = testConfig({ log: { level: "info" }, cameras: [{ id: "a", source: "videotestsrc" }] });
  const next = testConfig({
    model: { bundle: "/new", watch: false },
    log: { level: "debug" },
    mqtt: { prefix: "other" },
    cameras: [
      { id: "a", source: "videotestsrc pattern=ball", threshold: { value: 2 } },
      { id: "b", source: "videotestsrc" },
    ],
  });
  const inForce = keepRestartKeys(running, next);
  assert.equal(inForce.model.bundle, "/new");
  assert.equal(inForce.model.watch, true);
  assert.equal(inForce.log.level, "info");
  assert.equal(inForce.mqtt.prefix, "stpmd");
  assert.deepEqual(inForce.cameras, next.cameras);
  assert.equal(running.model.bundle, "/nonexistent/bundle", "the running config is not modified");
});
