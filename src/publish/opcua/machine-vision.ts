/**
 * The OPC 40100 (Machine Vision) view beside `urn:stpmd`: a VisionSystem built from node-opcua's shipped
 * MachineVision nodeset, with its VisionStateMachine and AutomaticModeStateMachine following the line (see
 * machine-vision-state.ts; Halt / Reset through the control's `enableCamera`, audited there), recipe management onto
 * the recipes (through the control's `selectRecipe`), result management over the last results
 * (machine-vision-results.ts), a ResultReadyEvent per inspected part, the SystemState, and a VisionErrorCondition per
 * camera (machine-vision-conditions.ts). What is not mapped is listed in docs/line-integration/opcua.md.
 */
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import {
  DataType,
  LocalizedText,
  type StatusCode,
  StatusCodes,
  Variant,
  VariantArrayType,
} from "node-opcua-client";
import type { OPCUAServer } from "node-opcua-server";
import type { Logger } from "../../core/log.js";
import type { InspectionResult } from "../../core/result.js";
import { ControlError, type LineControl, type NodeSnapshot, type Requester } from "../control.js";
import { CameraConditions } from "./machine-vision-conditions.js";
import { type ResultFilter, type ResultRecord, ResultStore, resultRecord } from "./machine-vision-results.js";
import {
  type AutomaticState,
  automaticState,
  PartWindow,
  systemState,
  type VisionState,
  visionState,
} from "./machine-vision-state.js";

const MACHINE_VISION_NAMESPACE_URI = "http://opcfoundation.org/UA/MachineVision";

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

/** node-opcua's FiniteStateMachine behaviour of a promoted state machine instance (sets CurrentState, its Id,
 * LastTransition, and raises the TransitionEvent). */
interface StateMachine {
  setState(state: string | null): void;
  isValidTransition(state: string): boolean;
}

/**
 * node-opcua promotes an instance to a state machine only when its type is FiniteStateMachineType itself, not a
 * subtype such as VisionStateMachineType; its `promoteToStateMachine` does it for the others. It lives in
 * node-opcua-address-space, node-opcua-server's own dependency (not stpmd's): resolved from the server, as the
 * nodesets are, so that it is the module whose classes built the address space.
 */
const { promoteToStateMachine } = (await import(
  pathToFileURL(createRequire(import.meta.resolve("node-opcua-server")).resolve("node-opcua-address-space"))
    .href
)) as { promoteToStateMachine: (node: UAObject) => unknown };

function asStateMachine(node: UAObject | null, name: string): UAObject & StateMachine {
  if (node === null) throw new Error(`the VisionSystem has no ${name}`);
  const machine = promoteToStateMachine(node) as Partial<StateMachine>;
  if (typeof machine.setState !== "function")
    throw new Error(`the VisionSystem's ${name} is no state machine`);
  return machine as UAObject & StateMachine;
}

/** How often the state machines follow the line when nothing else changes them (a camera restarting, a part's window
 * closing): a PLC sees a change within this. */
const STATE_POLL_MS = 250;

/**
 * How long the view holds a part's work (its record, ResultReadyEvent, state change) to do it in one batch after
 * the handshake. With a setImmediate instead, the work ran before the server read the PLC's next request, so a PLC
 * polling ResultsReady waited for it. An event reaches a client no sooner than its subscription's next publish
 * (node-opcua's fastest interval: 50 ms), so 20 ms costs a client nothing. What remains (p50 +0.2 ms polling with
 * security None, the batch sometimes falling inside a trigger's window) is in benchmarks/results/opcua-latency-rounds.md.
 */
const FLUSH_MS = 20;

/** A method's answer with the specification's `Error` output (0: none) after the given outputs. */
function answer(outputs: Variant[] = []): { statusCode: StatusCode; outputArguments: Variant[] } {
  return {
    statusCode: StatusCodes.Good,
    outputArguments: [...outputs, new Variant({ dataType: DataType.Int32, value: 0 })],
  };
}

function refuse(statusCode: StatusCode, statusText: string): { statusCode: StatusCode; statusText: string } {
  return { statusCode, statusText };
}

/** One of the specification's structures as a method argument or event field. */
function ext(value: unknown): Variant {
  return new Variant({ dataType: DataType.ExtensionObject, value });
}

/** The `Id` of one of the specification's id structures passed as an argument ("" when absent). */
function idOf(input: Variant | undefined): string {
  const value = input?.value as { id?: unknown } | null | undefined;
  return typeof value?.id === "string" ? value.id : "";
}

export class MachineVisionView {
  private readonly system: UAObject;
  private readonly mv: number;
  private readonly machine: UAObject & StateMachine;
  private readonly automatic: UAObject & StateMachine;
  private state: { top: VisionState; automatic: AutomaticState | null; reason: string } | undefined;
  private readonly parts = new PartWindow();
  private resultCount = 0;
  private readonly results = new ResultStore();
  /** Results waiting for {@link flush}: the view's work runs after the handshake's, not right after the result. */
  private pendingResults: InspectionResult[] = [];
  /** The pending {@link flush}, when results or a part start wait for it. */
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly poll: NodeJS.Timeout;
  private readonly conditions: CameraConditions;
  /** The cameras the last Halt disabled, which Reset enables again. */
  private halted: string[] = [];

  constructor(
    private readonly addressSpace: AddressSpace,
    ownNamespace: Namespace,
    private readonly control: LineControl,
    private readonly snapshot: () => NodeSnapshot,
    private readonly requester: (context: SessionContext | undefined) => Requester,
    private readonly log: Logger,
    /** Parts triggered over OPC UA and not answered yet. */
    private readonly outstanding: () => number,
  ) {
    this.mv = addressSpace.getNamespaceIndex(MACHINE_VISION_NAMESPACE_URI);
    const type = addressSpace.findObjectType("VisionSystemType", this.mv);
    if (type === null) throw new Error("the MachineVision nodeset has no VisionSystemType");
    this.system = type.instantiate({
      browseName: "VisionSystem",
      namespace: ownNamespace,
      organizedBy: addressSpace.rootFolder.objects,
      optionals: [
        "RecipeManagement",
        "ResultManagement",
        "SystemState",
        "VisionStateMachine.LastTransition",
        "VisionStateMachine.SelectModeAutomatic",
        "VisionStateMachine.AutomaticModeStateMachine",
        "VisionStateMachine.AutomaticModeStateMachine.LastTransition",
      ],
      eventNotifier: 1,
    });
    // a client that subscribes to the Server object's events (the usual place) gets the view's events too
    addressSpace.rootFolder.objects.server.addReference({
      referenceType: "HasNotifier",
      isForward: true,
      nodeId: this.system.nodeId,
    });
    // and the VisionSystem is the source of the camera conditions: node-opcua wants a HasEventSource itself there
    // (HasNotifier is its subtype, but node-opcua's check takes only the exact type)
    addressSpace.rootFolder.objects.server.addReference({
      referenceType: "HasEventSource",
      isForward: true,
      nodeId: this.system.nodeId,
    });
    this.machine = asStateMachine(this.component(this.system, "VisionStateMachine"), "VisionStateMachine");
    this.automatic = asStateMachine(
      this.component(this.machine, "AutomaticModeStateMachine"),
      "AutomaticModeStateMachine",
    );
    this.conditions = new CameraConditions(addressSpace, ownNamespace, this.system, this.mv);
    this.bindStateMethods();
    this.bindRecipes(ownNamespace);
    this.bindResults();
    this.refresh(this.control.snapshot());
    this.poll = setInterval(() => this.follow(), STATE_POLL_MS);
    this.poll.unref();
  }

  close(): void {
    clearInterval(this.poll);
    clearTimeout(this.flushTimer);
  }

  private component(parent: UAObject, name: string): UAObject | null {
    return parent.getComponentByName(name, this.mv) as UAObject | null;
  }

  private method(parent: UAObject, name: string): UAMethod {
    const method = parent.getMethodByName(name, this.mv);
    if (method === null) throw new Error(`the VisionSystem has no ${name}`);
    return method;
  }

  /**
   * {@link refresh} from a timer: a failure is logged, never thrown out of the event loop. From the control's own
   * snapshot, as Halt and Reset refresh: the interface's cached one (up to 200 ms old) could undo their state for a
   * poll (seen: Halted, then Operational for one poll after Halt, then Halted again).
   */
  private follow(): void {
    try {
      this.refresh(this.control.snapshot());
    } catch (err) {
      this.log.error({ err }, "OPC 40100 state machine update failed");
    }
  }

  /**
   * Moves the state machines to the line's state; entering Error raises an ErrorEvent, leaving it by itself (to
   * Preoperational or Operational: the specification's automatic transitions) an ErrorResolvedEvent.
   */
  private refresh(snapshot: NodeSnapshot): void {
    this.conditions.follow(snapshot.cameras);
    const { state: top, reason } = visionState(snapshot);
    const automatic =
      top === "Operational"
        ? automaticState({ outstanding: this.outstanding(), recentParts: this.parts.count() })
        : null;
    const before = this.state;
    if (before?.top === top && before.automatic === automatic && before.reason === reason) return;
    this.state = { top, automatic, reason };
    if (before?.top !== top) {
      // Halted → Operational and the like go through Preoperational, as the specification's transitions do
      if (before !== undefined && top !== "Preoperational" && !this.machine.isValidTransition(top)) {
        this.machine.setState("Preoperational");
      }
      this.machine.setState(top);
      if (top === "Error") this.raiseTransition("ErrorEventType", before?.top, top, reason, 800);
      if (before?.top === "Error" && top !== "Halted")
        this.raiseTransition("ErrorResolvedEventType", "Error", top, reason, 300);
      this.log.info({ from: before?.top ?? null, to: top, reason }, `OPC 40100 VisionStateMachine: ${top}`);
    }
    if (before?.automatic !== automatic) this.automatic.setState(automatic);
    this.setSystemState(top, automatic, reason);
  }

  /**
   * Runs {@link flush} within {@link FLUSH_MS}: the view's work for parts (records, events, state) happens in one
   * batch, as a rule after the PLC has seen ResultsReady.
   */
  private scheduleFlush(): void {
    if (this.flushTimer !== undefined) return;
    this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
    this.flushTimer.unref();
  }

  private raiseTransition(
    eventType: "ErrorEventType" | "ErrorResolvedEventType",
    from: VisionState | undefined,
    to: VisionState,
    reason: string,
    severity: number,
  ): void {
    const type = this.addressSpace.findEventType(eventType, this.mv);
    if (type === null) return;
    const text = (value: string) => new Variant({ dataType: DataType.LocalizedText, value: { text: value } });
    // raised at the VisionSystem (the notifier a client subscribes to), naming the state machine as its source
    this.system.raiseEvent(type, {
      sourceNode: new Variant({ dataType: DataType.NodeId, value: this.machine.nodeId }),
      sourceName: new Variant({ dataType: DataType.String, value: "VisionStateMachine" }),
      message: text(reason),
      severity: new Variant({ dataType: DataType.UInt16, value: severity }),
      transition: text(`${from ?? "Preoperational"}To${to}Auto`),
      fromState: text(from ?? ""),
      toState: text(to),
    });
  }

  /** The top-level machine's methods, through the control (audited with the session's user). */
  private bindStateMethods(): void {
    this.method(this.machine, "Halt").bindMethod(async (_inputs: Variant[], context: SessionContext) => {
      const top = this.state?.top;
      if (top === "Halted") return refuse(StatusCodes.BadInvalidState, "already Halted");
      const by = this.requester(context);
      const enabled = this.control
        .snapshot()
        .cameras.filter((c) => c.enabled)
        .map((c) => c.id);
      const failed = await this.enableAll(enabled, false, by);
      if (failed !== undefined) return failed;
      this.halted = enabled;
      this.log.info({ user: by.user, cameras: enabled }, "OPC 40100 Halt: every camera disabled");
      // the control's own snapshot: the interface's cached one may predate the change
      this.refresh(this.control.snapshot());
      return answer();
    });
    this.method(this.machine, "Reset").bindMethod(async (_inputs: Variant[], context: SessionContext) => {
      const state = this.state;
      if (state?.top === "Error") {
        return refuse(
          StatusCodes.BadInvalidState,
          `Error: ${state.reason}; stpmd leaves Error by itself once the cause is gone (e.g. ReloadModel)`,
        );
      }
      if (state?.top !== "Halted") return refuse(StatusCodes.BadInvalidState, `not Halted (${state?.top})`);
      const by = this.requester(context);
      const known = this.control.snapshot().cameras.map((c) => c.id);
      // the cameras the last Halt disabled; halted some other way (every camera disabled elsewhere): all of them
      const halted = this.halted.filter((id) => known.includes(id));
      const cameras = halted.length > 0 ? halted : known;
      const failed = await this.enableAll(cameras, true, by);
      if (failed !== undefined) return failed;
      this.halted = [];
      this.log.info({ user: by.user, cameras }, "OPC 40100 Reset: cameras enabled again");
      // the control's own snapshot: the interface's cached one may predate the change
      this.refresh(this.control.snapshot());
      return answer();
    });
    // stpmd enters Operational by itself (Preoperational → Operational automatically once a camera streams)
    this.method(this.machine, "SelectModeAutomatic").bindMethod(
      async (_inputs: Variant[], _context: SessionContext) => {
        const top = this.state?.top;
        if (top === "Halted" || top === "Error") {
          return refuse(StatusCodes.BadInvalidState, `${top}: call Reset first`);
        }
        return answer();
      },
    );
    const notSupported =
      "stpmd judges a part per trigger of its camera (the urn:stpmd Trigger/PartId handshake or a trigger command), " +
      "not per job started here; Halt stops inspecting";
    for (const name of ["StartSingleJob", "StartContinuous", "Stop", "Abort"]) {
      this.method(this.automatic, name).bindMethod(async (_inputs: Variant[], _context: SessionContext) =>
        refuse(StatusCodes.BadNotSupported, `${name}: ${notSupported}`),
      );
    }
  }

  /** Selects a recipe (null: none) through the control; a refusal is the method's Bad answer with the reason. */
  private async selectRecipe(
    name: string | null,
    by: Requester,
    method: string,
  ): Promise<ReturnType<typeof refuse> | undefined> {
    try {
      await this.control.selectRecipe(name, by);
      return undefined;
    } catch (err) {
      if (!(err instanceof ControlError)) this.log.error({ err }, `${method} failed`);
      this.log.warn({ user: by.user, method }, `${method} refused: ${(err as Error).message}`);
      return refuse(StatusCodes.BadInvalidArgument, (err as Error).message);
    }
  }

  /** Enables or disables cameras through the control; a refusal is the method's Bad answer with the reason. */
  private async enableAll(
    cameras: string[],
    enabled: boolean,
    by: Requester,
  ): Promise<{ statusCode: StatusCode; statusText: string } | undefined> {
    try {
      for (const camera of cameras) await this.control.enableCamera(camera, enabled, by);
      return undefined;
    } catch (err) {
      if (!(err instanceof ControlError)) this.log.error({ err }, "OPC 40100 state machine method failed");
      return refuse(StatusCodes.BadInvalidState, (err as Error).message);
    }
  }

  /**
   * Sets the SystemState from the state machines' states. node-opcua refuses a getter on a structure-valued
   * variable, so the value is set on each change of state (from {@link refresh}).
   */
  private setSystemState(top: VisionState, automatic: AutomaticState | null, reason: string): void {
    const variable = this.system.getComponentByName("SystemState", this.mv);
    if (variable === null || !("setValueFromSource" in variable)) {
      throw new Error("the VisionSystem has no SystemState");
    }
    const value = this.struct("SystemStateDescriptionDataType", {
      state: systemState(top, automatic ?? "Ready"),
      stateDescription: `${top}${automatic !== null ? `/${automatic}` : ""}: ${reason}`,
    });
    variable.setValueFromSource(ext(value));
  }

  private bindRecipes(own: Namespace): void {
    const management = this.component(this.system, "RecipeManagement");
    if (management === null) throw new Error("the VisionSystem has no RecipeManagement");
    const internalType = this.addressSpace.findDataType("RecipeIdInternalDataType", this.mv);
    const internalId = (name: string) =>
      internalType === null ? null : this.addressSpace.constructExtensionObject(internalType, { id: name });
    const prepare = management.getMethodByName("PrepareRecipe", this.mv);
    prepare?.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      const name = idOf(inputs[0]);
      const refused = await this.selectRecipe(name === "" ? null : name, by, "PrepareRecipe");
      if (refused !== undefined) return refused;
      return answer([ext(internalId(name)), new Variant({ dataType: DataType.Boolean, value: true })]);
    });
    // Unpreparing the recipe in force returns the line to no recipe (every camera's own settings); another one is
    // not prepared (stpmd loads a recipe's bundles only to switch to it), so there is nothing to undo.
    const unprepare = management.getMethodByName("UnprepareRecipe", this.mv);
    unprepare?.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      const name = idOf(inputs[1]) || idOf(inputs[0]);
      if (name !== "" && name === this.control.snapshot().recipe) {
        const refused = await this.selectRecipe(null, by, "UnprepareRecipe");
        if (refused !== undefined) return refused;
      }
      return answer([ext(internalId(name))]);
    });
    const list = management.getMethodByName("GetRecipeListFiltered", this.mv);
    list?.bindMethod(async (_inputs: Variant[], _context: SessionContext) => {
      const names = this.snapshot().recipes;
      return answer([
        new Variant({ dataType: DataType.Boolean, value: true }),
        new Variant({ dataType: DataType.UInt32, value: names.length }),
        new Variant({ dataType: DataType.UInt32, value: 0 }),
        new Variant({
          dataType: DataType.ExtensionObject,
          arrayType: VariantArrayType.Array,
          value: names.map(internalId),
        }),
      ]);
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

  /** One of the specification's structures (a DataType of the MachineVision namespace) with the given fields. */
  private struct(name: string, fields: Record<string, unknown>): unknown {
    const type = this.addressSpace.findDataType(name, this.mv);
    if (type === null) throw new Error(`the MachineVision nodeset has no ${name}`);
    return this.addressSpace.constructExtensionObject(type, fields);
  }

  /** The ResultDataType's fields of a record, as the structures the specification types them with. */
  private resultFields(record: ResultRecord): Record<string, unknown> {
    return {
      resultId: this.struct("ResultIdDataType", { id: record.resultId }),
      hasTransferableDataOnFile: false,
      isPartial: false,
      isSimulated: false,
      resultState: record.state,
      partId: this.struct("PartIdDataType", { id: record.partId }),
      externalRecipeId: this.struct("RecipeIdExternalDataType", { id: record.recipe }),
      internalRecipeId: this.struct("RecipeIdInternalDataType", { id: record.recipe }),
      internalConfigurationId: this.struct("ConfigurationIdDataType", { id: record.camera }),
      jobId: this.struct("JobIdDataType", { id: record.jobId }),
      creationTime: record.creationTime,
      processingTimes: this.struct("ProcessingTimesDataType", {
        startTime: record.startTime,
        endTime: record.endTime,
      }),
      // the verdict, score and threshold: ResultContent is the specification's place for application data
      resultContent: [
        new Variant({ dataType: DataType.String, value: record.verdict }),
        new Variant({ dataType: DataType.Double, value: record.score }),
        new Variant({ dataType: DataType.Double, value: record.threshold }),
      ],
    };
  }

  private resultValue(record: ResultRecord): Variant {
    return ext(this.struct("ResultDataType", this.resultFields(record)));
  }

  /** ResultManagement's mandatory methods, answered from the last results ({@link ResultStore}). */
  private bindResults(): void {
    const management = this.component(this.system, "ResultManagement");
    if (management === null) throw new Error("the VisionSystem has no ResultManagement");
    const noHandle = new Variant({ dataType: DataType.UInt32, value: 0 });
    const notFound = (id: string) =>
      refuse(
        StatusCodes.BadNotFound,
        `no result "${id}" among the last ${this.results.size} (the view keeps the last results only)`,
      );
    this.method(management, "GetResultById").bindMethod(
      async (inputs: Variant[], _context: SessionContext) => {
        const id = idOf(inputs[0]);
        const record = this.results.get(id);
        if (record === undefined) return notFound(id);
        return answer([noHandle, this.resultValue(record)]);
      },
    );
    this.method(management, "GetResultComponentsById").bindMethod(
      async (inputs: Variant[], _context: SessionContext) => {
        const id = idOf(inputs[0]);
        const record = this.results.get(id);
        if (record === undefined) return notFound(id);
        const f = this.resultFields(record);
        const empty = (type: string) => ext(this.struct(type, { id: "" }));
        return answer([
          new Variant({ dataType: DataType.Boolean, value: false }),
          noHandle,
          new Variant({ dataType: DataType.Boolean, value: false }),
          new Variant({ dataType: DataType.Boolean, value: false }),
          new Variant({ dataType: DataType.Int32, value: record.state }),
          empty("MeasIdDataType"),
          ext(f.partId),
          ext(f.externalRecipeId),
          ext(f.internalRecipeId),
          empty("ProductIdDataType"),
          empty("ConfigurationIdDataType"),
          ext(f.internalConfigurationId),
          ext(f.jobId),
          new Variant({ dataType: DataType.DateTime, value: record.creationTime }),
          ext(f.processingTimes),
          new Variant({
            dataType: DataType.Variant,
            arrayType: VariantArrayType.Array,
            value: f.resultContent,
          }),
        ]);
      },
    );
    this.method(management, "GetResultListFiltered").bindMethod(
      async (inputs: Variant[], _context: SessionContext) => {
        const filter: ResultFilter = {
          state: Number(inputs[0]?.value ?? 0),
          measId: idOf(inputs[1]),
          partId: idOf(inputs[2]),
          externalRecipeId: idOf(inputs[3]),
          internalRecipeId: idOf(inputs[4]),
          externalConfigurationId: idOf(inputs[5]),
          internalConfigurationId: idOf(inputs[6]),
          productId: idOf(inputs[7]),
          jobId: idOf(inputs[8]),
        };
        const max = Number(inputs[9]?.value ?? 0);
        const start = Number(inputs[10]?.value ?? 0);
        const page = this.results.list(filter, start, max);
        return answer([
          new Variant({ dataType: DataType.Boolean, value: page.complete }),
          new Variant({ dataType: DataType.UInt32, value: page.matching }),
          noHandle,
          new Variant({
            dataType: DataType.ExtensionObject,
            arrayType: VariantArrayType.Array,
            value: page.records.map((record) => this.struct("ResultDataType", this.resultFields(record))),
          }),
        ]);
      },
    );
  }

  /** A part triggered over OPC UA was accepted: the automatic-mode state follows with the next flush. */
  partStarted(): void {
    this.parts.add();
    this.scheduleFlush();
  }

  /**
   * A part's result (`triggeredHere`: the part was triggered over OPC UA, so {@link partStarted} counted it). Its
   * record, event and state change wait for the next flush.
   */
  onResult(result: InspectionResult, triggeredHere: boolean): void {
    if (!triggeredHere) this.parts.add();
    this.pendingResults.push(result);
    this.scheduleFlush();
  }

  private flush(): void {
    this.flushTimer = undefined;
    const batch = this.pendingResults;
    this.pendingResults = [];
    for (const result of batch) {
      try {
        this.publish(result);
      } catch (err) {
        this.log.error({ err, camera: result.frame.cameraId }, "OPC 40100 ResultReady failed");
      }
    }
    this.follow();
  }

  /** Stores the part's result and raises its ResultReadyEvent. */
  private publish(result: InspectionResult): void {
    this.resultCount += 1;
    const record = resultRecord(result, this.resultCount);
    this.results.add(record);
    const eventType = this.addressSpace.findEventType("ResultReadyEventType", this.mv);
    if (eventType === null) return;
    const fields = this.resultFields(record);
    this.system.raiseEvent(eventType, {
      message: new Variant({
        dataType: DataType.LocalizedText,
        value: new LocalizedText({ text: `${record.camera} ${record.verdict} ${record.score}` }),
      }),
      severity: new Variant({ dataType: DataType.UInt16, value: result.verdict === "ok" ? 100 : 500 }),
      resultId: ext(fields.resultId),
      resultState: new Variant({ dataType: DataType.Int32, value: record.state }),
      partId: ext(fields.partId),
      jobId: ext(fields.jobId),
      internalRecipeId: ext(fields.internalRecipeId),
      internalConfigurationId: ext(fields.internalConfigurationId),
      isPartial: new Variant({ dataType: DataType.Boolean, value: false }),
      creationTime: new Variant({ dataType: DataType.DateTime, value: record.creationTime }),
      processingTimes: ext(fields.processingTimes),
      resultContent: new Variant({
        dataType: DataType.Variant,
        arrayType: VariantArrayType.Array,
        value: fields.resultContent,
      }),
    });
  }
}
