import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import { runDemo } from "../../src/demo/demo.js";

test("the demo runs the whole chain and receives the daemon's MQTT messages", async () => {
  const lines: string[] = [];
  const s = await runDemo({
    teacher: undefined,
    workDir: undefined,
    trainFrames: 8,
    replayFrames: 6,
    epochs: 2,
    imageSize: 64,
    logger: createLogger("silent"),
    print: (l) => lines.push(l),
  });
  assert.equal(s.inspected, 6);
  assert.equal(s.defectiveTruth, 2);
  const text = lines.join("\n");
  assert.match(text, /RANDOMLY INITIALISED teacher/);
  assert.match(text, /MQTT topics seen: .*stpmd\/demo_line\/result/);
  assert.match(text, /stpmd\/status/);
  assert.equal(s.defectEventsReceived, s.flagged);
});
