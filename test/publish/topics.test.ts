import assert from "node:assert/strict";
import { test } from "node:test";
import { buildDefectPayload, buildResultPayload, Topics, topicMatches } from "../../src/publish/topics.js";
import { TestLineControl } from "../helpers/line-control.js";

test("topicMatches follows MQTT's wildcards: + is one level, # the rest (and the parent)", () => {
  const cases: [filter: string, topic: string, matches: boolean][] = [
    ["stpmd/command/+", "stpmd/command/reload", true],
    ["stpmd/command/+", "stpmd/command/reload/response", false],
    ["stpmd/command/+", "stpmd/command", false],
    ["stpmd/+/result", "stpmd/cam1/result", true],
    ["stpmd/#", "stpmd", true],
    ["stpmd/#", "stpmd/cam1/defect", true],
    ["stpmd/#", "other/cam1", false],
    ["stpmd/status", "stpmd/status", true],
    ["stpmd/status", "stpmd/status/x", false],
  ];
  for (const [filter, topic, matches] of cases) {
    assert.equal(topicMatches(filter, topic), matches, `${filter} vs ${topic}`);
  }
});

test("command topics: the filter, the name of a request topic, the response topic", () => {
  const topics = new Topics("plant/line1");
  assert.equal(topics.commandFilter(), "plant/line1/command/+");
  assert.equal(topics.commandName("plant/line1/command/set_threshold"), "set_threshold");
  assert.equal(topics.commandName("plant/line1/command/set_threshold/response"), undefined);
  assert.equal(topics.commandName("plant/line1/cam1/result"), undefined);
  assert.equal(topics.commandName("plant/line1/command/"), undefined);
  assert.equal(topics.commandResponse("reload"), "plant/line1/command/reload/response");
});

test("result and defect payloads carry part_id only for frames a PLC trigger tagged", () => {
  const control = new TestLineControl(["cam1"]);
  const untagged = control.emit("cam1", 0.9);
  assert.equal("part_id" in buildResultPayload(untagged), false);
  assert.equal("part_id" in buildDefectPayload(untagged, "none"), false);

  control.trigger("cam1", "P-42", { via: "opcua", user: "plc" });
  const tagged = control.emit("cam1", 0.9);
  assert.equal(buildResultPayload(tagged).part_id, "P-42");
  assert.equal(buildDefectPayload(tagged, "none").part_id, "P-42");
});
