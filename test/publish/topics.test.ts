import assert from "node:assert/strict";
import { test } from "node:test";
import { buildDefectPayload, buildResultPayload } from "../../src/publish/topics.js";
import { TestLineControl } from "../helpers/line-control.js";

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
