/**
 * The OPC UA server the line's PLC talks to: a trigger/result handshake per camera (PLC writes PartId and raises
 * Trigger; the tagged frame's verdict appears with ResultsReady; the PLC raises ResultsAck, sees ResultsReady fall,
 * lowers ResultsAck, and the next result appears), node-wide status, and methods that go to {@link LineControl}.
 * The handshake, the address space and the queue policy are described in docs/line-integration/opcua.md.
 *
 * Every request the PLC can make is answered with a status code: a refused one (queue full, camera disabled,
 * wrong type, unknown camera, out of range, a {@link ControlError}) gets a Bad code and one log line and changes no
 * state; nothing a client sends can throw out of this module.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { format } from "node:util";
import { OPCUACertificateManager } from "node-opcua-certificate-manager";
// The value types are re-exported by node-opcua-client; the server package exports only its own classes, and
// both packages resolve to the same node-opcua-variant/-status-code (one version in the lock).
import {
  DataType,
  MessageSecurityMode,
  SecurityPolicy,
  type StatusCode,
  StatusCodes,
  setErrorLogger,
  setWarningLogger,
  UserNameIdentityToken,
  Variant,
  VariantArrayType,
} from "node-opcua-client";
import { OPCUAServer, RegisterServerMethod } from "node-opcua-server";
import { type OpcuaConfig, readPasswordFile } from "../../config/index.js";
import { buildInfo } from "../../core/build-info.js";
import type { Logger } from "../../core/log.js";
import type { InspectionResult } from "../../core/result.js";
import type { CandidateView } from "../candidates.js";
import {
  ControlError,
  type LineControl,
  type ModelChangeOutcome,
  type NodeSnapshot,
  type Requester,
} from "../control.js";
import type { ResultBatch, ResultSink, SinkHealth } from "../sink.js";
import { defectEventId } from "../topics.js";
import { MachineVisionView, machineVisionNodesets } from "./machine-vision.js";

/** The namespace of stpmd's nodes; its index is usually 2 (read the server's NamespaceArray to be sure). */
export const OPCUA_NAMESPACE_URI = "urn:stpmd";

/** ErrorCode values. */
export const OPCUA_ERROR = {
  none: 0,
  /** No result within trigger_timeout_ms of the trigger. */
  triggerTimeout: 1,
  /** The frame was inspected but could not be judged: the model's score was not a finite number. */
  noVerdict: 2,
} as const;

// node-opcua's address-space types, named through the server's own API so that only declared packages are imported.
type AddressSpace = NonNullable<OPCUAServer["engine"]["addressSpace"]>;
type Namespace = ReturnType<AddressSpace["getOwnNamespace"]>;
type UAVariable = ReturnType<Namespace["addVariable"]>;
type UAObject = ReturnType<Namespace["addObject"]>;
type SessionContext = Parameters<UAVariable["isUserWritable"]>[0];

/** The user behind a request: the user name of a UserName session, undefined for an anonymous one. */
function userOf(context: SessionContext | undefined): string | undefined {
  const token = context?.session?.userIdentityToken;
  return token instanceof UserNameIdentityToken && token.userName !== null ? token.userName : undefined;
}

/** What a camera presents to the PLC once a trigger is answered: a verdict, or the trigger's timeout. */
type Delivery =
  | { kind: "result"; partId: string; result: InspectionResult }
  | { kind: "timeout"; partId: string; afterMs: number };

interface PendingTrigger {
  partId: string;
  acceptedAt: number;
  timer: NodeJS.Timeout;
}

/** Counters of one camera's handshake, also exposed as variables. */
export interface OpcuaCameraStats {
  /** Triggers accepted and waiting for their frame. */
  pending: number;
  /** Answers waiting behind the one presented. */
  queued: number;
  presented: boolean;
  resultCounter: number;
  triggersRefused: number;
  timeouts: number;
  /** Results that arrived after their trigger had timed out (the PLC got the error instead). */
  lateResults: number;
}

/** node-opcua makes a variable writable unless told otherwise. */
const READ_ONLY = { accessLevel: "CurrentRead", userAccessLevel: "CurrentRead" } as const;

/**
 * Longest part id a PLC may write to `PartId`, in characters. The id travels in every result and defect payload and
 * in log lines; PLC part ids (serials, DMC codes) are tens of characters, and an unbounded one (1 MiB was accepted)
 * would be copied into each of them.
 */
export const MAX_PART_ID_LENGTH = 256;

/** How many timed-out part ids are remembered to recognise their late results. */
const TIMED_OUT_MEMORY = 64;

/** How long one snapshot serves reads of the node-wide variables: a PLC polling fast must not rebuild it each time. */
const SNAPSHOT_CACHE_MS = 200;

class CameraChannel {
  readonly pending: PendingTrigger[] = [];
  readonly queue: Delivery[] = [];
  presented: Delivery | undefined;
  /** The PLC's Trigger bit; a trigger is its rising edge. */
  triggerBit = false;
  /** The PLC's ResultsAck bit. */
  ackBit = false;
  partId = "";
  resultCounter = 0;
  triggersRefused = 0;
  timeouts = 0;
  lateResults = 0;
  readonly timedOut: string[] = [];
  readonly vars = new Map<string, UAVariable>();

  constructor(readonly id: string) {}

  outstanding(): number {
    return this.pending.length + this.queue.length + (this.presented !== undefined ? 1 : 0);
  }
}

/**
 * The OPC UA server, a {@link ResultSink} (a live view: nothing is held for a client that is away). Cameras are
 * those of the control's snapshot at start.
 */
export class OpcuaInterface implements ResultSink {
  readonly name = "opcua";
  readonly durable = false;
  /** The server once listening. */
  private server: OPCUAServer | undefined;
  /** The server being (or once) initialized by {@link prepare}; start() builds on it. */
  private preparing: Promise<OPCUAServer> | undefined;
  private readonly channels = new Map<string, CameraChannel>();
  private readonly log: Logger;
  private cachedSnapshot: { at: number; snapshot: NodeSnapshot } | undefined;
  /** The control's candidates() by camera, serving the `Model` variables' reads as the snapshot serves the rest. */
  private cachedCandidates: { at: number; views: Map<string, CandidateView> } | undefined;
  /**
   * The session context of the write being handled. node-opcua hands a setter only the value; the wrapper of
   * writeValue (see captureWriter) records the context around the synchronous call that reaches the setter.
   */
  private writeContext: SessionContext | undefined;
  private stopping = false;
  /** The OPC 40100 view, when `machine_vision.enabled`. */
  private machineVision: MachineVisionView | undefined;
  /** The PLC's recipe handshake (see {@link addRecipeNodes}). */
  private readonly recipe = {
    request: "",
    busy: false,
    done: false,
    ack: false,
    error: false,
    message: "",
    vars: new Map<string, UAVariable>(),
  };

  constructor(
    private readonly config: OpcuaConfig,
    private readonly control: LineControl,
    logger: Logger,
  ) {
    this.log = logger.child({ component: "opcua" });
  }

  /** `opc.tcp://host:port`, once started. */
  get endpointUrl(): string {
    const endpoint = this.server?.getEndpointUrl();
    if (endpoint === undefined) throw new Error("the OPC UA server is not started");
    return endpoint;
  }

  stats(camera: string): OpcuaCameraStats {
    const c = this.channels.get(camera);
    if (c === undefined) throw new Error(`unknown camera "${camera}"`);
    return {
      pending: c.pending.length,
      queued: c.queue.length,
      presented: c.presented !== undefined,
      resultCounter: c.resultCounter,
      triggersRefused: c.triggersRefused,
      timeouts: c.timeouts,
      lateResults: c.lateResults,
    };
  }

  /**
   * Everything that needs the configuration only: node-opcua's loggers, the users' passwords, the certificate
   * stores with the server's key and self-signed certificate (made on a first start), and the standard address
   * space. The daemon runs this while the models load, so the port opens right after them (issue 23: it opened
   * 25 s after the model on a first start; docs/line-integration/opcua.md has the measurements). Idempotent.
   */
  prepare(): Promise<void> {
    this.preparing ??= this.initialize();
    return this.preparing.then(() => undefined);
  }

  private async initialize(): Promise<OPCUAServer> {
    const { config } = this;
    const began = Date.now();
    // node-opcua prints to the console (stdout) by default; in the daemon its lines belong in the JSON log. It
    // reports a client's failures (untrusted certificate, a bad secure channel) as errors: they are warnings here,
    // the daemon is fine.
    const libraryLog = this.log.child({ library: "node-opcua" });
    setWarningLogger((...args: unknown[]) => libraryLog.warn(format(...args).trim()));
    setErrorLogger((...args: unknown[]) => libraryLog.warn(format(...args).trim()));
    const passwords = new Map<string, string>();
    for (const user of config.users) {
      try {
        passwords.set(user.username, readPasswordFile(user.password_file));
      } catch (err) {
        throw new Error(`opcua.users "${user.username}": ${(err as Error).message}`);
      }
    }
    // node-opcua creates the store's subfolders and the server's self-signed certificate, but not the parent.
    mkdirSync(config.pki_dir, { recursive: true, mode: 0o700 });
    const serverCertificateManager = new OPCUACertificateManager({
      rootFolder: config.pki_dir,
      automaticallyAcceptUnknownCertificate: config.security.accept_unknown_certificates,
    });
    // Without its own store node-opcua would create one under $HOME/.config, which a service user may not have.
    const userCertificateManager = new OPCUACertificateManager({
      rootFolder: path.join(config.pki_dir, "user-certificates"),
      automaticallyAcceptUnknownCertificate: false,
    });
    const build = buildInfo();
    const server = new OPCUAServer({
      port: config.port,
      host: config.bind,
      ...(config.hostname !== undefined ? { hostname: config.hostname } : {}),
      securityPolicies: config.security.policies.map((policy) => SecurityPolicy[policy]),
      securityModes: config.security.modes.map((mode) => MessageSecurityMode[mode]),
      allowAnonymous: config.allow_anonymous,
      userManager: {
        isValidUser: (username: string, password: string) => {
          const ok = passwords.has(username) && passwords.get(username) === password;
          if (!ok) this.log.warn({ user: username }, `OPC UA login refused for user "${username}"`);
          return ok;
        },
      },
      serverCertificateManager,
      userCertificateManager,
      registerServerMethod: RegisterServerMethod.HIDDEN,
      serverInfo: { applicationName: { text: build.productName }, productUri: build.productUri },
      // without all of them node-opcua fills in its own name, version and a 2020 build date
      buildInfo: build,
      // the standard nodeset is node-opcua's default; the Machine Vision view needs DI and its own too
      ...(config.machine_vision.enabled ? { nodesets: machineVisionNodesets() } : {}),
    });
    await server.initialize();
    this.log.info({ ms: Date.now() - began }, "OPC UA server prepared: certificates and address space");
    return server;
  }

  async start(): Promise<void> {
    const { config } = this;
    await this.prepare();
    const server = await this.preparing!;
    const addressSpace = server.engine.addressSpace;
    if (addressSpace === null) throw new Error("node-opcua built no address space");
    this.build(addressSpace);
    try {
      await server.start();
    } catch (err) {
      this.preparing = undefined;
      await server.shutdown(0).catch(() => undefined);
      throw new Error(
        `OPC UA server cannot listen on ${config.bind}:${config.port}: ${(err as Error).message}`,
      );
    }
    this.server = server;
    this.log.info(
      {
        endpoint: server.getEndpointUrl(),
        cameras: [...this.channels.keys()],
        policies: config.security.policies,
        modes: config.security.modes,
        anonymous: config.allow_anonymous,
      },
      "OPC UA server listening",
    );
  }

  /** Also after a {@link prepare} without a start (the daemon's start failed while the models loaded). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.machineVision?.close();
    for (const channel of this.channels.values()) {
      for (const trigger of channel.pending) clearTimeout(trigger.timer);
    }
    const prepared = this.preparing;
    this.server = undefined;
    this.preparing = undefined;
    const server = await prepared?.catch(() => undefined);
    await server?.shutdown(0);
  }

  deliver(batch: ResultBatch): void {
    for (const result of batch.results) this.onResult(result);
  }

  health(): SinkHealth {
    const server = this.server;
    if (server === undefined) return { ok: false, detail: "not listening", connection: { sessions: 0 } };
    return { ok: true, connection: { sessions: server.currentSessionCount } };
  }

  onResult(result: InspectionResult): void {
    const partId = result.frame.partId;
    // Only triggered frames take part in the handshake: a free-running camera's other frames would flood it.
    if (partId === undefined || this.stopping) return;
    const triggeredHere = this.answer(result, partId);
    // after the handshake: the view batches its work (machine-vision.ts, FLUSH_MS), not between result and ResultsReady
    this.machineVision?.onResult(result, triggeredHere);
  }

  /** Hands a part's result to the handshake of its camera; false when the part was not triggered over OPC UA. */
  private answer(result: InspectionResult, partId: string): boolean {
    const channel = this.channels.get(result.frame.cameraId);
    if (channel === undefined) return false;
    const index = channel.pending.findIndex((trigger) => trigger.partId === partId);
    if (index < 0) {
      const late = channel.timedOut.indexOf(partId);
      if (late >= 0) {
        channel.timedOut.splice(late, 1);
        channel.lateResults += 1;
        this.setValue(channel, "LateResults", DataType.UInt32, channel.lateResults);
        this.log.warn(
          { camera: channel.id, part_id: partId, seq: result.frame.seq },
          `result for part "${partId}" came after its trigger timed out; the PLC got the timeout, not this result`,
        );
      } else {
        // Another interface's trigger (e.g. MQTT commands): not this PLC's part.
        this.log.debug(
          { camera: channel.id, part_id: partId },
          "result for a part not triggered over OPC UA",
        );
      }
      return false;
    }
    const [trigger] = channel.pending.splice(index, 1);
    clearTimeout(trigger!.timer);
    channel.queue.push({ kind: "result", partId, result });
    this.present(channel);
    return true;
  }

  private snapshot(): NodeSnapshot {
    const now = Date.now();
    if (this.cachedSnapshot === undefined || now - this.cachedSnapshot.at > SNAPSHOT_CACHE_MS) {
      this.cachedSnapshot = { at: now, snapshot: this.control.snapshot() };
    }
    return this.cachedSnapshot.snapshot;
  }

  /**
   * A camera's candidate view, from one candidates() call per {@link SNAPSHOT_CACHE_MS} for every camera and
   * variable (in the daemon it reads each camera's job.json and stats its candidate's manifest). Undefined where the
   * node runs no candidates. Should it throw, the last views are kept and the failure logged.
   */
  private candidateView(camera: string): CandidateView | undefined {
    const now = Date.now();
    if (this.cachedCandidates === undefined || now - this.cachedCandidates.at > SNAPSHOT_CACHE_MS) {
      try {
        const views = new Map(this.control.candidates().map((view) => [view.camera, view]));
        this.cachedCandidates = { at: now, views };
      } catch (err) {
        this.log.warn({ err }, "OPC UA: the candidate models' state could not be read; showing the last one");
        this.cachedCandidates = { at: now, views: this.cachedCandidates?.views ?? new Map() };
      }
    }
    return this.cachedCandidates.views.get(camera);
  }

  private requester(context: SessionContext | undefined): Requester {
    const user = userOf(context);
    return user !== undefined ? { via: "opcua", user } : { via: "opcua" };
  }

  private build(addressSpace: AddressSpace): void {
    const ns = addressSpace.registerNamespace(OPCUA_NAMESPACE_URI);
    // A folder (FolderType) so that the camera folders can hang below it; it holds the methods too.
    const root = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "stpmd", nodeId: "s=stpmd" });
    const getter = (dataType: DataType, read: (s: NodeSnapshot) => unknown) => ({
      get: () => new Variant({ dataType, value: read(this.snapshot()) }),
    });
    const nodeVariable = (
      name: string,
      dataType: DataType,
      read: (s: NodeSnapshot) => unknown,
      doc: string,
    ) =>
      ns.addVariable({
        componentOf: root,
        browseName: name,
        nodeId: `s=stpmd.${name}`,
        dataType,
        description: doc,
        ...READ_ONLY,
        minimumSamplingInterval: SNAPSHOT_CACHE_MS,
        value: getter(dataType, read),
      });
    nodeVariable(
      "ModelVersion",
      DataType.String,
      (s) => [...new Set(s.models.map((m) => m.model_version))].join(", "),
      "model_version of the loaded bundle(s), comma-separated when stations use different bundles",
    );
    nodeVariable("Ready", DataType.Boolean, (s) => s.ready, "model loaded and frames flowing");
    nodeVariable("Fps", DataType.Double, (s) => s.fps, "frames inspected per second, all cameras");
    nodeVariable("OutboxQueued", DataType.UInt32, (s) => s.outbox.queued, "defect events waiting on disk");
    nodeVariable(
      "OutboxOverflowed",
      DataType.UInt32,
      (s) => s.outbox.overflowed,
      "events refused, outbox full",
    );
    nodeVariable("OutboxLost", DataType.UInt32, (s) => s.outbox.lost, "events lost to write errors");
    this.addMethods(ns, root);
    this.addRecipeNodes(ns, root);
    if (this.config.machine_vision.enabled) {
      this.machineVision = new MachineVisionView(
        addressSpace,
        ns,
        this.control,
        () => this.snapshot(),
        (context) => this.requester(context),
        this.log,
        () => [...this.channels.values()].reduce((sum, channel) => sum + channel.pending.length, 0),
      );
    }
    for (const camera of this.control.snapshot().cameras) this.addCamera(ns, root, camera.id);
  }

  private addCamera(ns: Namespace, root: UAObject, id: string): void {
    const channel = new CameraChannel(id);
    this.channels.set(id, channel);
    const folder = ns.addFolder(root, { browseName: id, nodeId: `s=stpmd.${id}` });
    /** What every variable of the camera's folder has: its place, node id, type and description. */
    const identity = (name: string, dataType: DataType, doc: string) => ({
      componentOf: folder,
      browseName: name,
      nodeId: `s=stpmd.${id}.${name}`,
      dataType,
      description: doc,
    });
    const add = (name: string, dataType: DataType, value: unknown, doc: string) => {
      const variable = ns.addVariable({
        ...identity(name, dataType, doc),
        ...READ_ONLY,
        // Set from the handshake, never sampled: 0 makes subscriptions report every change as it happens, so a
        // ResultsReady true → false → true within one sampling period is not lost.
        minimumSamplingInterval: 0,
        value: new Variant({ dataType, value }),
      });
      channel.vars.set(name, variable);
      return variable;
    };
    const writable = (
      name: string,
      dataType: WritableType,
      doc: string,
      get: () => unknown,
      set: (value: unknown, by: Requester) => StatusCode,
    ) => {
      const variable = this.addWritable(ns, identity(name, dataType, doc), `${id}.${name}`, get, set, id);
      channel.vars.set(name, variable);
    };
    ns.addVariable({
      componentOf: folder,
      browseName: "TriggerReady",
      nodeId: `s=stpmd.${id}.TriggerReady`,
      dataType: DataType.Boolean,
      description:
        "a Trigger now would be accepted: camera enabled and fewer than result_queue triggers outstanding",
      ...READ_ONLY,
      minimumSamplingInterval: 10,
      value: {
        get: () => new Variant({ dataType: DataType.Boolean, value: this.refusal(channel) === undefined }),
      },
    });
    writable(
      "PartId",
      DataType.String,
      "part id the next trigger tags its frame with; write it before raising Trigger",
      () => channel.partId,
      (value) => {
        // a null String (OPC UA's "no value") is the empty part id
        const partId = typeof value === "string" ? value : "";
        if (partId.length > MAX_PART_ID_LENGTH) {
          throw new ArgumentError(
            StatusCodes.BadOutOfRange,
            `part id of ${partId.length} characters; at most ${MAX_PART_ID_LENGTH}`,
          );
        }
        channel.partId = partId;
        return StatusCodes.Good;
      },
    );
    writable(
      "Trigger",
      DataType.Boolean,
      "rising edge (false → true) = one trigger for PartId; lower it again before the next",
      () => channel.triggerBit,
      (value, by) => this.onTriggerWrite(channel, value === true, by),
    );
    writable(
      "ResultsAck",
      DataType.Boolean,
      "raise after reading a result (ResultsReady falls), lower again to get the next",
      () => channel.ackBit,
      (value) => this.onAckWrite(channel, value === true),
    );
    add("ResultsReady", DataType.Boolean, false, "a result (or a trigger's timeout) is presented");
    add("ResultRecipe", DataType.String, "", "recipe the presented frame was judged under; empty: none");
    add("ResultPartId", DataType.String, "", "part id of the presented result");
    add("ResultOK", DataType.Boolean, false, "presented frame judged good");
    add("ResultNG", DataType.Boolean, false, "presented frame judged defective");
    add("Score", DataType.Double, 0, "image anomaly score of the presented frame");
    add("Threshold", DataType.Double, 0, "threshold the presented frame was judged against");
    add("Regions", DataType.UInt32, 0, "defect regions in the presented frame");
    add("EventId", DataType.String, "", "event_id of the MQTT defect event when NG, else empty");
    add("ResultCounter", DataType.UInt32, 0, "increments with every presented result");
    add("Error", DataType.Boolean, false, "the presented answer is an error, not a verdict");
    add(
      "ErrorCode",
      DataType.UInt32,
      OPCUA_ERROR.none,
      "0 none, 1 trigger timeout, 2 no verdict (score not finite)",
    );
    add("QueuedResults", DataType.UInt32, 0, "answers waiting behind the presented one");
    add("TriggersRefused", DataType.UInt32, 0, "triggers refused since start (queue full, camera disabled)");
    add("LateResults", DataType.UInt32, 0, "results that came after their trigger had timed out");
    this.addModelNodes(ns, folder, id);
  }

  /**
   * The camera's `Model` folder (issue 22, docs/candidates.md): the methods that run the candidate loop from a SCADA,
   * each through the control in the session user's name (audited there, refused there with its reason), and
   * read-only variables of where the loop stands, from the control's candidates(). A model change names who asked,
   * so an anonymous session is refused, as the console refuses a request without a login.
   */
  private addModelNodes(ns: Namespace, cameraFolder: UAObject, camera: string): void {
    const folder = ns.addFolder(cameraFolder, { browseName: "Model", nodeId: `s=stpmd.${camera}.Model` });
    this.addModelVariables(ns, folder, camera);
    this.addModelMethods(ns, folder, camera);
  }

  /** Where the camera's candidate loop stands: read on demand through {@link candidateView}, no timer. */
  private addModelVariables(ns: Namespace, folder: UAObject, camera: string): void {
    const variable = (
      name: string,
      dataType: DataType,
      doc: string,
      read: (view: CandidateView | undefined) => unknown,
    ) =>
      ns.addVariable({
        componentOf: folder,
        browseName: name,
        nodeId: `s=stpmd.${camera}.Model.${name}`,
        dataType,
        description: doc,
        ...READ_ONLY,
        minimumSamplingInterval: SNAPSHOT_CACHE_MS,
        value: { get: () => new Variant({ dataType, value: read(this.candidateView(camera)) }) },
      });
    variable(
      "LiveVersion",
      DataType.String,
      "model_version of the live bundle",
      (v) => v?.live?.model_version ?? "",
    );
    variable(
      "CandidateVersion",
      DataType.String,
      "model_version of the candidate; empty: none",
      (v) => v?.candidate?.model_version ?? "",
    );
    variable(
      "JobState",
      DataType.String,
      "the last retrain job: running, done, failed, cancelled or interrupted; empty: none",
      (v) => v?.job?.state ?? "",
    );
    variable("JobEpoch", DataType.UInt32, "epochs the last job has trained", (v) => v?.job?.epoch ?? 0);
    variable("JobEpochs", DataType.UInt32, "the last job's epoch ceiling", (v) => v?.job?.epochs ?? 0);
    variable("ShadowFrames", DataType.UInt32, "frames the candidate judged in the shadow run", (v) =>
      Math.min(v?.shadow?.frames ?? 0, 2 ** 32 - 1),
    );
    variable(
      "ShadowState",
      DataType.String,
      "the shadow run: running or stopped; empty: none",
      (v) => v?.shadow?.state ?? "",
    );
  }

  /** The candidate loop's requests, each through the control in the session user's name; anonymous refused. */
  private addModelMethods(ns: Namespace, folder: UAObject, camera: string): void {
    const versionOut = (name: string, doc: string) => ({ name, dataType: DataType.String, description: doc });
    const changeOutputs = [
      versionOut("LiveVersion", "model_version now live"),
      versionOut("PreviousVersion", "model_version it replaced"),
    ];
    const versions = ({ after, before }: ModelChangeOutcome) =>
      [after, before].map(
        (bundle) => new Variant({ dataType: DataType.String, value: bundle?.model_version ?? "" }),
      );
    const method = (
      name: string,
      doc: string,
      run: (inputs: Variant[], by: Requester) => Promise<Variant[]>,
      inputArguments: { name: string; dataType: DataType; description: string }[] = [],
      outputArguments: { name: string; dataType: DataType; description: string }[] = [],
    ) => {
      const node = ns.addMethod(folder, {
        browseName: name,
        nodeId: `s=stpmd.${camera}.Model.${name}`,
        description: doc,
        inputArguments,
        outputArguments,
      });
      node.bindMethod(async (inputs: Variant[], context: SessionContext) => {
        const by = this.requester(context);
        return this.guard(`${camera}.Model.${name}`, by, async () => {
          if (by.user === undefined) {
            throw new ArgumentError(
              StatusCodes.BadUserAccessDenied,
              `${name} needs a user: log in with a user name (opcua.users), anonymous sessions cannot change models`,
            );
          }
          const outputs = await run(inputs, by);
          // what the method changed shows at the next read, not up to a cache period later
          this.cachedCandidates = undefined;
          this.cachedSnapshot = undefined;
          return { statusCode: StatusCodes.Good, outputArguments: outputs };
        });
      });
    };
    const { control } = this;
    method("Retrain", "start a retrain job that writes a candidate for this camera", async (_, by) => {
      await control.startRetrain(camera, by);
      return [];
    });
    method("CancelRetrain", "cancel the camera's running retrain job", async (_, by) => {
      await control.cancelRetrain(camera, by);
      return [];
    });
    method("StartShadow", "judge a share of the live frames with the candidate too", async (_, by) => {
      await control.setShadow(camera, true, by);
      return [];
    });
    method("StopShadow", "stop the shadow run", async (_, by) => {
      await control.setShadow(camera, false, by);
      return [];
    });
    method(
      "Promote",
      "put the candidate in service, keeping the live bundle for a rollback",
      async (inputs, by) => {
        const force = inputs[0]?.value;
        if (typeof force !== "boolean")
          throw new ArgumentError(StatusCodes.BadTypeMismatch, "Force must be a Boolean");
        return versions(await control.promote(camera, by, force));
      },
      [{ name: "Force", dataType: DataType.Boolean, description: "promote even if an enforced gate fails" }],
      changeOutputs,
    );
    method(
      "Rollback",
      "swap the bundle the last promotion or rollback replaced back in",
      async (_, by) => versions(await control.rollback(camera, by)),
      [],
      changeOutputs,
    );
    method("Discard", "delete the candidate, its shadow run and its offline evaluation", async (_, by) => {
      await control.discardCandidate(camera, by);
      return [];
    });
  }

  /**
   * Records the session context around node-opcua's writeValue: it checks access and type and then calls the
   * setter synchronously, so the setter can tell who wrote (for the control's log) without a race.
   */
  /**
   * A variable a client writes to change state (a camera's Threshold, the node's RecipeRequest): read through `get`;
   * a write is checked for its type and handed to `set` with who wrote it. A refused write is logged (`where` names
   * the node) and answered with its status; anything else is a BadInternalError, logged with its error.
   */
  private addWritable(
    ns: Namespace,
    node: Omit<Parameters<Namespace["addVariable"]>[0], "value">,
    where: string,
    get: () => unknown,
    set: (value: unknown, by: Requester) => StatusCode,
    camera?: string,
  ): UAVariable {
    const dataType = node.dataType as WritableType;
    const name = String(node.browseName);
    const variable = ns.addVariable({
      ...node,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      minimumSamplingInterval: 10,
      valueRank: -1,
      value: {
        get: () => new Variant({ dataType, value: get() }),
        set: (variant: Variant) => {
          const by = this.requester(this.writeContext);
          try {
            checkScalar(variant, dataType, name);
            return set(variant.value, by);
          } catch (err) {
            if (err instanceof ArgumentError) {
              this.log.warn(
                {
                  ...(camera !== undefined ? { camera } : {}),
                  node: name,
                  user: by.user,
                  status: err.status.name,
                },
                `OPC UA write to ${where} refused: ${err.message}`,
              );
              return err.status;
            }
            this.log.error(
              { err, ...(camera !== undefined ? { camera } : {}), node: name },
              `OPC UA write to ${where} failed`,
            );
            return StatusCodes.BadInternalError;
          }
        },
      },
    });
    this.captureWriter(variable);
    return variable;
  }

  private captureWriter(variable: UAVariable): void {
    const original = variable.writeValue.bind(variable) as (
      context: SessionContext,
      ...rest: unknown[]
    ) => unknown;
    const wrapped = (context: SessionContext, ...rest: unknown[]): unknown => {
      this.writeContext = context;
      try {
        return original(context, ...rest);
      } finally {
        this.writeContext = undefined;
      }
    };
    Object.assign(variable, { writeValue: wrapped });
  }

  /** Why a trigger would be refused now, or undefined when it would be accepted. */
  private refusal(channel: CameraChannel): { status: StatusCode; reason: string } | undefined {
    const camera = this.snapshot().cameras.find((c) => c.id === channel.id);
    if (camera === undefined || !camera.enabled) {
      return { status: StatusCodes.BadInvalidState, reason: `camera "${channel.id}" is disabled` };
    }
    if (channel.outstanding() >= this.config.result_queue) {
      return {
        status: StatusCodes.BadResourceUnavailable,
        reason: `camera "${channel.id}" has ${channel.outstanding()} triggers outstanding (opcua.result_queue)`,
      };
    }
    return undefined;
  }

  private onTriggerWrite(channel: CameraChannel, value: boolean, by: Requester): StatusCode {
    if (!value || channel.triggerBit) {
      channel.triggerBit = value;
      return StatusCodes.Good;
    }
    const partId = channel.partId;
    const refuse = ({ status, reason }: { status: StatusCode; reason: string }): StatusCode => {
      channel.triggersRefused += 1;
      this.setValue(channel, "TriggersRefused", DataType.UInt32, channel.triggersRefused);
      this.log.warn({ camera: channel.id, part_id: partId, user: by.user }, `trigger refused: ${reason}`);
      return status;
    };
    const refusal = this.refusal(channel);
    if (refusal !== undefined) return refuse(refusal);
    try {
      this.control.trigger(channel.id, partId, by, this.config.trigger_timeout_ms);
    } catch (err) {
      if (!(err instanceof ControlError)) throw err;
      return refuse({ status: StatusCodes.BadInvalidState, reason: err.message });
    }
    channel.triggerBit = true;
    const acceptedAt = Date.now();
    const timer = setTimeout(() => this.onTimeout(channel, timer), this.config.trigger_timeout_ms);
    channel.pending.push({ partId, acceptedAt, timer });
    this.machineVision?.partStarted();
    return StatusCodes.Good;
  }

  private onTimeout(channel: CameraChannel, timer: NodeJS.Timeout): void {
    const index = channel.pending.findIndex((trigger) => trigger.timer === timer);
    if (index < 0 || this.stopping) return;
    const [trigger] = channel.pending.splice(index, 1);
    const afterMs = Date.now() - trigger!.acceptedAt;
    channel.timeouts += 1;
    channel.timedOut.push(trigger!.partId);
    if (channel.timedOut.length > TIMED_OUT_MEMORY) channel.timedOut.shift();
    this.log.warn(
      { camera: channel.id, part_id: trigger!.partId, after_ms: afterMs },
      `no result for part "${trigger!.partId}" within ${this.config.trigger_timeout_ms} ms of its trigger`,
    );
    channel.queue.push({ kind: "timeout", partId: trigger!.partId, afterMs });
    this.present(channel);
  }

  private onAckWrite(channel: CameraChannel, value: boolean): StatusCode {
    if (!value) {
      channel.ackBit = false;
      this.present(channel);
      return StatusCodes.Good;
    }
    if (channel.ackBit) return StatusCodes.Good;
    if (channel.presented === undefined) {
      this.log.warn({ camera: channel.id }, "ResultsAck raised while no result is presented; ignored");
      return StatusCodes.BadInvalidState;
    }
    channel.ackBit = true;
    channel.presented = undefined;
    this.setValue(channel, "ResultsReady", DataType.Boolean, false);
    return StatusCodes.Good;
  }

  /** Presents the oldest queued answer, if nothing is presented and the PLC has lowered ResultsAck. */
  private present(channel: CameraChannel): void {
    this.setValue(channel, "QueuedResults", DataType.UInt32, channel.queue.length);
    if (channel.presented !== undefined || channel.ackBit || this.stopping) return;
    const next = channel.queue.shift();
    if (next === undefined) return;
    channel.presented = next;
    channel.resultCounter = (channel.resultCounter + 1) % 2 ** 32;
    const set = (name: string, dataType: DataType, value: unknown) =>
      this.setValue(channel, name, dataType, value);
    set("ResultPartId", DataType.String, next.partId);
    if (next.kind === "result") {
      const { result } = next;
      const { verdict } = result;
      // an error verdict is neither OK nor NG: the PLC sees Error with its code
      set("ResultOK", DataType.Boolean, verdict === "ok");
      set("ResultNG", DataType.Boolean, verdict === "defect");
      set("Score", DataType.Double, result.score);
      set("Threshold", DataType.Double, result.threshold);
      set("Regions", DataType.UInt32, result.regions.length);
      set("EventId", DataType.String, verdict === "defect" ? defectEventId(result) : "");
      set("Error", DataType.Boolean, verdict === "error");
      set("ErrorCode", DataType.UInt32, verdict === "error" ? OPCUA_ERROR.noVerdict : OPCUA_ERROR.none);
      set("ResultRecipe", DataType.String, result.frame.recipe ?? "");
    } else {
      set("ResultRecipe", DataType.String, "");
      set("ResultOK", DataType.Boolean, false);
      set("ResultNG", DataType.Boolean, false);
      set("Score", DataType.Double, 0);
      set("Threshold", DataType.Double, 0);
      set("Regions", DataType.UInt32, 0);
      set("EventId", DataType.String, "");
      set("Error", DataType.Boolean, true);
      set("ErrorCode", DataType.UInt32, OPCUA_ERROR.triggerTimeout);
    }
    set("ResultCounter", DataType.UInt32, channel.resultCounter);
    set("QueuedResults", DataType.UInt32, channel.queue.length);
    // Last, so that a client seeing ResultsReady (in the same data-change notification or a later read) sees the
    // rest of this result.
    set("ResultsReady", DataType.Boolean, true);
  }

  private setValue(channel: CameraChannel, name: string, dataType: DataType, value: unknown): void {
    channel.vars.get(name)?.setValueFromSource(new Variant({ dataType, value }));
  }

  private addMethods(ns: Namespace, root: UAObject): void {
    const cameraArg = { name: "Camera", dataType: DataType.String, description: "camera id" };
    const reload = ns.addMethod(root, {
      browseName: "ReloadModel",
      nodeId: "s=stpmd.ReloadModel",
      description: "re-read the configuration and reload changed bundles (what SIGHUP does)",
      inputArguments: [],
      outputArguments: [
        {
          name: "Swapped",
          dataType: DataType.String,
          valueRank: 1,
          arrayDimensions: [0],
          description: "bundles whose model changed",
        },
      ],
    });
    reload.bindMethod(async (_inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      return this.guard("ReloadModel", by, async () => {
        const outcome = await this.control.reload(by);
        if (!outcome.configApplied || outcome.failed.length > 0) {
          const why = outcome.configApplied
            ? `bundles failed to load (old models kept): ${outcome.failed.join(", ")}`
            : `configuration rejected (running one kept): ${outcome.problems.join("; ")}`;
          this.log.warn({ user: by.user }, `ReloadModel: ${why}`);
          return { statusCode: StatusCodes.BadConfigurationError, statusText: why };
        }
        return {
          statusCode: StatusCodes.Good,
          outputArguments: [
            new Variant({
              dataType: DataType.String,
              arrayType: VariantArrayType.Array,
              value: outcome.swapped,
            }),
          ],
        };
      });
    });

    const setThreshold = ns.addMethod(root, {
      browseName: "SetThreshold",
      nodeId: "s=stpmd.SetThreshold",
      description: "set a camera's image-score threshold (a fixed value, as threshold: {value})",
      inputArguments: [cameraArg, { name: "Value", dataType: DataType.Double, description: "threshold > 0" }],
      outputArguments: [{ name: "Previous", dataType: DataType.Double, description: "threshold before" }],
    });
    setThreshold.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      return this.guard("SetThreshold", by, async () => {
        const camera = this.knownCamera(inputs[0]?.value);
        const value = inputs[1]?.value;
        if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
          throw new ArgumentError(
            StatusCodes.BadOutOfRange,
            `threshold ${String(value)}: must be a positive number`,
          );
        }
        const { old } = this.control.setThreshold(camera, { value }, by);
        return {
          statusCode: StatusCodes.Good,
          outputArguments: [new Variant({ dataType: DataType.Double, value: old ?? Number.NaN })],
        };
      });
    });

    const enable = ns.addMethod(root, {
      browseName: "EnableCamera",
      nodeId: "s=stpmd.EnableCamera",
      description: "start (true) or stop (false) inspecting a camera",
      inputArguments: [cameraArg, { name: "On", dataType: DataType.Boolean, description: "enabled" }],
      outputArguments: [],
    });
    enable.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      return this.guard("EnableCamera", by, async () => {
        const camera = this.knownCamera(inputs[0]?.value);
        const on = inputs[1]?.value;
        if (typeof on !== "boolean")
          throw new ArgumentError(StatusCodes.BadTypeMismatch, "On must be a Boolean");
        await this.control.enableCamera(camera, on, by);
        this.cachedSnapshot = undefined;
        return { statusCode: StatusCodes.Good };
      });
    });
  }

  /**
   * Recipe selection (docs/recipes.md): the method `SelectRecipe(Name)` answers once the switch is made (or
   * refused); the nodes give a PLC the same in the trigger's handshake style, for one that cannot call methods.
   * The PLC writes the name to `RecipeRequest` (refused while a switch runs: `RecipeBusy`); stpmd loads the
   * recipe's bundles and switches, then sets `RecipeError` and `RecipeMessage` and raises `RecipeDone` last; the
   * PLC raises `RecipeAck`, `RecipeDone` falls, the PLC lowers `RecipeAck`. `Recipe` is the recipe in force.
   */
  private addRecipeNodes(ns: Namespace, root: UAObject): void {
    const state = this.recipe;
    // set from the handshake, never sampled (as a camera's ResultsReady): every change reaches a subscription
    const variable = (name: string, dataType: DataType, doc: string, value: unknown) => {
      const v = ns.addVariable({
        componentOf: root,
        browseName: name,
        nodeId: `s=stpmd.${name}`,
        dataType,
        description: doc,
        ...READ_ONLY,
        minimumSamplingInterval: 0,
        value: new Variant({ dataType, value }),
      });
      state.vars.set(name, v);
    };
    const writable = (
      name: string,
      dataType: WritableType,
      doc: string,
      get: () => unknown,
      set: (value: unknown, by: Requester) => StatusCode,
    ) => {
      const node = {
        componentOf: root,
        browseName: name,
        nodeId: `s=stpmd.${name}`,
        dataType,
        description: doc,
      };
      state.vars.set(name, this.addWritable(ns, node, name, get, set));
    };
    ns.addVariable({
      componentOf: root,
      browseName: "Recipe",
      nodeId: "s=stpmd.Recipe",
      dataType: DataType.String,
      description: "recipe in force; empty: every camera's own settings",
      ...READ_ONLY,
      minimumSamplingInterval: SNAPSHOT_CACHE_MS,
      value: { get: () => new Variant({ dataType: DataType.String, value: this.snapshot().recipe ?? "" }) },
    });
    writable(
      "RecipeRequest",
      DataType.String,
      "write a recipe's name (empty: none) to switch to it; RecipeDone rises when the switch is made or refused",
      () => state.request,
      (value, by) => {
        if (state.busy) {
          throw new ArgumentError(StatusCodes.BadInvalidState, "a recipe switch is running (RecipeBusy)");
        }
        const name = typeof value === "string" ? value : "";
        state.request = name;
        state.busy = true;
        state.done = false;
        this.recipeChanged();
        this.control
          .selectRecipe(name === "" ? null : name, by)
          .then(
            () => ({ error: false, message: "" }),
            (err: unknown) => {
              if (!(err instanceof ControlError)) this.log.error({ err }, "recipe switch failed");
              return { error: true, message: (err as Error).message };
            },
          )
          .then(({ error, message }) => {
            state.busy = false;
            state.error = error;
            state.message = message;
            this.cachedSnapshot = undefined;
            // last, as ResultsReady: a PLC seeing RecipeDone sees the rest of the answer
            state.done = !state.ack;
            this.recipeChanged();
          });
        return StatusCodes.Good;
      },
    );
    writable(
      "RecipeAck",
      DataType.Boolean,
      "raise after reading a recipe answer (RecipeDone falls), lower again before the next request",
      () => state.ack,
      (value) => {
        state.ack = value === true;
        if (state.ack) state.done = false;
        this.recipeChanged();
        return StatusCodes.Good;
      },
    );
    variable("RecipeBusy", DataType.Boolean, "a recipe switch is running", false);
    variable("RecipeError", DataType.Boolean, "the last recipe request was refused", false);
    variable("RecipeMessage", DataType.String, "why the last recipe request was refused", "");
    variable("RecipeDone", DataType.Boolean, "the answer to RecipeRequest is ready", false);

    const select = ns.addMethod(root, {
      browseName: "SelectRecipe",
      nodeId: "s=stpmd.SelectRecipe",
      description:
        "switch the line to a recipe (empty: every camera's own settings); returns once its bundles are loaded and the next frames are judged under it",
      inputArguments: [{ name: "Name", dataType: DataType.String, description: "recipe name" }],
      outputArguments: [{ name: "Previous", dataType: DataType.String, description: "recipe before" }],
    });
    select.bindMethod(async (inputs: Variant[], context: SessionContext) => {
      const by = this.requester(context);
      return this.guard("SelectRecipe", by, async () => {
        const name = inputs[0]?.value;
        if (name !== null && typeof name !== "string")
          throw new ArgumentError(StatusCodes.BadTypeMismatch, "Name must be a String");
        const { old } = await this.control.selectRecipe(name === null || name === "" ? null : name, by);
        this.cachedSnapshot = undefined;
        return {
          statusCode: StatusCodes.Good,
          outputArguments: [new Variant({ dataType: DataType.String, value: old ?? "" })],
        };
      });
    });
  }

  /** Sets the recipe handshake's nodes from its state; `RecipeDone` last, as `ResultsReady`. */
  private recipeChanged(): void {
    const { vars, busy, error, message, done } = this.recipe;
    const set = (name: string, dataType: DataType, value: unknown) =>
      vars.get(name)?.setValueFromSource(new Variant({ dataType, value }));
    set("RecipeBusy", DataType.Boolean, busy);
    set("RecipeError", DataType.Boolean, error);
    set("RecipeMessage", DataType.String, message);
    set("RecipeDone", DataType.Boolean, done);
  }

  private knownCamera(value: unknown): string {
    if (typeof value !== "string")
      throw new ArgumentError(StatusCodes.BadTypeMismatch, "Camera must be a String");
    if (!this.channels.has(value)) {
      throw new ArgumentError(
        StatusCodes.BadInvalidArgument,
        `unknown camera "${value}" (known: ${[...this.channels.keys()].join(", ")})`,
      );
    }
    return value;
  }

  /** Runs a method body; a refusal becomes a Bad status with its reason and one log line, never an exception. */
  private async guard(
    method: string,
    by: Requester,
    body: () => Promise<{ statusCode: StatusCode; statusText?: string; outputArguments?: Variant[] }>,
  ): Promise<{ statusCode: StatusCode; statusText?: string; outputArguments?: Variant[] }> {
    try {
      return await body();
    } catch (err) {
      if (err instanceof ArgumentError || err instanceof ControlError) {
        const statusCode = err instanceof ArgumentError ? err.status : StatusCodes.BadInvalidArgument;
        this.log.warn({ user: by.user, method }, `${method} refused: ${err.message}`);
        return { statusCode, statusText: err.message };
      }
      this.log.error({ err, user: by.user, method }, `${method} failed`);
      return { statusCode: StatusCodes.BadInternalError, statusText: (err as Error).message };
    }
  }
}

/** The data types of the writable nodes, with the JavaScript type their value arrives as. */
const WRITABLE_TYPES = { [DataType.Boolean]: "boolean", [DataType.String]: "string" } as const;
type WritableType = keyof typeof WRITABLE_TYPES;

/**
 * The checks node-opcua leaves to us on a write to a writable node: it compares the data type only, so an array of
 * Booleans written to `Trigger` reached the setter, which read it as "not true" and answered Good while the PLC
 * waited for a result that never came. Every writable node is a scalar of one type: anything else is refused.
 */
function checkScalar(variant: Variant, dataType: WritableType, node: string): void {
  if (variant.arrayType !== VariantArrayType.Scalar) {
    throw new ArgumentError(
      StatusCodes.BadTypeMismatch,
      `${node} takes a scalar ${DataType[dataType]}, got ${VariantArrayType[variant.arrayType]} of ${DataType[variant.dataType]}`,
    );
  }
  // a null String is a String; any other value must have the node's JavaScript type
  const fits =
    variant.dataType === dataType &&
    (typeof variant.value === WRITABLE_TYPES[dataType] ||
      (dataType === DataType.String && variant.value === null));
  if (!fits) {
    throw new ArgumentError(
      StatusCodes.BadTypeMismatch,
      `${node} takes a ${DataType[dataType]}, got ${DataType[variant.dataType]}`,
    );
  }
}

/** A method argument the server refuses before asking the control. */
class ArgumentError extends Error {
  constructor(
    readonly status: StatusCode,
    message: string,
  ) {
    super(message);
    this.name = "ArgumentError";
  }
}
