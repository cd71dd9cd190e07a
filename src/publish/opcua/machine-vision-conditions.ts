/**
 * OPC 40100's per-cause errors: one `VisionErrorConditionType` condition per camera, active (Retain true) while the
 * camera is enabled but delivers no frames (restarting or stalled), inactive again once it does. The system-wide
 * Error state (machine-vision-state.ts) is for when no camera can deliver; a condition names the one that cannot.
 */
import { DataType, Variant } from "node-opcua-client";
import type { OPCUAServer } from "node-opcua-server";
import type { CameraSnapshot } from "../control.js";

type AddressSpace = NonNullable<OPCUAServer["engine"]["addressSpace"]>;
type Namespace = ReturnType<AddressSpace["getOwnNamespace"]>;
type UAObject = ReturnType<Namespace["addObject"]>;

/** The part of node-opcua's acknowledgeable condition the view uses. */
interface Condition extends UAObject {
  raiseNewCondition(info: { message: string; severity: number; retain: boolean }): void;
}

/** node-opcua's namespace method for AcknowledgeableConditionType subtypes (not in the server's declared types). */
interface ConditionNamespace {
  instantiateAcknowledgeableCondition(
    type: unknown,
    options: { browseName: string; componentOf: UAObject; conditionSource: UAObject; conditionName: string },
  ): Condition;
}

/** A camera's condition and the fault it was last raised with (undefined: inactive). */
interface ConditionEntry {
  condition: Condition;
  fault: string | undefined;
}

/** Why an enabled camera delivers no frames, or undefined when it delivers (or waits for a hardware trigger). */
export function cameraFault(camera: CameraSnapshot): string | undefined {
  if (!camera.enabled) return undefined;
  if (camera.state === "restarting")
    return `camera ${camera.id} is restarting (restarts: ${camera.restarts})`;
  if (camera.state === "stalled") return `camera ${camera.id} stalled: no frame within its stall timeout`;
  return undefined;
}

export class CameraConditions {
  private readonly conditions = new Map<string, ConditionEntry>();

  constructor(
    private readonly addressSpace: AddressSpace,
    private readonly namespace: Namespace,
    private readonly system: UAObject,
    private readonly mv: number,
  ) {}

  /** Raises or clears each camera's condition when its fault changes (a camera seen first gets its condition). */
  follow(cameras: readonly CameraSnapshot[]): void {
    for (const camera of cameras) {
      const fault = cameraFault(camera);
      let entry = this.conditions.get(camera.id);
      if (entry === undefined) {
        entry = { condition: this.create(camera.id), fault: undefined };
        this.conditions.set(camera.id, entry);
      }
      if (entry.fault !== fault) this.change(entry, camera.id, fault);
    }
  }

  private change(entry: ConditionEntry, camera: string, fault: string | undefined): void {
    entry.fault = fault;
    entry.condition.raiseNewCondition(
      fault !== undefined
        ? { message: fault, severity: 700, retain: true }
        : { message: `camera ${camera} delivers frames again`, severity: 100, retain: false },
    );
  }

  private create(camera: string): Condition {
    const type = this.addressSpace.findEventType("VisionErrorConditionType", this.mv);
    if (type === null) throw new Error("the MachineVision nodeset has no VisionErrorConditionType");
    const condition = (this.namespace as unknown as ConditionNamespace).instantiateAcknowledgeableCondition(
      type,
      {
        browseName: `${camera}Error`,
        componentOf: this.system,
        conditionSource: this.system,
        conditionName: `${camera}Error`,
      },
    );
    // the mandatory reactions: stpmd goes on with the other cameras and blocks nothing
    for (const name of ["BlockReaction", "StopReaction"]) {
      const variable =
        condition.getComponentByName(name, this.mv) ?? condition.getPropertyByName(name, this.mv);
      if (variable !== null && "setValueFromSource" in variable) {
        variable.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: false }));
      }
    }
    return condition;
  }
}
