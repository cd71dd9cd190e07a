// Recipes end to end (docs/recipes.md): the real daemon switches its cameras' bundle and threshold between two
// frames, refuses a recipe whose bundle does not load without changing anything, and a PLC selects a recipe over
// OPC UA between two triggers (issue 23's changeover test).
import assert from "node:assert/strict";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import mqtt from "mqtt";
import type { PartialConfig, StpmdConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { freeLoopbackPort, MosquittoBroker } from "../../src/demo/broker.js";
import { ControlError } from "../../src/publish/control.js";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../src/publish/record-store.js";
import { testConfig } from "../helpers/config.js";
import { noiseFrames, replaySource, trainTinyBundle } from "../helpers/daemon-process.js";
import { Plc } from "../helpers/opcua.js";
import { tempDir } from "../helpers/tiny-data.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");

/** Recipe A judges everything defective, B everything good (noise frames score far above 1e-9, below 1e9). */
const LOW = 1e-9;
const HIGH = 1e9;

interface Line {
  work: string;
  versions: { A: string; B: string };
  config: (partial: PartialConfig) => StpmdConfig;
}

/**
 * Two tiny bundles (A, B; different seeds, so different model versions), a copy of A whose student is damaged
 * (its hash no longer matches: it does not load), noise frames, and configs with recipes A, B and `broken`.
 */
async function line(prefix: string): Promise<Line> {
  const work = await tempDir(prefix);
  const bundleA = path.join(work, "bundle-a");
  const bundleB = path.join(work, "bundle-b");
  const broken = path.join(work, "bundle-broken");
  const versions = {
    A: await trainTinyBundle(work, bundleA, 1),
    B: await trainTinyBundle(work, bundleB, 2),
  };
  cpSync(bundleA, broken, { recursive: true });
  const manifest = JSON.parse(readFileSync(path.join(broken, "manifest.json"), "utf8")) as {
    student: { file: string };
  };
  writeFileSync(path.join(broken, manifest.student.file), "not an onnx model");
  await noiseFrames(path.join(work, "noise"), 4, 64);
  const config = (partial: PartialConfig): StpmdConfig =>
    testConfig({
      model: { bundle: bundleA, watch: false },
      inference: { max_batch: 1, max_wait_ms: 0, queue_size: 8 },
      cameras: [{ id: "cam", source: replaySource(path.join(work, "noise"), 10) }],
      recipes: {
        A: { cam: { bundle: bundleA, threshold: { value: LOW } } },
        B: { cam: { bundle: bundleB, threshold: { value: HIGH } } },
        broken: { cam: { bundle: broken } },
      },
      active_recipe: "A",
      collection: { dir: path.join(work, "frames") },
      health: { watchdog: false },
      ...partial,
    });
  return { work, versions, config };
}

/** Every result judged under the bundle and threshold of the recipe it names. */
function assertJudgedAsNamed(results: InspectionResult[], versions: Line["versions"]): void {
  for (const r of results) {
    const recipe = r.frame.recipe as "A" | "B";
    assert.ok(recipe === "A" || recipe === "B", `result ${r.frame.seq} names recipe ${recipe}`);
    assert.equal(r.modelVersion, versions[recipe], `seq ${r.frame.seq}: bundle of recipe ${recipe}`);
    assert.equal(r.threshold, recipe === "A" ? LOW : HIGH, `seq ${r.frame.seq}: threshold of ${recipe}`);
  }
}

test("a recipe switch changes the bundle and threshold from one frame to the next; a recipe whose bundle does not load is refused and changes nothing; both audited", async () => {
  const { work, versions, config } = await line("stpmd-recipes-daemon-");
  const broker = await MosquittoBroker.start();
  const results: InspectionResult[] = [];
  const daemon = new Daemon(
    config({
      mqtt: { url: broker.url, client_id: "recipes-daemon", outbox: { dir: path.join(work, "outbox") } },
    }),
    logger,
    { hooks: { onResult: (r) => results.push(r) } },
  );
  try {
    await daemon.start();
    await waitFor("frames judged under recipe A", () => results.length >= 3, 30_000);
    assert.equal(daemon.snapshot().recipe, "A");
    assert.deepEqual(daemon.snapshot().recipes, ["A", "B", "broken"]);

    const asked = results.length;
    const change = await daemon.control.selectRecipe("B", { via: "mqtt", user: "operator" });
    assert.deepEqual(change, { old: "A", new: "B" });
    await waitFor(
      "frames judged under recipe B",
      () => results.filter((r) => r.frame.recipe === "B").length >= 3,
      15_000,
    );
    // the switch falls between two frames: by sequence number, every A before every B, and each as it says
    const bySeq = [...results].sort((a, b) => a.frame.seq - b.frame.seq);
    const firstB = bySeq.findIndex((r) => r.frame.recipe === "B");
    assert.ok(firstB >= asked - 1, "no frame captured before the request was judged under B");
    assert.ok(bySeq.slice(0, firstB).every((r) => r.frame.recipe === "A"));
    assert.ok(bySeq.slice(firstB).every((r) => r.frame.recipe === "B"));
    assertJudgedAsNamed(results, versions);
    assert.ok(bySeq.slice(0, firstB).every((r) => r.verdict === "defect"));
    assert.ok(bySeq.slice(firstB).every((r) => r.verdict === "ok"));
    const cam = daemon.snapshot().cameras[0]!;
    assert.equal(cam.recipe, "B");
    assert.equal(cam.last?.recipe, "B", "the snapshot says which recipe judged the camera's last frame");
    assert.equal(cam.model_version, versions.B);
    assert.deepEqual(
      daemon.snapshot().models.map((m) => m.model_version),
      [versions.B],
      "A's bundle is unloaded once no camera uses it",
    );

    // a recipe whose bundle does not load: refused with the reason, the line stays on B
    await assert.rejects(
      daemon.control.selectRecipe("broken", { via: "http", user: "operator" }),
      (err: unknown) =>
        err instanceof ControlError &&
        /^recipe "broken" refused: camera "cam": its bundle .*bundle-broken does not load/.test(err.message),
    );
    await assert.rejects(
      daemon.control.selectRecipe("C", { via: "http" }),
      /unknown recipe "C" \(known: A, B, broken\)/,
    );
    const mark = results.length;
    await waitFor("more frames", () => results.length >= mark + 3, 15_000);
    assert.equal(daemon.snapshot().recipe, "B");
    assert.ok(results.slice(mark).every((r) => r.frame.recipe === "B" && r.modelVersion === versions.B));
    assertJudgedAsNamed(results, versions);

    const { entries } = await daemon.audit.query({ action: "select_recipe", limit: 10 });
    const summary = entries
      .reverse()
      .map((e) => ({ outcome: e.outcome, via: e.via, before: e.before, after: e.after }));
    assert.deepEqual(summary, [
      {
        outcome: "ok",
        via: "mqtt",
        before: { recipe: "A" },
        after: { recipe: "B", loaded: [path.join(work, "bundle-b")] },
      },
      { outcome: "refused", via: "http", before: { recipe: "B" }, after: { recipe: "broken" } },
      { outcome: "refused", via: "http", before: { recipe: "B" }, after: { recipe: "C" } },
    ]);
  } finally {
    await daemon.stop();
    await broker.stop();
  }
  // the part record names each frame's recipe (records v3)
  const db = openRecordsDb(path.join(work, "records", RECORDS_DB), { readonly: true });
  try {
    const rows = [...iterateRecords(db, {})];
    assert.equal(rows.length, results.length);
    assert.deepEqual(
      new Set(rows.map((r) => `${r.recipe} ${r.model_version}`)),
      new Set([`A ${versions.A}`, `B ${versions.B}`]),
    );
  } finally {
    db.close();
  }
});

test("PLC changeover over OPC UA: the PLC selects recipe B between two triggers, and the second answer is judged under B's bundle and threshold and says so (as do the MQTT results)", async () => {
  const { work, versions, config } = await line("stpmd-recipes-plc-");
  const broker = await MosquittoBroker.start();
  const port = await freeLoopbackPort();
  const results = new Map<string, InspectionResult>();
  const daemon = new Daemon(
    config({
      mqtt: {
        url: broker.url,
        client_id: "recipes-plc",
        prefix: "plc",
        snapshot: "none",
        outbox: { dir: path.join(work, "outbox") },
      },
      opcua: {
        enabled: true,
        port,
        bind: "127.0.0.1",
        hostname: "localhost",
        allow_anonymous: true,
        security: { policies: ["None"], modes: ["None"] },
        pki_dir: path.join(work, "pki"),
      },
    }),
    logger,
    { hooks: { onResult: (r) => r.frame.partId !== undefined && results.set(r.frame.partId, r) } },
  );
  const sub = mqtt.connect(broker.url, { clientId: "recipes-plc-sub" });
  await new Promise<void>((resolve) => sub.on("connect", () => resolve()));
  const payloads = new Map<string, { recipe?: string; threshold: number }>();
  sub.on("message", (_topic, payload) => {
    const r = JSON.parse(payload.toString()) as { part_id?: string; recipe?: string; threshold: number };
    if (r.part_id) payloads.set(r.part_id, r);
  });
  await sub.subscribeAsync("plc/cam/result", { qos: 1 });
  let plc: Plc | undefined;
  try {
    await daemon.start();
    plc = await Plc.connect({ dir: work, endpoint: `opc.tcp://localhost:${port}` }, { anonymous: true });
    assert.equal(await plc.read("Recipe"), "A");

    assert.equal((await plc.trigger("cam", "P-1")).name, "Good");
    const first = await plc.takeResult("cam", 0, 15_000);
    assert.deepEqual([first.partId, first.recipe, first.threshold, first.ng], ["P-1", "A", LOW, true]);

    // a recipe that does not load: the answer is an error with the reason, and the line stays on A
    const refused = await plc.selectRecipe("broken");
    assert.equal(refused.error, true);
    assert.match(refused.message, /recipe "broken" refused: camera "cam": its bundle .* does not load/);
    assert.equal(await plc.read("Recipe"), "A");

    const answer = await plc.selectRecipe("B");
    assert.deepEqual(answer, { error: false, message: "" });
    assert.equal(await plc.read("Recipe"), "B");

    assert.equal((await plc.trigger("cam", "P-2")).name, "Good");
    const second = await plc.takeResult("cam", 0, 15_000);
    assert.deepEqual([second.partId, second.recipe, second.threshold, second.ok], ["P-2", "B", HIGH, true]);
    assert.equal(results.get("P-1")?.modelVersion, versions.A);
    assert.equal(results.get("P-2")?.modelVersion, versions.B, "the second part is judged by B's bundle");

    // the method does the same in one call, and answers the recipe before
    const call = await plc.call("SelectRecipe", [{ dataType: 12 /* String */, value: "A" }]);
    assert.equal(call.statusCode.name, "Good", call.statusCode.toString());
    assert.equal(call.outputArguments?.[0]?.value, "B");
    assert.equal((await plc.trigger("cam", "P-3")).name, "Good");
    const third = await plc.takeResult("cam", 0, 15_000);
    assert.deepEqual([third.recipe, third.threshold], ["A", LOW]);

    await waitFor("the MQTT results of the three parts", () => (payloads.size >= 3 ? payloads : undefined));
    assert.deepEqual(
      ["P-1", "P-2", "P-3"].map((p) => [payloads.get(p)?.recipe, payloads.get(p)?.threshold]),
      [
        ["A", LOW],
        ["B", HIGH],
        ["A", LOW],
      ],
    );
  } finally {
    await plc?.close();
    await daemon.stop();
    sub.end(true);
    await broker.stop();
  }
});

test("the daemon starts under active_recipe: its bundles are the ones loaded, and the first results name it", async () => {
  const { work, versions, config } = await line("stpmd-recipes-start-");
  const broker = await MosquittoBroker.start();
  const results: InspectionResult[] = [];
  const daemon = new Daemon(
    config({
      active_recipe: "B",
      mqtt: { url: broker.url, client_id: "recipes-start", outbox: { dir: path.join(work, "outbox") } },
    }),
    logger,
    { hooks: { onResult: (r) => results.push(r) } },
  );
  try {
    await daemon.start();
    await waitFor("frames judged", () => results.length >= 2, 30_000);
    assertJudgedAsNamed(results, versions);
    assert.ok(results.every((r) => r.frame.recipe === "B"));
    assert.deepEqual(
      daemon.snapshot().models.map((m) => m.model_version),
      [versions.B],
      "only B's bundle is loaded, not model.bundle (A's)",
    );
  } finally {
    await daemon.stop();
    await broker.stop();
  }
});
