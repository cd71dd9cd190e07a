import assert from "node:assert/strict";
import { test } from "node:test";
import { Topics, topicMatches } from "../../src/publish/topics.js";

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
