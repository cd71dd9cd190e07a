import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { DataType, VariableIds, VariantArrayType } from "node-opcua-client";
import { createLogger } from "../../../src/core/log.js";
import type { CandidateView } from "../../../src/publish/candidates.js";
import { ControlError } from "../../../src/publish/control.js";
import { MAX_PART_ID_LENGTH } from "../../../src/publish/opcua/opcua.js";
import { opcuaSink } from "../../../src/publish/opcua/sink.js";
import { defectEventId } from "../../../src/publish/topics.js";
import { testConfig } from "../../helpers/config.js";
import { TestLineControl, testBundleSummary } from "../../helpers/line-control.js";
import { freePort, Plc, startTestServer, type TestServer } from "../../helpers/opcua.js";
import { testSinkContext } from "../../helpers/sink-context.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

describe("OPC UA server with a real node-opcua client", () => {
  let server: TestServer;
  let plc: Plc;

  before(async () => {
    server = await startTestServer(
      {
        result_queue: 10,
        trigger_timeout_ms: 400,
        security: {
          policies: ["None", "Basic256Sha256"],
          modes: ["None", "SignAndEncrypt"],
          accept_unknown_certificates: true,
        },
      },
      ["cam1", "cam2", "cam3", "cam4", "cam5"],
    );
    plc = await Plc.connect(server);
  });

  after(async () => {
    await plc?.close();
    await server?.stop();
  });

  test("a trigger tags the next frame with PartId; its verdict comes back with the same part id", async () => {
    const { control } = server;
    assert.equal(await plc.read("cam1.TriggerReady"), true);
    assert.ok((await plc.trigger("cam1", "P-0001")).isGood());
    const call = control.calls.find((c) => c.method === "trigger");
    assert.deepEqual(call, {
      method: "trigger",
      args: ["cam1", "P-0001"],
      by: { via: "opcua", user: "plc" },
    });

    const good = control.emit("cam1", 0.2);
    assert.equal(good.frame.partId, "P-0001");
    const first = await plc.takeResult("cam1");
    assert.deepEqual(first, {
      partId: "P-0001",
      ok: true,
      ng: false,
      score: 0.2,
      threshold: 0.5,
      regions: 0,
      eventId: "",
      counter: 1,
      error: false,
      errorCode: 0,
      recipe: "",
    });

    assert.ok((await plc.trigger("cam1", "P-0002")).isGood());
    const bad = control.emit("cam1", 0.9);
    const second = await plc.takeResult("cam1");
    assert.equal(second.partId, "P-0002");
    assert.equal(second.ng, true);
    assert.equal(second.ok, false);
    assert.equal(second.regions, 1);
    assert.equal(second.eventId, defectEventId(bad));
    assert.equal(second.counter, 2);

    // An untriggered frame (free run) is not part of the handshake.
    control.emit("cam1", 0.9);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(await plc.read("cam1.ResultsReady"), false);
    assert.equal(await plc.read("cam1.ResultCounter"), 2);
  });

  test("ten triggers with a slow ack: ten results in order, none lost; an eleventh past result_queue is refused", async () => {
    const { control } = server;
    for (let i = 0; i < 10; i++) {
      assert.ok((await plc.trigger("cam2", `Q-${i}`)).isGood(), `trigger ${i}`);
      control.emit("cam2", i % 3 === 0 ? 0.9 : 0.1);
    }
    assert.equal(await plc.read("cam2.QueuedResults"), 9, "one presented, nine queued behind it");
    assert.equal(await plc.read("cam2.TriggerReady"), false, "result_queue (10) outstanding");
    const refused = await plc.trigger("cam2", "Q-overflow");
    assert.equal(refused.name, "BadResourceUnavailable");
    assert.equal(await plc.read("cam2.TriggersRefused"), 1);
    assert.equal(
      control.pendingTriggers.get("cam2")?.length ?? 0,
      0,
      "the refused trigger never reached the control",
    );

    const results = [];
    for (let i = 0; i < 10; i++) results.push(await plc.takeResult("cam2", 40));
    assert.deepEqual(
      results.map((r) => r.partId),
      Array.from({ length: 10 }, (_, i) => `Q-${i}`),
    );
    assert.deepEqual(
      results.map((r) => r.ng),
      Array.from({ length: 10 }, (_, i) => i % 3 === 0),
    );
    assert.deepEqual(
      results.map((r) => r.counter),
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
    assert.equal(await plc.read("cam2.QueuedResults"), 0);
    assert.equal(await plc.read("cam2.TriggerReady"), true);
  });

  test("the next result waits until the PLC lowers ResultsAck (four-phase handshake)", async () => {
    const { control } = server;
    await plc.trigger("cam3", "A");
    control.emit("cam3", 0.1);
    await plc.trigger("cam3", "B");
    control.emit("cam3", 0.1);
    await waitFor("ResultsReady", async () => (await plc.read("cam3.ResultsReady")) === true);
    assert.equal(await plc.read("cam3.ResultPartId"), "A");
    assert.ok((await plc.write("cam3.ResultsAck", DataType.Boolean, true)).isGood());
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(await plc.read("cam3.ResultsReady"), false, "held low while ResultsAck is high");
    assert.equal(await plc.read("cam3.ResultPartId"), "A");
    assert.ok((await plc.write("cam3.ResultsAck", DataType.Boolean, false)).isGood());
    assert.equal(await plc.read("cam3.ResultsReady"), true);
    assert.equal(await plc.read("cam3.ResultPartId"), "B");
    await plc.takeResult("cam3");
  });

  test("SetThreshold changes the next verdict, and the control hears who asked", async () => {
    const { control } = server;
    await plc.trigger("cam4", "T-1");
    control.emit("cam4", 0.6);
    assert.equal((await plc.takeResult("cam4")).ng, true, "0.6 > 0.5");

    const result = await plc.call("SetThreshold", [
      { dataType: DataType.String, value: "cam4" },
      { dataType: DataType.Double, value: 0.8 },
    ]);
    assert.equal(result.statusCode.name, "Good");
    assert.equal(result.outputArguments?.[0]?.value, 0.5, "the previous threshold");
    assert.deepEqual(control.calls.at(-1), {
      method: "setThreshold",
      args: ["cam4", { value: 0.8 }],
      by: { via: "opcua", user: "plc" },
    });

    await plc.trigger("cam4", "T-2");
    control.emit("cam4", 0.6);
    const next = await plc.takeResult("cam4");
    assert.equal(next.ok, true, "0.6 <= 0.8");
    assert.equal(next.threshold, 0.8);
  });

  test("wrong types, unknown cameras and out-of-range values get a Bad status and change nothing", async () => {
    const { control } = server;
    const before = JSON.stringify(control.snapshot().cameras);
    const callsBefore = control.calls.length;

    assert.equal((await plc.write("cam5.Trigger", DataType.String, "yes")).name, "BadTypeMismatch");
    assert.equal((await plc.write("cam5.ResultsAck", DataType.Double, 1)).name, "BadTypeMismatch");
    assert.equal((await plc.write("cam5.PartId", DataType.Int32, 7)).name, "BadTypeMismatch");
    assert.equal((await plc.write("cam5.ResultsAck", DataType.Boolean, true)).name, "BadInvalidState");
    assert.equal((await plc.write("cam5.Score", DataType.Double, 0.1)).name, "BadNotWritable");
    assert.equal((await plc.write("cam5.TriggerReady", DataType.Boolean, true)).name, "BadNotWritable");
    assert.equal((await plc.write("Fps", DataType.Double, 1)).name, "BadNotWritable");
    assert.equal(await plc.read("cam5.Trigger"), false);
    assert.equal(await plc.read("cam5.ResultsAck"), false);

    const unknown = await plc.call("SetThreshold", [
      { dataType: DataType.String, value: "nope" },
      { dataType: DataType.Double, value: 0.8 },
    ]);
    assert.equal(unknown.statusCode.name, "BadInvalidArgument");
    const negative = await plc.call("SetThreshold", [
      { dataType: DataType.String, value: "cam5" },
      { dataType: DataType.Double, value: -1 },
    ]);
    assert.equal(negative.statusCode.name, "BadOutOfRange");
    const wrongType = await plc.call("SetThreshold", [
      { dataType: DataType.String, value: "cam5" },
      { dataType: DataType.String, value: "0.8" },
    ]);
    assert.ok(wrongType.statusCode.isNotGood(), `wrong type: ${wrongType.statusCode.name}`);
    const missing = await plc.call("EnableCamera", [{ dataType: DataType.String, value: "cam5" }]);
    assert.ok(missing.statusCode.isNotGood(), `missing argument: ${missing.statusCode.name}`);
    const enableUnknown = await plc.call("EnableCamera", [
      { dataType: DataType.String, value: "nope" },
      { dataType: DataType.Boolean, value: false },
    ]);
    assert.equal(enableUnknown.statusCode.name, "BadInvalidArgument");

    assert.equal(JSON.stringify(control.snapshot().cameras), before, "no camera state changed");
    assert.equal(control.calls.length, callsBefore, "nothing reached the control");
    assert.equal(await plc.read("cam5.ResultCounter"), 0);

    // The control's refusals come back as Bad statuses, and the server lives on.
    const original = { reload: control.reload, enableCamera: control.enableCamera };
    control.reload = async () => ({
      configApplied: false,
      problems: ["mqtt.url: bad"],
      swapped: [],
      failed: [],
    });
    control.enableCamera = async () => {
      throw new ControlError('camera "cam5" cannot be disabled: it is the last one');
    };
    assert.equal((await plc.call("ReloadModel", [])).statusCode.name, "BadConfigurationError");
    const refusedByControl = await plc.call("EnableCamera", [
      { dataType: DataType.String, value: "cam5" },
      { dataType: DataType.Boolean, value: false },
    ]);
    assert.equal(refusedByControl.statusCode.name, "BadInvalidArgument");
    Object.assign(control, original);
    assert.equal((await plc.call("ReloadModel", [])).statusCode.name, "Good");
    const disable = await plc.call("EnableCamera", [
      { dataType: DataType.String, value: "cam5" },
      { dataType: DataType.Boolean, value: false },
    ]);
    assert.equal(disable.statusCode.name, "Good");
    assert.equal(await plc.read("cam5.TriggerReady"), false);
    assert.equal((await plc.trigger("cam5", "X")).name, "BadInvalidState", "camera disabled");
    assert.equal(control.pendingTriggers.get("cam5")?.length ?? 0, 0);
    await plc.call("EnableCamera", [
      { dataType: DataType.String, value: "cam5" },
      { dataType: DataType.Boolean, value: true },
    ]);
    assert.equal(await plc.read("cam5.TriggerReady"), true);
  });

  test("an array written to a writable node or an over-long part id gets a Bad status and triggers nothing", async () => {
    const { control } = server;
    const triggers = () => control.calls.filter((c) => c.method === "trigger").length;
    const triggersBefore = triggers();
    const writeArray = (name: string, dataType: DataType, value: unknown[]) =>
      plc.session.write({
        nodeId: plc.nodeId(name),
        attributeId: 13,
        value: { value: { dataType, arrayType: VariantArrayType.Array, value } },
      });
    assert.equal((await plc.write("cam2.PartId", DataType.String, "P-kept")).name, "Good");

    assert.equal((await writeArray("cam2.Trigger", DataType.Boolean, [true])).name, "BadTypeMismatch");
    assert.equal((await writeArray("cam2.Trigger", DataType.Boolean, [])).name, "BadTypeMismatch");
    assert.equal((await writeArray("cam2.ResultsAck", DataType.Boolean, [true])).name, "BadTypeMismatch");
    assert.equal((await writeArray("cam2.PartId", DataType.String, ["A", "B"])).name, "BadTypeMismatch");
    const mebibyte = "x".repeat(1 << 20);
    assert.equal((await plc.write("cam2.PartId", DataType.String, mebibyte)).name, "BadOutOfRange");
    const justOver = "y".repeat(MAX_PART_ID_LENGTH + 1);
    assert.equal((await plc.write("cam2.PartId", DataType.String, justOver)).name, "BadOutOfRange");

    assert.equal(await plc.read("cam2.PartId"), "P-kept", "the refused part ids changed nothing");
    assert.equal(await plc.read("cam2.Trigger"), false);
    assert.equal(await plc.read("cam2.ResultsReady"), false);
    assert.equal(triggers(), triggersBefore, "no trigger reached the control");
    assert.equal(control.pendingTriggers.get("cam2")?.length ?? 0, 0);

    // the longest part id allowed is taken, and its verdict carries it whole
    const longest = "P".repeat(MAX_PART_ID_LENGTH);
    assert.equal((await plc.trigger("cam2", longest)).name, "Good");
    assert.equal(control.emit("cam2", 0.2).frame.partId, longest);
    assert.equal((await plc.takeResult("cam2")).partId, longest);
  });

  test("a trigger without a result within trigger_timeout_ms is answered with Error/ErrorCode 1", async () => {
    const { control } = server;
    const before = Date.now();
    await plc.trigger("cam1", "LOST-1");
    const answer = await plc.takeResult("cam1", 0, 3000);
    const waited = Date.now() - before;
    assert.ok(waited >= 400, `answered after ${waited} ms, before the 400 ms timeout`);
    assert.deepEqual(
      {
        partId: answer.partId,
        ok: answer.ok,
        ng: answer.ng,
        error: answer.error,
        errorCode: answer.errorCode,
      },
      { partId: "LOST-1", ok: false, ng: false, error: true, errorCode: 1 },
    );
    // The frame turns up late: counted, not presented (the PLC has its answer for that part).
    control.emit("cam1", 0.1);
    await waitFor("LateResults", async () => (await plc.read("cam1.LateResults")) === 1, 2000);
    assert.equal(await plc.read("cam1.ResultsReady"), false);
    // The next trigger's verdict clears the error.
    await plc.trigger("cam1", "P-next");
    control.emit("cam1", 0.1);
    const next = await plc.takeResult("cam1");
    assert.equal(next.partId, "P-next");
    assert.equal(next.error, false);
    assert.equal(next.errorCode, 0);
  });

  test("a frame the model could not judge (NaN score) is answered with Error/ErrorCode 2, neither OK nor NG", async () => {
    const { control } = server;
    await plc.trigger("cam1", "NAN-1");
    assert.equal(control.emit("cam1", Number.NaN).verdict, "error");
    const answer = await plc.takeResult("cam1");
    assert.deepEqual(
      {
        partId: answer.partId,
        ok: answer.ok,
        ng: answer.ng,
        error: answer.error,
        errorCode: answer.errorCode,
      },
      { partId: "NAN-1", ok: false, ng: false, error: true, errorCode: 2 },
    );
    assert.ok(Number.isNaN(answer.score));
  });

  test("wrong password, unknown user and anonymous are refused", async () => {
    await assert.rejects(
      Plc.connect(server, { password: "wrong" }),
      /BadUserAccessDenied|BadIdentityTokenRejected/,
    );
    await assert.rejects(
      Plc.connect(server, { user: "intruder" }),
      /BadUserAccessDenied|BadIdentityTokenRejected/,
    );
    // The endpoints do not even offer an anonymous token policy, so the client gives up before asking.
    await assert.rejects(Plc.connect(server, { anonymous: true }), /ANONYMOUS user token policy/);
  });

  test("Basic256Sha256 SignAndEncrypt works; the certificate store was created on first start", async () => {
    const pki = server.config.pki_dir;
    assert.ok(existsSync(path.join(pki, "own", "certs")), "own/certs");
    assert.ok(readdirSync(path.join(pki, "own", "certs")).some((f) => f.endsWith(".pem")));
    const secure = await Plc.connect(server, { secure: true });
    try {
      assert.equal(await secure.read("cam1.TriggerReady"), true);
      assert.equal(await secure.read("ModelVersion"), "20261201T000000Z");
    } finally {
      await secure.close();
    }
  });

  test("BuildInfo names stpmd: product, package.json's version, the build's date, manufacturer", async () => {
    const dataValue = await plc.session.read({ nodeId: VariableIds.Server_ServerStatus_BuildInfo });
    assert.ok(dataValue.statusCode.isGood(), dataValue.statusCode.toString());
    // node-opcua decodes the structure into a BuildInfo object with these fields
    const info = dataValue.value.value as {
      productName: string;
      productUri: string;
      manufacturerName: string;
      softwareVersion: string;
      buildNumber: string;
      buildDate: Date;
    };
    const { version } = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };
    // the date of the build that runs: when tsc wrote the module (dist/src/core/build-info.js)
    const built = statSync(fileURLToPath(new URL("../../../src/core/build-info.js", import.meta.url))).mtime;
    assert.equal(info.productName, "stpmd");
    assert.equal(info.productUri, "urn:stpmd");
    assert.equal(info.manufacturerName, "stpmd contributors");
    assert.equal(info.softwareVersion, version);
    assert.equal(info.buildDate.getTime(), built.getTime());
    assert.equal(
      info.buildNumber,
      built
        .toISOString()
        .replace(/[-:]/g, "")
        .replace(/\.\d+Z$/, "Z"),
    );
    // the components a client may read one by one say the same
    const softwareVersion = await plc.session.read({
      nodeId: VariableIds.Server_ServerStatus_BuildInfo_SoftwareVersion,
    });
    assert.equal(softwareVersion.value.value, version);
  });

  test("SelectRecipe and the RecipeRequest handshake go through the control; the next answer names the recipe; refusals say why", async () => {
    const { control } = server;
    assert.equal(await plc.read("Recipe"), "");
    const call = await plc.call("SelectRecipe", [{ dataType: DataType.String, value: "B" }]);
    assert.equal(call.statusCode.name, "Good", call.statusCode.toString());
    assert.equal(call.outputArguments?.[0]?.value, "", "no recipe before");
    assert.deepEqual(control.calls.at(-1), {
      method: "selectRecipe",
      args: ["B"],
      by: { via: "opcua", user: "plc" },
    });
    assert.equal(await plc.read("Recipe"), "B");
    await plc.trigger("cam5", "R-1");
    control.emit("cam5", 1);
    const answer = await plc.takeResult("cam5");
    assert.deepEqual([answer.recipe, answer.threshold, answer.ok], ["B", 2, true]);

    // the handshake: a refusal comes back in RecipeError/RecipeMessage, and nothing changed
    assert.deepEqual(await plc.selectRecipe("nope"), {
      error: true,
      message: 'unknown recipe "nope" (known: A, B)',
    });
    assert.equal(control.recipe, "B");
    assert.deepEqual(await plc.selectRecipe("A"), { error: false, message: "" });
    assert.equal(control.recipe, "A");
    assert.equal(control.calls.at(-1)?.by.user, "plc");
    assert.deepEqual(await plc.selectRecipe(""), { error: false, message: "" }, "empty: no recipe");
    assert.equal(control.recipe, null);

    const wrongType = await plc.call("SelectRecipe", [{ dataType: DataType.Int32, value: 1 }]);
    assert.equal(wrongType.statusCode.name, "BadInvalidArgument");
    const array = await plc.session.write({
      nodeId: plc.nodeId("RecipeRequest"),
      attributeId: 13,
      value: { value: { dataType: DataType.String, arrayType: VariantArrayType.Array, value: ["A", "B"] } },
    });
    assert.equal(array.name, "BadTypeMismatch");
    assert.equal(control.recipe, null);
  });
});

describe("OPC UA certificate trust", () => {
  test("an unknown client certificate is refused and kept in rejected/ until an operator trusts it", async () => {
    const server = await startTestServer({
      security: {
        policies: ["Basic256Sha256"],
        modes: ["SignAndEncrypt"],
        accept_unknown_certificates: false,
      },
    });
    try {
      await assert.rejects(Plc.connect(server, { secure: true }));
      const rejected = path.join(server.config.pki_dir, "rejected");
      assert.ok(readdirSync(rejected).length > 0, "the client's certificate is in rejected/");
    } finally {
      await server.stop();
    }
  });
});

describe("the OPC UA sink", () => {
  test("is built only when opcua.enabled, loads the server on start and forwards results", async () => {
    const dir = await tempDir("stpmd-opcua-wiring-");
    const control = new TestLineControl(["cam1"]);
    const logger = createLogger("silent");
    assert.equal(opcuaSink.create(testSinkContext(testConfig(), control, logger)), undefined);
    const port = await freePort();
    const config = testConfig({
      opcua: {
        enabled: true,
        port,
        bind: "127.0.0.1",
        hostname: "localhost",
        allow_anonymous: true,
        security: { policies: ["None"], modes: ["None"] },
        pki_dir: path.join(dir, "pki"),
      },
    });
    const sink = opcuaSink.create(testSinkContext(config, control, logger))!;
    assert.equal(sink.name, "opcua");
    assert.deepEqual(sink.health(), { ok: false, detail: "not started" });
    control.interfaces.push({
      onResult: (result) => sink.deliver({ results: [result], inferenceMs: 1, manifest: undefined }),
    });
    await sink.start();
    let plc: Plc | undefined;
    try {
      assert.deepEqual(sink.health(), { ok: true, connection: { sessions: 0 } });
      const server = { dir, endpoint: `opc.tcp://localhost:${port}` } as TestServer;
      plc = await Plc.connect(server, { anonymous: true });
      assert.deepEqual(sink.health().connection, { sessions: 1 }, "the PLC's session is counted");
      assert.ok((await plc.trigger("cam1", "W-1")).isGood());
      assert.deepEqual(control.calls[0]?.by, { via: "opcua" }, "anonymous: no user");
      control.emit("cam1", 0.1);
      assert.equal((await plc.takeResult("cam1")).partId, "W-1");
      await plc.close();
      plc = undefined;
      await waitFor("the closed session to leave the count", () => sink.health().connection?.sessions === 0);
    } finally {
      await plc?.close();
      await sink.stop();
    }
  });

  test("prepared while the models load: certificates made, port not open; a stop without a start releases it", async () => {
    const dir = await tempDir("stpmd-opcua-prepare-");
    const port = await freePort();
    const config = testConfig({
      opcua: {
        enabled: true,
        port,
        bind: "127.0.0.1",
        allow_anonymous: true,
        pki_dir: path.join(dir, "pki"),
      },
    });
    const sink = opcuaSink.create(
      testSinkContext(config, new TestLineControl(["cam1"]), createLogger("silent")),
    )!;
    await sink.prepare!();
    assert.ok(existsSync(path.join(dir, "pki", "own", "certs", "certificate.pem")), "certificate made");
    assert.ok(existsSync(path.join(dir, "pki", "own", "private", "private_key.pem")), "key made");
    assert.equal(await portAccepts(port), false, "not listening before start()");
    assert.deepEqual(sink.health(), { ok: false, detail: "not started" });
    await sink.stop();
    assert.equal(await portAccepts(port), false);
  });
});

/** Whether a TCP connect to the loopback `port` succeeds now. */
function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A camera's candidate view as the daemon's control gives it: a live model, a candidate in shadow, a previous one. */
function candidateView(camera: string): CandidateView {
  return {
    camera,
    live: testBundleSummary("20261201T000000Z"),
    candidate: testBundleSummary("20261206T120000Z"),
    job: {
      camera,
      state: "running",
      started_at: "2026-12-06T11:00:00.000Z",
      by: "opcua:plc",
      epoch: 3,
      epochs: 20,
      loss: 0.4,
      val_score: 0.2,
      eta_s: 120,
      frames: 80,
    },
    shadow: {
      state: "running",
      started_at: "2026-12-06T12:00:00.000Z",
      share: 0.5,
      frames: 41,
      max_frames: 1000,
      ends_at: "2026-12-07T12:00:00.000Z",
      dropped: 0,
      live_alarms: 2,
      candidate_alarms: 1,
      disagreements: 1,
    },
    previous: testBundleSummary("20261101T000000Z"),
  };
}

describe("a camera's Model folder: the candidate loop over OPC UA", () => {
  let server: TestServer;
  let plc: Plc;

  before(async () => {
    // anonymous allowed on this server, so that its refusal is the Model methods' own
    server = await startTestServer({
      allow_anonymous: true,
      security: {
        policies: ["None", "Basic256Sha256"],
        modes: ["None", "SignAndEncrypt"],
        accept_unknown_certificates: true,
      },
    });
    plc = await Plc.connect(server);
  });

  after(async () => {
    await plc?.close();
    await server?.stop();
  });

  /** Calls `<camera>/Model/<method>` asking for the result's diagnostic text (the refusal's reason). */
  async function callModel(
    client: Plc,
    camera: string,
    method: string,
    inputArguments: { dataType: DataType; value: unknown }[] = [],
  ): Promise<{ status: string; text: string | null; outputs: unknown[] }> {
    const { results, diagnosticStrings } = await client.session.callWithDiagnostics(
      [
        {
          objectId: client.nodeId(`${camera}.Model`),
          methodId: client.nodeId(`${camera}.Model.${method}`),
          inputArguments,
        },
      ],
      0x40,
    );
    const result = results[0]!;
    return {
      status: result.statusCode.name,
      text: diagnosticStrings[0]?.localizedText ?? null,
      outputs: (result.outputArguments ?? []).map((v) => v.value as unknown),
    };
  }

  const MODEL_VARIABLES = [
    "LiveVersion",
    "CandidateVersion",
    "JobState",
    "JobEpoch",
    "JobEpochs",
    "ShadowFrames",
    "ShadowState",
  ];
  const readModel = async (camera: string) =>
    Object.fromEntries(
      await Promise.all(
        MODEL_VARIABLES.map(async (name) => [name, await plc.read(`${camera}.Model.${name}`)] as const),
      ),
    );

  test("each method reaches the control in the session user's name; Promote passes Force and answers both versions", async () => {
    const { control } = server;
    control.candidateViews = [candidateView("cam1")];
    const plcUser = { via: "opcua", user: "plc" };
    const cases: [string, { dataType: DataType; value: unknown }[], string, unknown[]][] = [
      ["Retrain", [], "startRetrain", ["cam1"]],
      ["CancelRetrain", [], "cancelRetrain", ["cam1"]],
      ["StartShadow", [], "setShadow", ["cam1", true]],
      ["StopShadow", [], "setShadow", ["cam1", false]],
      ["Promote", [{ dataType: DataType.Boolean, value: false }], "promote", ["cam1", false]],
      ["Promote", [{ dataType: DataType.Boolean, value: true }], "promote", ["cam1", true]],
      ["Rollback", [], "rollback", ["cam1"]],
      ["Discard", [], "discardCandidate", ["cam1"]],
    ];
    for (const [method, inputs, controlMethod, args] of cases) {
      const before = control.calls.length;
      const answer = await callModel(plc, "cam1", method, inputs);
      assert.equal(answer.status, "Good", `${method}: ${answer.text}`);
      assert.equal(control.calls.length, before + 1, `${method}: one call to the control`);
      assert.deepEqual(control.calls.at(-1), { method: controlMethod, args, by: plcUser }, method);
    }
    // the test control promotes the candidate over the live model and rolls back to the previous one
    const promoted = await callModel(plc, "cam1", "Promote", [{ dataType: DataType.Boolean, value: false }]);
    assert.deepEqual(promoted.outputs, ["20261206T120000Z", "20261201T000000Z"]);
    const rolledBack = await callModel(plc, "cam1", "Rollback");
    assert.deepEqual(rolledBack.outputs, ["20261101T000000Z", "20261201T000000Z"]);
  });

  test("a refusal is a Bad status carrying the control's reason; bad arguments and anonymous sessions never reach it", async () => {
    const { control } = server;
    control.candidateViews = [{ ...candidateView("cam1"), job: null }];
    const calls = control.calls.length;
    assert.deepEqual(await callModel(plc, "cam2", "Promote", [{ dataType: DataType.Boolean, value: true }]), {
      status: "BadInvalidArgument",
      text: "camera cam2 has no candidate",
      outputs: [],
    });
    assert.deepEqual(await callModel(plc, "cam1", "CancelRetrain"), {
      status: "BadInvalidArgument",
      text: "no retrain job is running for camera cam1",
      outputs: [],
    });
    assert.equal(control.calls.length, calls + 2, "both refusals came from the control");

    const missing = await callModel(plc, "cam1", "Promote");
    assert.equal(missing.status, "BadArgumentsMissing", "Promote without Force");
    const wrongType = await callModel(plc, "cam1", "Promote", [{ dataType: DataType.String, value: "yes" }]);
    assert.equal(wrongType.status, "BadInvalidArgument", "Force as a String (node-opcua checks the type)");

    const anonymous = await Plc.connect(server, { anonymous: true });
    try {
      for (const method of ["Retrain", "Rollback", "Discard"]) {
        const answer = await callModel(anonymous, "cam1", method);
        assert.equal(answer.status, "BadUserAccessDenied", method);
        assert.match(answer.text ?? "", /needs a user/);
      }
      // reading is open to every session, as the rest of the view
      assert.equal(await anonymous.read("cam1.Model.CandidateVersion"), "20261206T120000Z");
    } finally {
      await anonymous.close();
    }
    assert.equal(
      control.calls.length,
      calls + 2,
      "neither the bad arguments nor the anonymous calls reached it",
    );
  });

  /** cam1's Model variables as candidateView("cam1") makes them. */
  const CAM1_MODEL = {
    LiveVersion: "20261201T000000Z",
    CandidateVersion: "20261206T120000Z",
    JobState: "running",
    JobEpoch: 3,
    JobEpochs: 20,
    ShadowFrames: 41,
    ShadowState: "running",
  };

  test("the variables follow the control's candidates(); a camera without a view reads empty", async () => {
    const { control } = server;
    const view = candidateView("cam1");
    control.candidateViews = [{ ...view, shadow: null }];
    // read (once an earlier test's views have left the cache): the views are now cached for 200 ms
    await waitFor("no shadow", async () => (await plc.read("cam1.Model.ShadowState")) === "");
    control.candidateViews = [view];
    // a method's answer clears the cache: what it changed reads at once, not a cache period later
    assert.equal((await callModel(plc, "cam1", "StartShadow")).status, "Good");
    assert.deepEqual(await readModel("cam1"), CAM1_MODEL);
    assert.deepEqual(await readModel("cam2"), {
      LiveVersion: "",
      CandidateVersion: "",
      JobState: "",
      JobEpoch: 0,
      JobEpochs: 0,
      ShadowFrames: 0,
      ShadowState: "",
    });

    // the job ends and the shadow stops elsewhere (another interface, the job's child): seen within the cache period
    control.candidateViews = [
      {
        ...view,
        candidate: { ...view.candidate!, model_version: "20261206T130000Z" },
        job: { ...view.job!, state: "done", epoch: 17 },
        shadow: { ...view.shadow!, state: "stopped", frames: 1000 },
      },
    ];
    await waitFor("the Model variables to follow candidates()", async () => {
      const now = await readModel("cam1");
      return now.JobState === "done" ? now : undefined;
    });
    assert.deepEqual(await readModel("cam1"), {
      LiveVersion: "20261201T000000Z",
      CandidateVersion: "20261206T130000Z",
      JobState: "done",
      JobEpoch: 17,
      JobEpochs: 20,
      ShadowFrames: 1000,
      ShadowState: "stopped",
    });
    const written = await plc.write("cam1.Model.JobState", DataType.String, "running");
    assert.equal(written.name, "BadNotWritable");
  });

  test("candidates() failing keeps the last views: the variables read Good with what they read before", async () => {
    const { control } = server;
    control.candidateViews = [candidateView("cam1")];
    await waitFor("the fresh views", async () => (await plc.read("cam1.Model.JobEpoch")) === 3);
    const candidates = control.candidates;
    let failures = 0;
    control.candidates = () => {
      failures += 1;
      throw new Error("job.json unreadable");
    };
    try {
      // each read past the cache period calls candidates() again; every one of them must still read Good
      await waitFor("a read that called the failing candidates()", async () => {
        await plc.read("cam1.Model.JobEpoch");
        return failures > 0;
      });
      assert.deepEqual(await readModel("cam1"), CAM1_MODEL);
    } finally {
      control.candidates = candidates;
    }
  });
});
