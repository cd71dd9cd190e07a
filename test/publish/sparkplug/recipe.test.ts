// The recipe over Sparkplug B (docs/recipes.md): a node metric `Recipe` in every NBIRTH, writable by NCMD through
// the line's control, echoed in NDATA; each camera's `Last/Recipe` names the recipe its last frame was judged under.
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { connect } from "mqtt";
import { get as sparkplugNamespace } from "sparkplug-payload";
import type { UMetric, UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import { createLogger } from "../../../src/core/log.js";
import { NODE_RECIPE, SparkplugNode } from "../../../src/publish/sparkplug/sparkplug.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { MosquittoBroker } from "../../helpers/mosquitto.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

const codec = sparkplugNamespace("spBv1.0")!;

/** The value of metric `name` in a payload, if it has one. */
function metricValue(payload: UPayload, name: string): unknown {
  return payload.metrics?.find((m) => m.name === name)?.value;
}

test("Recipe is a node metric in the NBIRTH; an NCMD Recipe selects through the control and NDATA echoes it; Last/Recipe names each camera's", async () => {
  const broker = await MosquittoBroker.start();
  const dir = await tempDir("stpmd-sparkplug-recipe-");
  const config = testConfig({
    mqtt: { url: broker.url, client_id: "publisher-recipe" },
    sparkplug: {
      enabled: true,
      group_id: "recipes",
      edge_node_id: "node1",
      bdseq_file: path.join(dir, "bdseq"),
      history: { dir: path.join(dir, "history") },
      report_interval_ms: 100,
    },
  });
  const control = new TestLineControl(["cam1"], 0.5);
  const node = new SparkplugNode(
    { sparkplug: config.sparkplug, mqtt: config.mqtt },
    control,
    createLogger("silent"),
  );
  control.interfaces.push(node);
  const host = connect(broker.url, { clientId: "host-recipes" });
  const received: { verb: string; payload: UPayload }[] = [];
  host.on("message", (topic, payload) => {
    const verb = topic.split("/")[2]!;
    if (verb !== "NCMD") received.push({ verb, payload: codec.decodePayload(payload) });
  });
  await new Promise<void>((resolve) => host.once("connect", () => resolve()));
  await host.subscribeAsync("spBv1.0/recipes/#", { qos: 1 });
  await node.start();
  try {
    const nbirth = await waitFor("NBIRTH", () => received.find((m) => m.verb === "NBIRTH"));
    const declared = nbirth.payload.metrics?.find((m) => m.name === NODE_RECIPE);
    assert.deepEqual([declared?.type, declared?.value], ["String", ""], "no recipe in force at birth");

    const ncmd = (value: UMetric["value"], type: UMetric["type"]) =>
      host.publishAsync(
        "spBv1.0/recipes/NCMD/node1",
        Buffer.from(
          codec.encodePayload({ timestamp: Date.now(), metrics: [{ name: NODE_RECIPE, type, value }] }),
        ),
      );
    await ncmd("B", "String");
    const ndata = await waitFor("NDATA with Recipe B", () =>
      received.find((m) => m.verb === "NDATA" && metricValue(m.payload, NODE_RECIPE) === "B"),
    );
    assert.ok(ndata);
    assert.deepEqual(control.calls.at(-1), { method: "selectRecipe", args: ["B"], by: { via: "sparkplug" } });

    control.emit("cam1", 0.9);
    await waitFor("DDATA with Last/Recipe B", () =>
      received.find((m) => m.verb === "DDATA" && metricValue(m.payload, "Last/Recipe") === "B"),
    );

    // a wrong type and an unknown recipe change nothing
    const calls = control.calls.length;
    await ncmd(true, "Boolean");
    await ncmd("nope", "String");
    await waitFor("the refused NCMD reached the control", () => control.calls.length === calls + 1);
    assert.deepEqual(control.calls.at(-1)?.args, ["nope"]);
    assert.equal(control.recipe, "B");
    await ncmd("", "String");
    await waitFor("no recipe", () => control.recipe === null);
  } finally {
    await node.stop();
    await host.endAsync();
    await broker.close();
  }
});
