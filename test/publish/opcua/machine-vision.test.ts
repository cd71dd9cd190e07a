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
import { visionState } from "../../../src/publish/opcua/machine-vision.js";
import { TestLineControl } from "../../helpers/line-control.js";
import { Plc, startTestServer, type TestServer } from "../../helpers/opcua.js";
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
    const unprepared = await session.call({
      objectId: management,
      methodId: unprepare,
      inputArguments: [
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3002, { id: "" }) },
        { dataType: DataType.ExtensionObject, value: await extension(session, mv, 3013, { id: "B" }) },
      ],
    });
    assert.ok(unprepared.statusCode.isGood(), unprepared.statusCode.toString());
    assert.equal(server.control.recipe, null);
    await server.control.selectRecipe("B", { via: "http" });
  });

  test("a ResultReadyEvent per inspected part, with its id, state, part, recipe and score", async () => {
    const fields = ["EventType", `${mv}:ResultId`, `${mv}:ResultState`, `${mv}:PartId`];
    const more = [`${mv}:InternalRecipeId`, `${mv}:ResultContent`];
    const subscription = ClientSubscription.create(session, {
      requestedPublishingInterval: 50,
      publishingEnabled: true,
      requestedMaxKeepAliveCount: 20,
      requestedLifetimeCount: 100,
    });
    const events: Variant[][] = [];
    const item = ClientMonitoredItem.create(
      subscription,
      { nodeId: system, attributeId: AttributeIds.EventNotifier },
      { samplingInterval: 0, queueSize: 100, filter: constructEventFilter([...fields, ...more]) },
      TimestampsToReturn.Neither,
    );
    item.on("changed", (values: unknown) => events.push(values as Variant[]));
    await new Promise((resolve) => item.once("initialized", resolve));
    // the same events at the Server object, where a generic client subscribes
    const atServer: Variant[][] = [];
    const serverItem = ClientMonitoredItem.create(
      subscription,
      { nodeId: resolveNodeId("Server"), attributeId: AttributeIds.EventNotifier },
      { samplingInterval: 0, queueSize: 100, filter: constructEventFilter(fields) },
      TimestampsToReturn.Neither,
    );
    serverItem.on("changed", (values: unknown) => atServer.push(values as Variant[]));
    await new Promise((resolve) => serverItem.once("initialized", resolve));

    const { control } = server;
    control.trigger("cam1", "P-1", { via: "opcua" });
    control.emit("cam1", 0.1);
    control.trigger("cam2", "P-2", { via: "opcua" });
    control.emit("cam2", 5);
    control.emit("cam1", 0.1); // a free-running frame: no part, no result
    await waitFor("two ResultReady events", () => events.length >= 2, 5000);
    await new Promise((r) => setTimeout(r, 200));
    await subscription.terminate();

    assert.equal(events.length, 2);
    const serverIds = atServer.filter((e) => e[1]?.value !== null).map((e) => e[1]?.value);
    assert.deepEqual(
      serverIds,
      events.map((e) => e[1]?.value),
    );
    const [first, second] = events.map((e) => e.map((v) => v.value as unknown));
    const type = await session.read({ nodeId: first![0] as NodeId, attributeId: AttributeIds.BrowseName });
    assert.equal((type.value.value as { name: string }).name, "ResultReadyEventType");
    assert.notEqual(first![1], second![1], "each result has its own id");
    assert.deepEqual(first!.slice(2, 5), [1, "P-1", "B"]);
    assert.deepEqual(second!.slice(2, 5), [-1, "P-2", "B"]);
    const content = (second![5] as Variant[]).map((v) => v.value);
    assert.deepEqual(content, ["defect", 5, 2]);

    const management = await child(session, system, `/${mv}:ResultManagement`);
    const lastNode = await child(session, management, `/${plc.ns}:LastResults`);
    const last = (await session.read({ nodeId: lastNode })).value.value as string[];
    assert.equal(last.length, 2);
    assert.equal(JSON.parse(last[1]!).partId, "P-2");
    const byId = await child(session, management, `.${mv}:GetResultById`);
    const answer = await session.call({
      objectId: management,
      methodId: byId,
      inputArguments: [
        { dataType: DataType.String, value: "cam2-1-2" },
        { dataType: DataType.Int32, value: 1000 },
      ],
    });
    // node-opcua's argument check refuses a plain String for ResultIdDataType (BadInvalidArgument) before the
    // method's BadNotImplemented: either way the client gets no result and a Bad status
    assert.ok(answer.statusCode.isBad(), answer.statusCode.toString());
  });
});

test("visionState: Error without a model, Halted with every camera disabled, else Operational", () => {
  const snapshot = new TestLineControl(["cam1", "cam2"]).snapshot();
  assert.equal(visionState(snapshot), "Operational");
  assert.equal(visionState({ ...snapshot, models: [] }), "Error");
  const disabled = snapshot.cameras.map((c) => ({ ...c, enabled: false }));
  assert.equal(visionState({ ...snapshot, cameras: disabled }), "Halted");
  assert.equal(visionState({ ...snapshot, cameras: [disabled[0]!, snapshot.cameras[1]!] }), "Operational");
});
