/**
 * The OPC 40100 (Machine Vision) view beside `urn:stpmd`: a VisionSystem built from node-opcua's shipped
 * MachineVision nodeset, its state from the control's snapshot, recipe management onto the recipes (through the
 * control's `selectRecipe`, audited there), and a ResultReadyEvent per inspected part. What is not mapped is listed
 * in docs/line-integration/opcua.md.
 */
import { createRequire } from "node:module";
import path from "node:path";
import { DataType, LocalizedText, StatusCodes, Variant, VariantArrayType } from "node-opcua-client";
import type { OPCUAServer } from "node-opcua-server";
import type { Logger } from "../../core/log.js";
import type { InspectionResult } from "../../core/result.js";
import { ControlError, type LineControl, type NodeSnapshot, type Requester } from "../control.js";

export const MACHINE_VISION_NAMESPACE_URI = "http://opcfoundation.org/UA/MachineVision";

type AddressSpace = NonNullable<OPCUAServer["engine"]["addressSpace"]>;
type Namespace = ReturnType<AddressSpace["getOwnNamespace"]>;
type UAObject = ReturnType<Namespace["addObject"]>;
type UAMethod = ReturnType<Namespace["addMethod"]>;
type SessionContext = Parameters<Parameters<UAMethod["bindMethod"]>[0]>[1];

/**
 * The NodeSet2 files the view needs, in dependency order. node-opcua-nodesets is node-opcua-server's own
 * dependency (not stpmd's): it is resolved from there, so the files are the ones the server's loader expects.
 */
export function machineVisionNodesets(): string[] {
  const fromServer = createRequire(import.meta.resolve("node-opcua-server"));
  const dir = path.join(path.dirname(fromServer.resolve("node-opcua-nodesets")), "..", "nodesets");
  return ["Opc.Ua.NodeSet2.xml", "Opc.Ua.Di.NodeSet2.xml", "Opc.Ua.MachineVision.NodeSet2.xml"].map((file) =>
    path.join(dir, file),
  );
}

/**
 * The VisionStateMachine's top-level state for a snapshot: Operational while inspecting, Halted with every camera
 * disabled, Error without a loaded model.
 */
export function visionState(snapshot: NodeSnapshot): "Operational" | "Halted" | "Error" {
  if (snapshot.cameras.length > 0 && snapshot.cameras.every((camera) => !camera.enabled)) return "Halted";
  if (snapshot.models.length === 0) return "Error";
  return "Operational";
}

/** ResultState values of a ResultReadyEvent (OPC 40100: > 0 is application-specific "ok"-like, < 0 "not ok"). */
export const RESULT_STATE = { ok: 1, defect: -1, error: -2 } as const;

export class MachineVisionView {
  private readonly system: UAObject;
  private resultCount = 0;
  /** The last results, newest last, for `LastResults`. */
  private readonly last: string[] = [];

  constructor(
    private readonly addressSpace: AddressSpace,
    ownNamespace: Namespace,
    private readonly control: LineControl,
    private readonly snapshot: () => NodeSnapshot,
    private readonly requester: (context: SessionContext | undefined) => Requester,
    private readonly log: Logger,
  ) {
    const mv = addressSpace.getNamespaceIndex(MACHINE_VISION_NAMESPACE_URI);
    const type = addressSpace.findObjectType("VisionSystemType", mv);
    if (type === null) throw new Error("the MachineVision nodeset has no VisionSystemType");
    this.system = type.instantiate({
      browseName: "VisionSystem",
      namespace: ownNamespace,
      organizedBy: addressSpace.rootFolder.objects,
      optionals: ["RecipeManagement", "ResultManagement", "SystemState"],
      eventNotifier: 1,
    });
    // a client that subscribes to the Server object's events (the usual place) gets the ResultReadyEvents too
    addressSpace.rootFolder.objects.server.addReference({
      referenceType: "HasNotifier",
      isForward: true,
      nodeId: this.system.nodeId,
    });
    this.bindState(mv);
    this.bindRecipes(ownNamespace);
    this.addLastResults(ownNamespace);
  }

  private component(parent: UAObject, name: string, ns: number): ReturnType<UAObject["getComponentByName"]> {
    return parent.getComponentByName(name, ns);
  }

  private bindState(mv: number): void {
    const machine = this.component(this.system, "VisionStateMachine", mv) as UAObject | null;
    const current = machine?.getComponentByName("CurrentState");
    if (current === null || current === undefined || !("bindVariable" in current)) {
      throw new Error("the VisionSystem has no VisionStateMachine.CurrentState");
    }
    current.bindVariable(
      {
        get: () =>
          new Variant({
            dataType: DataType.LocalizedText,
            value: new LocalizedText({ text: visionState(this.snapshot()) }),
          }),
      },
      true,
    );
  }

  private bindRecipes(own: Namespace): void {
    const mv = this.addressSpace.getNamespaceIndex(MACHINE_VISION_NAMESPACE_URI);
    const management = this.component(this.system, "RecipeManagement", mv) as UAObject | null;
    if (management === null) throw new Error("the VisionSystem has no RecipeManagement");
    const internalType = this.addressSpace.findDataType("RecipeIdInternalDataType", mv);
    const internalId = (name: string) =>
      internalType === null ? null : this.addressSpace.constructExtensionObject(internalType, { id: name });
    const prepare = management.getMethodByName("PrepareRecipe", mv);
    prepare?.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      const external = inputs[0]?.value as { id?: unknown } | null | undefined;
      const name = typeof external?.id === "string" ? external.id : "";
      try {
        await this.control.selectRecipe(name === "" ? null : name, by);
      } catch (err) {
        if (!(err instanceof ControlError)) this.log.error({ err }, "PrepareRecipe failed");
        this.log.warn(
          { user: by.user, method: "PrepareRecipe" },
          `PrepareRecipe refused: ${(err as Error).message}`,
        );
        return { statusCode: StatusCodes.BadInvalidArgument, statusText: (err as Error).message };
      }
      return {
        statusCode: StatusCodes.Good,
        outputArguments: [
          new Variant({ dataType: DataType.ExtensionObject, value: internalId(name) }),
          new Variant({ dataType: DataType.Boolean, value: true }),
          new Variant({ dataType: DataType.Int32, value: 0 }),
        ],
      };
    });
    // Unpreparing the recipe in force returns the line to no recipe (every camera's own settings); another one is
    // not prepared (stpmd loads a recipe's bundles only to switch to it), so there is nothing to undo.
    const unprepare = management.getMethodByName("UnprepareRecipe", mv);
    unprepare?.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      const external = inputs[0]?.value as { id?: unknown } | null | undefined;
      const internal = inputs[1]?.value as { id?: unknown } | null | undefined;
      const name = typeof internal?.id === "string" && internal.id !== "" ? internal.id : external?.id;
      if (typeof name === "string" && name !== "" && name === this.control.snapshot().recipe) {
        await this.control.selectRecipe(null, by);
      }
      return {
        statusCode: StatusCodes.Good,
        outputArguments: [
          new Variant({
            dataType: DataType.ExtensionObject,
            value: internalId(typeof name === "string" ? name : ""),
          }),
          new Variant({ dataType: DataType.Int32, value: 0 }),
        ],
      };
    });
    const list = management.getMethodByName("GetRecipeListFiltered", mv);
    list?.bindMethod(async (_inputs: Variant[], _context: SessionContext) => {
      const names = this.snapshot().recipes;
      return {
        statusCode: StatusCodes.Good,
        outputArguments: [
          new Variant({ dataType: DataType.Boolean, value: true }),
          new Variant({ dataType: DataType.UInt32, value: names.length }),
          new Variant({ dataType: DataType.UInt32, value: 0 }),
          new Variant({
            dataType: DataType.ExtensionObject,
            arrayType: VariantArrayType.Array,
            value: names.map(internalId),
          }),
          new Variant({ dataType: DataType.Int32, value: 0 }),
        ],
      };
    });
    // the recipe in force, which the specification leaves to the state machine's job: readable in stpmd's namespace
    own.addVariable({
      componentOf: management,
      browseName: "ActiveRecipe",
      dataType: DataType.String,
      accessLevel: "CurrentRead",
      userAccessLevel: "CurrentRead",
      value: { get: () => new Variant({ dataType: DataType.String, value: this.snapshot().recipe ?? "" }) },
    });
  }

  private addLastResults(own: Namespace): void {
    const mv = this.addressSpace.getNamespaceIndex(MACHINE_VISION_NAMESPACE_URI);
    const management = this.component(this.system, "ResultManagement", mv) as UAObject | null;
    if (management === null) throw new Error("the VisionSystem has no ResultManagement");
    // Mandatory in the type but not mapped (a ResultDataType per stored result is not kept): an explicit answer
    // rather than whatever node-opcua does with a method nobody bound.
    for (const name of ["GetResultById", "GetResultComponentsById", "GetResultListFiltered"]) {
      management
        .getMethodByName(name, mv)
        ?.bindMethod(async (_inputs: Variant[], _context: SessionContext) => ({
          statusCode: StatusCodes.BadNotImplemented,
          statusText: `${name} is not mapped by stpmd: results are the ResultReadyEvents and LastResults`,
        }));
    }
    own.addVariable({
      componentOf: management,
      browseName: "LastResults",
      description: `the last ${LAST_RESULTS} results as JSON, newest last`,
      dataType: DataType.String,
      valueRank: 1,
      arrayDimensions: [0],
      accessLevel: "CurrentRead",
      userAccessLevel: "CurrentRead",
      value: {
        get: () =>
          new Variant({ dataType: DataType.String, arrayType: VariantArrayType.Array, value: this.last }),
      },
    });
  }

  /** One ResultReadyEvent per inspected part, with a result id of its own. */
  onResult(result: InspectionResult): void {
    this.resultCount += 1;
    const frame = result.frame;
    const resultId = `${frame.cameraId}-${frame.seq}-${this.resultCount}`;
    const entry = {
      resultId,
      camera: frame.cameraId,
      partId: frame.partId ?? "",
      recipe: frame.recipe ?? "",
      verdict: result.verdict,
      score: result.score,
      threshold: result.threshold,
    };
    this.last.push(JSON.stringify(entry));
    if (this.last.length > LAST_RESULTS) this.last.shift();
    const mv = this.addressSpace.getNamespaceIndex(MACHINE_VISION_NAMESPACE_URI);
    const eventType = this.addressSpace.findEventType("ResultReadyEventType", mv);
    if (eventType === null) return;
    const s = (value: string) => new Variant({ dataType: DataType.String, value });
    const v = (dataType: DataType, value: unknown) => new Variant({ dataType, value });
    this.system.raiseEvent(eventType, {
      message: v(DataType.LocalizedText, { text: `${entry.camera} ${entry.verdict} ${entry.score}` }),
      severity: v(DataType.UInt16, result.verdict === "ok" ? 100 : 500),
      resultId: s(resultId),
      resultState: v(DataType.Int32, RESULT_STATE[result.verdict]),
      partId: s(entry.partId),
      jobId: s(`${frame.cameraId}-${frame.seq}`),
      internalRecipeId: s(entry.recipe),
      internalConfigurationId: s(entry.camera),
      isPartial: v(DataType.Boolean, false),
      creationTime: v(DataType.DateTime, new Date()),
      // the verdict, score and threshold: ResultContent is the specification's place for application data
      resultContent: new Variant({
        dataType: DataType.Variant,
        arrayType: VariantArrayType.Array,
        value: [
          v(DataType.String, result.verdict),
          v(DataType.Double, result.score),
          v(DataType.Double, result.threshold),
        ],
      }),
    });
  }
}

/** How many results `LastResults` keeps: a PLC that missed events can read back a short burst. */
const LAST_RESULTS = 16;
