import assert from "node:assert/strict";
import { test } from "node:test";
import { cameraFault } from "../../../src/publish/opcua/machine-vision-conditions.js";
import { TestLineControl } from "../../helpers/line-control.js";

test("cameraFault: an enabled camera restarting or stalled, not a disabled, idle or starting one", () => {
  const [camera] = new TestLineControl(["cam1"]).snapshot().cameras;
  const fault = (enabled: boolean, state: typeof camera.state) => cameraFault({ ...camera!, enabled, state });
  assert.equal(fault(true, "streaming"), undefined);
  assert.equal(fault(true, "idle"), undefined, "waiting for a hardware trigger is no fault");
  assert.equal(fault(true, "starting"), undefined);
  assert.equal(fault(false, "stalled"), undefined, "a disabled camera is not expected to deliver");
  assert.equal(fault(true, "restarting"), "camera cam1 is restarting (restarts: 0)");
  assert.equal(fault(true, "stalled"), "camera cam1 stalled: no frame within its stall timeout");
});
