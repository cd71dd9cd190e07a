/**
 * The OPC 40100 (Machine Vision) view, checked by a client that knows only the specification: it finds the
 * VisionSystem by its type (VisionSystemType in the MachineVision namespace), everything else by the
 * specification's BrowseNames, and never uses one of stpmd's node ids.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  AttributeIds,
  BrowseDirection,
  ClientMonitoredItem,
  type ClientSession,
  ClientSubscription,
  constructEventFilter,
  DataType,
  type LocalizedText,
  makeBrowsePath,
  type NodeId,
  resolveNodeId,
  TimestampsToReturn,
  type Variant,
} from "node-opcua-client";
import { PLC_USER, Plc, startTestServer, type TestServer } from "../../helpers/opcua.js";
import { waitFor } from "../../helpers/wait.js";

const MV_URI = "http://opcfoundation.org/UA/MachineVision";

/** The spec client's view: the MachineVision namespace's index and the VisionSystem's node, found by type. */
async function findVisionSystem(session: ClientSession): Promise<{ mv: number; system: NodeId }> {
  const namespaces = await session.readNamespaceArray();
  const mv = namespaces.indexOf(MV_URI);
  assert.ok(mv > 0, `namespace ${MV_URI} missing: ${namespaces.join(", ")}`);
  const objects = await session.browse({
    nodeId: resolveNodeId("ObjectsFolder"),
    browseDirection: BrowseDirection.Forward,
    resultMask: 0x3f,
  });
  const typeName = `VisionSystemType`;
  for (const ref of objects.references ?? []) {
    const type = await session.read({ nodeId: ref.typeDefinition, attributeId: AttributeIds.BrowseName });
    const qn = type.value.value as { name: string; namespaceIndex: number } | null;
    if (qn?.name === typeName && qn.namespaceIndex === mv) return { mv, system: ref.nodeId };
  }
  throw new Error("no VisionSystemType instance under Objects");
}

/** A value of one of the specification's structures, by its DataType id in the MachineVision namespace. */
function extension(session: ClientSession, mv: number, id: number, fields: Record<string, unknown>) {
  return session.constructExtensionObject(resolveNodeId(`ns=${mv};i=${id}`), fields);
}

async function child(session: ClientSession, from: NodeId, relative: string): Promise<NodeId> {
  const result = await session.translateBrowsePath(makeBrowsePath(from, relative));
  const target = result.targets?.[0]?.targetId;
  assert.ok(
    result.statusCode.isGood() && target !== undefined,
    `${relative}: ${result.statusCode.toString()}`,
  );
  return target;
}

/** Reads until the value is `want`: the server's snapshot is cached for 200 ms. */
async function readUntil(read: () => Promise<string>, want: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let seen = await read();
  while (seen !== want) {
    if (Date.now() > deadline) throw new Error(`state ${seen}, not ${want}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
    seen = await read();
  }
}

describe("OPC 40100 Machine Vision view with a spec-only client", () => {
  let server: TestServer;
  let plc: Plc;
  let session: ClientSession;
  let mv: number;
  let system: NodeId;

  before(async () => {
    server = await startTestServer({
      machine_vision: { enabled: true },
      security: {
        policies: ["None", "Basic256Sha256"],
        modes: ["None", "SignAndEncrypt"],
        accept_unknown_certificates: true,
      },
    });
    plc = await Plc.connect(server);
    session = plc.session;
    ({ mv, system } = await findVisionSystem(session));
  });

  after(async () => {
    await plc?.close();
    await server?.stop();
  });

  test("the VisionStateMachine's state follows the line: Operational, Halted with every camera disabled", async () => {
    const current = await child(session, system, `/${mv}:VisionStateMachine.CurrentState`);
    const read = async () =>
      ((await session.read({ nodeId: current })).value.value as LocalizedText).text ?? "";
    assert.equal(await read(), "Operational");
    await server.control.enableCamera("cam1", false, { via: "http" });
    await server.control.enableCamera("cam2", false, { via: "http" });
    await readUntil(read, "Halted");
    await server.control.enableCamera("cam1", true, { via: "http" });
    await readUntil(read, "Operational");
  });

  test("RecipeManagement lists the recipes and PrepareRecipe selects one through the control", async () => {
    const management = await child(session, system, `/${mv}:RecipeManagement`);
    const list = await child(session, management, `.${mv}:GetRecipeListFiltered`);
    const prepare = await child(session, management, `.${mv}:PrepareRecipe`);
    const listed = await session.call({
      objectId: management,
      methodId: list,
      // no filter: an empty external id and product id, IsPrepared DONT_CARE_2
      inputArguments: [
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3002, { id: "" }) },
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3003, { id: "" }) },
        { dataType: DataType.Int32, value: 2 },
        { dataType: DataType.UInt32, value: 100 },
        { dataType: DataType.UInt32, value: 0 },
        { dataType: DataType.Int32, value: 1000 },
      ],
    });
    assert.ok(
      listed.statusCode.isGood(),
      `${listed.statusCode.toString()} ${listed.inputArgumentResults?.map((r) => r.toString()).join(",")}`,
    );
    const recipes = (listed.outputArguments![3]!.value as { id: string }[]).map((r) => r.id);
    assert.deepEqual(recipes, ["A", "B"]);

    const external = await extension(session, mv, 3002, { id: "B" });
    const prepared = await session.call({
      objectId: management,
      methodId: prepare,
      inputArguments: [
        { dataType: DataType.ExtensionObject, value: external },
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3013, { id: "" }) },
      ],
    });
    assert.ok(prepared.statusCode.isGood(), prepared.statusCode.toString());
    assert.equal((prepared.outputArguments![0]!.value as { id: string }).id, "B");
    assert.equal(prepared.outputArguments?.[1]?.value, true);
    assert.equal(server.control.recipe, "B");
    const call = server.control.calls.findLast((c) => c.method === "selectRecipe");
    assert.deepEqual(call?.args, ["B"]);
    assert.equal(call?.by.via, "opcua");

    const unknown = await extension(session, mv, 3002, { id: "Z" });
    const refused = await session.call({
      objectId: management,
      methodId: prepare,
      inputArguments: [
        { dataType: DataType.ExtensionObject, value: unknown },
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3013, { id: "" }) },
      ],
    });
    assert.ok(refused.statusCode.isBad(), "an unknown recipe is refused");
    assert.equal(server.control.recipe, "B");

    // unpreparing the recipe in force returns the line to no recipe; the test re-selects B for the next test
    const unprepare = await child(session, management, `.${mv}:UnprepareRecipe`);
    const unprepareB = async () =>
      session.call({
        objectId: management,
        methodId: unprepare,
        inputArguments: [
          { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3002, { id: "" }) },
          { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3013, { id: "B" }) },
        ],
      });
    // a control that refuses (the daemon stopping): a Bad answer, the recipe kept
    server.control.refuseRecipes = "the daemon is stopping";
    const refusedUnprepare = await unprepareB();
    server.control.refuseRecipes = undefined;
    assert.equal(refusedUnprepare.statusCode.name, "BadInvalidArgument");
    assert.equal(server.control.recipe, "B");
    const unprepared = await unprepareB();
    assert.ok(unprepared.statusCode.isGood(), unprepared.statusCode.toString());
    assert.equal(server.control.recipe, null);
    await server.control.selectRecipe("B", { via: "http" });
  });

  /** Events of the listed fields at `nodeId`, as they arrive, until `stop`. */
  async function subscribeEvents(nodeId: NodeId, fields: string[]) {
    const subscription = ClientSubscription.create(session, {
      requestedPublishingInterval: 50,
      publishingEnabled: true,
      requestedMaxKeepAliveCount: 20,
      requestedLifetimeCount: 100,
    });
    const events: unknown[][] = [];
    const item = ClientMonitoredItem.create(
      subscription,
      { nodeId, attributeId: AttributeIds.EventNotifier },
      { samplingInterval: 0, queueSize: 100, filter: constructEventFilter(fields) },
      TimestampsToReturn.Neither,
    );
    item.on("changed", (values: unknown) => events.push((values as Variant[]).map((v) => v.value)));
    await new Promise((resolve) => item.once("initialized", resolve));
    return { events, stop: () => subscription.terminate() };
  }

  async function typeName(eventType: unknown): Promise<string> {
    const read = await session.read({ nodeId: eventType as NodeId, attributeId: AttributeIds.BrowseName });
    return (read.value.value as { name: string }).name;
  }

  const text = async (nodeId: NodeId) =>
    ((await session.read({ nodeId })).value.value as LocalizedText | null)?.text ?? "";

  /** A state's NodeId in the state machine's type: what CurrentState.Id must be. */
  async function typeState(machine: NodeId, state: string): Promise<NodeId> {
    const refs = await session.browse({
      nodeId: machine,
      referenceTypeId: resolveNodeId("HasTypeDefinition"),
      browseDirection: BrowseDirection.Forward,
    });
    const type = refs.references?.[0]?.nodeId;
    assert.ok(type !== undefined, "the state machine has a type");
    return child(session, type, `.${mv}:${state}`);
  }

  async function call(
    objectId: NodeId,
    name: string,
    inputArguments: { dataType: DataType; value: unknown }[],
  ) {
    return session.call({
      objectId,
      methodId: await child(session, objectId, `.${mv}:${name}`),
      inputArguments,
    });
  }

  const cause = [
    { dataType: DataType.Int32, value: 0 },
    { dataType: DataType.String, value: "test" },
  ];

  test("Halt disables every camera and Reset enables them again, with CurrentState.Id and LastTransition", async () => {
    const machine = await child(session, system, `/${mv}:VisionStateMachine`);
    const automatic = await child(session, machine, `/${mv}:AutomaticModeStateMachine`);
    const current = await child(session, machine, ".CurrentState");
    const currentId = await child(session, machine, ".CurrentState.Id");
    const autoCurrent = await child(session, automatic, ".CurrentState");
    const autoId = await child(session, automatic, ".CurrentState.Id");
    const last = await child(session, machine, ".LastTransition");
    const systemState = await child(session, system, `.${mv}:SystemState`);
    await server.control.enableCamera("cam2", true, { via: "http" });
    await readUntil(() => text(current), "Operational");
    await readUntil(() => text(autoCurrent), "Ready");
    const id = async (node: NodeId) =>
      ((await session.read({ nodeId: node })).value.value as NodeId).toString();
    assert.equal(await id(currentId), (await typeState(machine, "Operational")).toString());
    assert.equal(await id(autoId), (await typeState(automatic, "Ready")).toString());

    const calls = server.control.calls.length;
    const halted = await call(machine, "Halt", cause);
    assert.ok(halted.statusCode.isGood(), halted.statusCode.toString());
    const disabled = server.control.calls.slice(calls).filter((c) => c.method === "enableCamera");
    assert.deepEqual(
      disabled.map((c) => [c.args, c.by.via, c.by.user]),
      [
        [["cam1", false], "opcua", PLC_USER],
        [["cam2", false], "opcua", PLC_USER],
      ],
    );
    assert.equal(await text(current), "Halted");
    assert.equal(await id(currentId), (await typeState(machine, "Halted")).toString());
    assert.equal(await text(last), "OperationalToHalted");
    // the automatic mode is a sub-state of Operational: not active while Halted
    assert.ok((await session.read({ nodeId: autoCurrent })).statusCode.isBad());
    const state = (await session.read({ nodeId: systemState })).value.value as { state: number };
    assert.equal(state.state, 4, "Halted is scheduled downtime");
    assert.ok((await call(machine, "Halt", cause)).statusCode.isBad(), "Halt while Halted is refused");
    assert.ok((await call(machine, "SelectModeAutomatic", [])).statusCode.isBad(), "Reset comes first");

    const reset = await call(machine, "Reset", cause);
    assert.ok(reset.statusCode.isGood(), reset.statusCode.toString());
    assert.deepEqual(
      server.control.snapshot().cameras.map((c) => c.enabled),
      [true, true],
    );
    assert.equal(await text(current), "Operational");
    assert.equal(await text(last), "PreoperationalToOperational", "Halted → Preoperational → Operational");
    assert.ok((await call(machine, "SelectModeAutomatic", [])).statusCode.isGood());
    assert.ok((await call(machine, "Reset", cause)).statusCode.isBad(), "Reset while Operational is refused");
    const job = await call(automatic, "StartSingleJob", [
      { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3015, { id: "" }) },
      { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3004, { id: "P" }) },
      { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3002, { id: "" }) },
      { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3003, { id: "" }) },
      { dataType: DataType.Variant, value: [] },
    ]);
    assert.ok(job.statusCode.isBad(), job.statusCode.toString());
  });

  test("the automatic mode follows the parts: SingleExecution, ContinuousExecution while parts keep coming, Ready", async () => {
    const automatic = await child(
      session,
      system,
      `/${mv}:VisionStateMachine/${mv}:AutomaticModeStateMachine`,
    );
    const current = await child(session, automatic, ".CurrentState");
    const systemState = await child(session, system, `.${mv}:SystemState`);
    const state = async () =>
      ((await session.read({ nodeId: systemState })).value.value as { state: number }).state;
    await readUntil(() => text(current), "Ready", 5000);
    assert.equal(await state(), 2, "Ready is standby");
    assert.ok((await plc.trigger("cam1", "S-1")).isGood());
    await readUntil(() => text(current), "SingleExecution");
    assert.equal(await state(), 1, "judging a part is productive");
    server.control.emit("cam1", 0.1);
    await plc.takeResult("cam1");
    assert.ok((await plc.trigger("cam1", "S-2")).isGood());
    await readUntil(() => text(current), "ContinuousExecution");
    server.control.emit("cam1", 0.1);
    await plc.takeResult("cam1");
    // two parts within 2 s: the stream lasts until 2 s after the last part
    assert.equal(await text(current), "ContinuousExecution");
    await readUntil(() => text(current), "Ready", 5000);
  });

  test("a ResultReadyEvent per part and ResultManagement's methods, with the specification's structures", async () => {
    const fields = [
      "EventType",
      `${mv}:ResultId`,
      `${mv}:ResultState`,
      `${mv}:PartId`,
      `${mv}:InternalRecipeId`,
    ];
    const atSystem = await subscribeEvents(system, [...fields, `${mv}:ResultContent`]);
    const atServer = await subscribeEvents(resolveNodeId("Server"), fields);
    const { control } = server;
    control.trigger("cam1", "P-1", { via: "opcua" });
    control.emit("cam1", 0.1);
    control.trigger("cam2", "P-2", { via: "opcua" });
    control.emit("cam2", 5);
    control.emit("cam1", 0.1); // a free-running frame: no part, no result
    const events = atSystem.events;
    await waitFor("two ResultReady events", () => events.length >= 2, 5000);
    await new Promise((r) => setTimeout(r, 200));
    await atSystem.stop();
    await atServer.stop();
    assert.equal(events.length, 2);
    const id = (value: unknown) => (value as { id: string } | null)?.id;
    const resultIds = events.map((e) => id(e[1]));
    assert.deepEqual(
      atServer.events.filter((e) => e[1] !== null).map((e) => id(e[1])),
      resultIds,
    );
    assert.equal(await typeName(events[0]![0]), "ResultReadyEventType");
    assert.notEqual(resultIds[0], resultIds[1], "each result has its own id");
    assert.deepEqual(
      events.map((e) => [e[2], id(e[3]), id(e[4])]),
      [
        [1, "P-1", "B"],
        [-1, "P-2", "B"],
      ],
    );
    assert.deepEqual(
      (events[1]![5] as Variant[]).map((v) => v.value),
      ["defect", 5, 2],
    );

    const management = await child(session, system, `/${mv}:ResultManagement`);
    const resultId = async (value: string) => ({
      dataType: DataType.ExtensionObject,
      value: await extension(session, mv, 3021, { id: value }),
    });
    const timeout = { dataType: DataType.Int32, value: 1000 };
    const byId = await call(management, "GetResultById", [await resultId(resultIds[1]!), timeout]);
    assert.ok(byId.statusCode.isGood(), byId.statusCode.toString());
    const result = byId.outputArguments![1]!.value as {
      resultId: { id: string };
      resultState: number;
      partId: { id: string };
      internalRecipeId: { id: string };
      internalConfigurationId: { id: string };
      processingTimes: { startTime: Date; endTime: Date };
      resultContent: Variant[];
    };
    assert.equal(result.resultId.id, resultIds[1]);
    assert.equal(result.resultState, -1);
    assert.equal(result.partId.id, "P-2");
    assert.equal(result.internalRecipeId.id, "B");
    assert.equal(result.internalConfigurationId.id, "cam2");
    assert.ok(result.processingTimes.startTime.getTime() <= result.processingTimes.endTime.getTime());
    assert.deepEqual(
      result.resultContent.map((v) => v.value),
      ["defect", 5, 2],
    );
    const missing = await call(management, "GetResultById", [await resultId("nope"), timeout]);
    assert.equal(missing.statusCode.name, "BadNotFound");

    const components = await call(management, "GetResultComponentsById", [
      await resultId(resultIds[0]!),
      timeout,
    ]);
    assert.ok(components.statusCode.isGood(), components.statusCode.toString());
    const out = components.outputArguments!.map((v) => v.value);
    assert.equal(out[4], 1, "ResultState");
    assert.equal(id(out[6]), "P-1", "PartId");
    assert.equal(id(out[11]), "cam1", "InternalConfigurationId");

    const list = async (filter: { state?: number; partId?: string }, max: number, start: number) => {
      const ext = async (type: number, value = "") => ({
        dataType: DataType.ExtensionObject,
        value: await extension(session, mv, type, { id: value }),
      });
      const answer = await call(management, "GetResultListFiltered", [
        { dataType: DataType.Int32, value: filter.state ?? 0 },
        await ext(3015),
        await ext(3004, filter.partId),
        await ext(3002),
        await ext(3013),
        await ext(3008),
        await ext(3008),
        await ext(3003),
        await ext(3016),
        { dataType: DataType.UInt32, value: max },
        { dataType: DataType.UInt32, value: start },
        timeout,
      ]);
      assert.ok(answer.statusCode.isGood(), answer.statusCode.toString());
      const [complete, count, , results] = answer.outputArguments!.map((v) => v.value);
      return { complete, count, parts: (results as { partId: { id: string } }[]).map((r) => r.partId.id) };
    };
    assert.deepEqual(await list({ partId: "P-2" }, 10, 0), { complete: true, count: 1, parts: ["P-2"] });
    assert.deepEqual(await list({ state: -1 }, 10, 0), { complete: true, count: 1, parts: ["P-2"] });
    // every part of this file so far (S-1 and S-2 of the automatic-mode test, then P-1, P-2), oldest first
    assert.deepEqual(await list({}, 2, 1), { complete: false, count: 4, parts: ["S-2", "P-1"] });
    assert.deepEqual(await list({}, 0, 3), { complete: true, count: 4, parts: ["P-2"] });
  });

  test("no model: Error with an ErrorEvent and unscheduled downtime, ErrorResolved once a model is back", async () => {
    const machine = await child(session, system, `/${mv}:VisionStateMachine`);
    const current = await child(session, machine, ".CurrentState");
    const systemState = await child(session, system, `.${mv}:SystemState`);
    const events = await subscribeEvents(system, ["EventType", "Message", "SourceNode"]);
    server.control.modelLoaded = false;
    await readUntil(() => text(current), "Error");
    const state = (await session.read({ nodeId: systemState })).value.value as {
      state: number;
      stateDescription: string;
    };
    assert.equal(state.state, 5, "Error is unscheduled downtime");
    assert.match(state.stateDescription, /no model loaded/);
    const reset = await call(machine, "Reset", cause);
    assert.ok(reset.statusCode.isBad(), "Reset cannot load a model");
    server.control.modelLoaded = true;
    await readUntil(() => text(current), "Operational");
    await waitFor("the ErrorResolved event", () => events.events.length >= 2, 3000);
    await events.stop();
    const seen = await Promise.all(
      events.events.map(async (e) => [await typeName(e[0]), (e[1] as LocalizedText).text]),
    );
    assert.deepEqual(seen, [
      ["ErrorEventType", "no model loaded"],
      ["ErrorResolvedEventType", "inspecting"],
    ]);
    assert.equal(String(events.events[0]![2]), machine.toString(), "the source is the VisionStateMachine");
  });

  test("a camera that delivers no frames: its VisionErrorCondition is raised, and cleared once it delivers", async () => {
    const machine = await child(session, system, `/${mv}:VisionStateMachine`);
    const current = await child(session, machine, ".CurrentState");
    const events = await subscribeEvents(system, ["EventType", "Message", "Retain"]);
    server.control.setCameraState("cam2", "stalled");
    await waitFor("the condition", () => events.events.length >= 1, 3000);
    // one camera of two: the system stays Operational, the condition names the camera
    assert.equal(await text(current), "Operational");
    server.control.setCameraState("cam2", "streaming");
    await waitFor("the condition cleared", () => events.events.length >= 2, 3000);
    await new Promise((r) => setTimeout(r, 300));
    await events.stop();
    const seen = await Promise.all(
      events.events.map(async (e) => [await typeName(e[0]), (e[1] as LocalizedText).text, e[2]]),
    );
    assert.deepEqual(seen, [
      ["VisionErrorConditionType", "camera cam2 stalled: no frame within its stall timeout", true],
      ["VisionErrorConditionType", "camera cam2 delivers frames again", false],
    ]);
  });

  test("a control whose snapshot() throws: the state poll goes on, and follows the line once it answers again", async () => {
    const current = await child(session, system, `/${mv}:VisionStateMachine.CurrentState`);
    const { control } = server;
    const enabled = control
      .snapshot()
      .cameras.filter((c) => c.enabled)
      .map((c) => c.id);
    const snapshot = control.snapshot;
    let failures = 0;
    control.snapshot = () => {
      failures += 1;
      throw new Error("snapshot failed");
    };
    try {
      // thrown out of the poll's timer, this would end the process
      await waitFor("two polls against the failing snapshot()", () => failures >= 2, 3000);
    } finally {
      control.snapshot = snapshot;
    }
    for (const camera of enabled) await control.enableCamera(camera, false, { via: "http" });
    await readUntil(() => text(current), "Halted");
    for (const camera of enabled) await control.enableCamera(camera, true, { via: "http" });
    await readUntil(() => text(current), "Operational");
  });
});
