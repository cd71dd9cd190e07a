import assert from "node:assert/strict";
import { test } from "node:test";
import type { CameraSnapshot } from "../../../src/publish/control.js";
import {
  automaticState,
  PartWindow,
  RECENT_PART_MS,
  SYSTEM_STATE,
  systemState,
  visionState,
} from "../../../src/publish/opcua/machine-vision-state.js";
import { TestLineControl } from "../../helpers/line-control.js";

const snapshot = new TestLineControl(["cam1", "cam2"]).snapshot();
const cameras = (...states: [boolean, CameraSnapshot["state"]][]) =>
  states.map(([enabled, state], i) => ({ ...snapshot.cameras[i]!, enabled, state }));

test("visionState: Halted with every camera disabled, Error without a model or a camera that delivers, Preoperational while starting", () => {
  assert.deepEqual(visionState(snapshot), { state: "Operational", reason: "inspecting" });
  assert.deepEqual(visionState({ ...snapshot, models: [] }), { state: "Error", reason: "no model loaded" });
  const halted = { ...snapshot, cameras: cameras([false, "disabled"], [false, "disabled"]) };
  assert.equal(visionState(halted).state, "Halted");
  assert.equal(visionState({ ...halted, models: [] }).state, "Halted", "halted before missing a model");
  const stateOf = (...states: [boolean, CameraSnapshot["state"]][]) =>
    visionState({ ...snapshot, cameras: cameras(...states) }).state;
  assert.equal(stateOf([true, "streaming"], [false, "disabled"]), "Operational");
  assert.deepEqual(visionState({ ...snapshot, cameras: cameras([true, "restarting"], [true, "stalled"]) }), {
    state: "Error",
    reason: "no camera delivers frames: cam1 restarting, cam2 stalled",
  });
  // a disabled camera's state does not count; one faulted camera of two is not the system's error
  assert.equal(stateOf([true, "stalled"], [false, "disabled"]), "Error");
  assert.equal(stateOf([true, "stalled"], [true, "streaming"]), "Operational");
  assert.equal(stateOf([true, "idle"], [true, "stalled"]), "Operational");
  assert.equal(stateOf([true, "starting"], [true, "starting"]), "Preoperational");
  assert.equal(stateOf([true, "starting"], [true, "streaming"]), "Operational");
});

test("automaticState: SingleExecution for one part in flight, ContinuousExecution while parts keep coming, else Ready", () => {
  assert.equal(automaticState({ outstanding: 0, recentParts: 0 }), "Ready");
  assert.equal(automaticState({ outstanding: 0, recentParts: 1 }), "Ready", "a single part answered");
  assert.equal(automaticState({ outstanding: 1, recentParts: 1 }), "SingleExecution");
  assert.equal(automaticState({ outstanding: 1, recentParts: 2 }), "ContinuousExecution");
  assert.equal(automaticState({ outstanding: 0, recentParts: 2 }), "ContinuousExecution");
});

test("systemState: productive while judging, standby when ready or starting, downtime halted or in error", () => {
  assert.equal(systemState("Operational", "SingleExecution"), SYSTEM_STATE.productive);
  assert.equal(systemState("Operational", "ContinuousExecution"), SYSTEM_STATE.productive);
  assert.equal(systemState("Operational", "Ready"), SYSTEM_STATE.standby);
  assert.equal(systemState("Preoperational", "Ready"), SYSTEM_STATE.standby);
  assert.equal(systemState("Halted", "Ready"), SYSTEM_STATE.scheduledDowntime);
  assert.equal(systemState("Error", "Ready"), SYSTEM_STATE.unscheduledDowntime);
});

test("PartWindow counts the part starts of the last RECENT_PART_MS", () => {
  const window = new PartWindow();
  window.add(0);
  window.add(1000);
  assert.equal(window.count(1500), 2);
  assert.equal(window.count(RECENT_PART_MS + 500), 1);
  assert.equal(window.count(RECENT_PART_MS + 1001), 0);
});
