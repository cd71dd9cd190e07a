/**
 * The OPC 40100 VisionStateMachine of stpmd: which of the specification's states the line is in (a pure mapping
 * from the control's snapshot and the parts in flight), and the state machine's methods mapped onto the control.
 *
 * The MachineVision nodeset carries no descriptions; its types say what the states are for: errors are the
 * `Error` state (entering it has the effect `ErrorEventType`, leaving it automatically `ErrorResolvedEventType`,
 * every transition `StateChangedEventType`), and per-cause errors are conditions (`VisionErrorConditionType`).
 */
import type { NodeSnapshot } from "../control.js";

export type VisionState = "Preoperational" | "Halted" | "Error" | "Operational";
/** The AutomaticModeStateMachine's states stpmd holds (its `Initialized` never: see {@link automaticState}). */
export type AutomaticState = "Ready" | "SingleExecution" | "ContinuousExecution";

/** Parts in flight, as the OPC UA interface sees them. */
export interface PartActivity {
  /** Parts triggered over OPC UA whose answer has not been presented yet. */
  outstanding: number;
  /** Parts started (triggered over OPC UA, or judged when triggered elsewhere) within {@link RECENT_PART_MS}. */
  recentParts: number;
}

/**
 * How far back two parts count as a stream (ContinuousExecution): a line feeding a part every 2 s or faster runs
 * continuously; a single part after a longer pause is a single job.
 */
export const RECENT_PART_MS = 2000;

/** The top-level state and why (the SystemState's description). */
export interface VisionStateOf {
  state: VisionState;
  reason: string;
}

/**
 * The VisionStateMachine's state: `Halted` with every camera disabled (what `Halt` does), `Error` without a loaded
 * model or with every enabled camera restarting or stalled (no frame can be judged, and stpmd recovers by itself
 * when the cause is gone: the specification's automatic transition out of Error), `Preoperational` while every
 * enabled camera is still starting, else `Operational`.
 */
export function visionState(snapshot: NodeSnapshot): VisionStateOf {
  const enabled = snapshot.cameras.filter((camera) => camera.enabled);
  if (snapshot.cameras.length > 0 && enabled.length === 0) {
    return { state: "Halted", reason: "every camera is disabled" };
  }
  if (snapshot.models.length === 0) return { state: "Error", reason: "no model loaded" };
  const faulted = enabled.filter((c) => c.state === "restarting" || c.state === "stalled");
  if (enabled.length > 0 && faulted.length === enabled.length) {
    return {
      state: "Error",
      reason: `no camera delivers frames: ${faulted.map((c) => `${c.id} ${c.state}`).join(", ")}`,
    };
  }
  if (enabled.length > 0 && enabled.every((c) => c.state === "starting")) {
    return { state: "Preoperational", reason: "cameras starting" };
  }
  return { state: "Operational", reason: "inspecting" };
}

/**
 * The AutomaticModeStateMachine's state below Operational. A job in stpmd's sense is one triggered part (it is what
 * a ResultReadyEvent answers; free-running frames between parts are not results of this view): `SingleExecution`
 * while a part is being judged after a pause, `ContinuousExecution` while parts keep coming (two or more within
 * {@link RECENT_PART_MS}), `Ready` otherwise. `Initialized` (no recipe prepared) is never held: without a recipe
 * every camera's own settings are a complete one, so stpmd takes the specification's automatic transition to Ready.
 */
export function automaticState(activity: PartActivity): AutomaticState {
  if (activity.recentParts >= 2) return "ContinuousExecution";
  if (activity.outstanding > 0) return "SingleExecution";
  return "Ready";
}

/** SystemStateDataType (SEMI E10 states) values. */
export const SYSTEM_STATE = {
  productive: 1,
  standby: 2,
  engineering: 3,
  scheduledDowntime: 4,
  unscheduledDowntime: 5,
  nonScheduled: 6,
} as const;

/**
 * The SystemState: productive while judging parts, standby when ready or starting, scheduled downtime when halted
 * (someone disabled the cameras), unscheduled downtime in Error.
 */
export function systemState(
  top: VisionState,
  automatic: AutomaticState,
): (typeof SYSTEM_STATE)[keyof typeof SYSTEM_STATE] {
  switch (top) {
    case "Halted":
      return SYSTEM_STATE.scheduledDowntime;
    case "Error":
      return SYSTEM_STATE.unscheduledDowntime;
    case "Preoperational":
      return SYSTEM_STATE.standby;
    case "Operational":
      return automatic === "Ready" ? SYSTEM_STATE.standby : SYSTEM_STATE.productive;
  }
}

/** Counts part starts in a sliding window (one timestamp per part, oldest first). */
export class PartWindow {
  private readonly starts: number[] = [];

  constructor(private readonly windowMs = RECENT_PART_MS) {}

  add(now = Date.now()): void {
    this.starts.push(now);
    this.prune(now);
  }

  count(now = Date.now()): number {
    this.prune(now);
    return this.starts.length;
  }

  private prune(now: number): void {
    while (this.starts.length > 0 && now - this.starts[0]! > this.windowMs) this.starts.shift();
  }
}
