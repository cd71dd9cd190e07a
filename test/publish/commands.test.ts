import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import { CommandExecutor } from "../../src/publish/commands.js";
import { TestLineControl, testBundleSummary } from "../helpers/line-control.js";

const by = { via: "mqtt" as const, user: "scada-1" };

test("the candidate commands refuse a request that does not fit their schema, naming the key", async () => {
  const control = new TestLineControl(["cam1"]);
  const commands = new CommandExecutor(control, createLogger("silent"));
  const run = (name: string, body: unknown) => commands.execute(name, Buffer.from(JSON.stringify(body)), by);
  const cases: [string, unknown, RegExp][] = [
    ["retrain", {}, /^retrain refused: camera: .*required/],
    ["retrain", { camera: "" }, /^retrain refused: camera: /],
    ["cancel_retrain", { camera: 3 }, /^cancel_retrain refused: camera: /],
    ["shadow", { camera: "cam1" }, /^shadow refused: enabled: .*required/],
    ["shadow", { camera: "cam1", enabled: "yes" }, /^shadow refused: enabled: /],
    ["promote", { camera: "cam1", force: 1 }, /^promote refused: force: /],
    ["rollback", { camera: "cam1", version: "x" }, /^rollback refused: version: unknown key/],
    ["discard_candidate", { cam: "cam1" }, /^discard_candidate refused: .*camera/],
  ];
  for (const [name, body, expected] of cases) {
    const response = await run(name, body);
    assert.ok(response.status === "error", `${name} ${JSON.stringify(body)}`);
    assert.match(response.error, expected);
    assert.match(response.error, /send e\.g\. \{/);
  }
  assert.deepEqual(control.calls, [], "nothing reached the control");
});

test("the candidate commands reach the control with who asked, and its refusals come back as errors", async () => {
  const control = new TestLineControl(["cam1", "cam2"]);
  control.candidateViews = [
    {
      camera: "cam1",
      live: testBundleSummary("live"),
      candidate: testBundleSummary("cand"),
      job: null,
      shadow: null,
      previous: null,
    },
  ];
  const commands = new CommandExecutor(control, createLogger("silent"));
  const run = (name: string, body: unknown) => commands.execute(name, Buffer.from(JSON.stringify(body)), by);
  const promoted = await run("promote", { transaction: "p-1", camera: "cam1", force: true });
  assert.equal(promoted.status, "ok");
  assert.equal(promoted.transaction, "p-1");
  assert.deepEqual(promoted.data, {
    camera: "cam1",
    before: testBundleSummary("live"),
    after: testBundleSummary("cand"),
  });
  assert.deepEqual(control.calls.at(-1), { method: "promote", args: ["cam1", true], by });
  const retrain = await run("retrain", { camera: "cam2" });
  assert.equal(retrain.status, "ok");
  assert.equal((retrain.data as { by: string }).by, "mqtt:scada-1");
  const refused = await run("discard_candidate", { camera: "cam2" });
  assert.deepEqual(refused, { status: "error", error: "camera cam2 has no candidate" });
  const unknown = await run("rollback", { camera: "cam9" });
  assert.match(JSON.stringify(unknown), /"status":"error","error":"unknown camera \\"cam9\\"/);
});
