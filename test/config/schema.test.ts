import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  completeConfig,
  configSchemaJson,
  loadConfig,
  type PartialConfig,
  THRESHOLD_RULE_TEXT,
  thresholdRuleProblem,
} from "../../src/config/index.js";
import { loadConfigSchema, WORDED_KEYWORDS } from "../../src/config/validate.js";
import { SCHEMA_FILE } from "../../src/config/write-schema.js";
import { isStpmdError } from "../../src/core/errors.js";

test("config/stpmd.schema.json is what src/config/schema.ts defines (run `npm run config:schema` after an edit)", () => {
  const committed: unknown = JSON.parse(readFileSync(SCHEMA_FILE, "utf8"));
  assert.deepEqual(committed, configSchemaJson());
});

test("completeConfig fills in the schema's defaults as loading a file does", async () => {
  const { writeFile } = await import("node:fs/promises");
  const { tempDir } = await import("../helpers/tiny-data.js");
  const dir = await tempDir();
  const partial = {
    model: { bundle: "model" },
    cameras: [{ id: "cam", source: "videotestsrc" }],
    mqtt: { url: "mqtt://127.0.0.1:1883", client_id: "x" },
  };
  await writeFile(`${dir}/c.json`, JSON.stringify(partial));
  const fromFile = loadConfig(`${dir}/c.json`, {});
  const built = completeConfig(partial, { baseDir: dir });
  assert.deepEqual(built, fromFile);
  assert.equal(built.model.bundle, `${dir}/model`, "relative paths against baseDir");
  assert.equal(built.cameras[0]!.restart_backoff.initial_ms, 500);
  assert.deepEqual(partial.cameras[0], { id: "cam", source: "videotestsrc" }, "the input is not modified");
});

test("completeConfig lists every problem, like loadConfig", () => {
  try {
    completeConfig({
      model: { bundle: "m" },
      cameras: [{ id: "bad id", source: "x" }],
      mqtt: { url: "ftp://x" },
    });
    assert.fail("accepted");
  } catch (err) {
    assert.ok(isStpmdError(err));
    assert.match(err.message, /2 problems/);
    assert.match(err.message, /cameras\[0\]\.id: must contain only letters/);
    assert.match(err.message, /mqtt\.url: must be a mqtt:\/\//);
  }
});

test("threshold rules: the bounds, the refusal's text and the interfaces' description come from one place", () => {
  assert.equal(
    THRESHOLD_RULE_TEXT,
    "{value: x > 0}, {sigma: 0 <= k <= 100} or {false_alarm_rate: 0 < p < 1}",
  );
  for (const ok of [{ value: 0.001 }, { sigma: 0 }, { sigma: 100 }, { false_alarm_rate: 0.5 }]) {
    assert.equal(thresholdRuleProblem(ok), undefined, JSON.stringify(ok));
  }
  for (const bad of [
    { value: 0 },
    { sigma: -1 },
    { sigma: 100.5 },
    { false_alarm_rate: 1 },
    { sigma: 1, value: 2 },
    3,
  ]) {
    assert.equal(thresholdRuleProblem(bad), `${JSON.stringify(bad)} is not one of ${THRESHOLD_RULE_TEXT}`);
  }
  // the config file accepts exactly what a client may set
  const camera = (threshold: unknown) => ({
    model: { bundle: "/b" },
    mqtt: { url: "mqtt://127.0.0.1:1" },
    cameras: [{ id: "a", source: "videotestsrc", threshold }],
  });
  assert.doesNotThrow(() => completeConfig(camera({ sigma: 100 }) as PartialConfig));
  assert.throws(() => completeConfig(camera({ sigma: 100.5 }) as PartialConfig), /cameras/);
});

test("every keyword the config schema validates with is worded for people (none falls back to Ajv's wording)", () => {
  // annotations and structure: they never fail on their own
  const notValidating = new Set([
    "description",
    "default",
    "title",
    "$id",
    "$schema",
    "examples",
    "expected",
  ]);
  const unworded = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      node.forEach(walk);
      return;
    }
    if (typeof node !== "object" || node === null) return;
    for (const [key, value] of Object.entries(node)) {
      // applicators: their subschemas fail, never they themselves (patternProperties: the recipes' cameras)
      const applicator = key === "properties" || key === "patternProperties";
      if (applicator) Object.values(value as object).forEach(walk);
      else if (key === "items" || key === "anyOf" || key === "oneOf") walk(value);
      if (applicator || key === "items" || key.startsWith("x-") || notValidating.has(key)) continue;
      if (!WORDED_KEYWORDS.has(key)) unworded.add(key);
    }
  };
  walk(loadConfigSchema());
  assert.deepEqual([...unworded], []);
});
