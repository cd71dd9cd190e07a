/**
 * The review counts on their way to the node's status: the HTTP sink (which serves the labels) reports them per
 * camera in its health, the daemon's snapshot gives each camera its `review`, and Sparkplug and the console read
 * them there like every other count.
 */
import type { ReviewSnapshot, SinkStatus } from "../control.js";
import type { LabelCounts } from "./label-store.js";

const FALSE_ALARMS = "review_false_alarms";
const CONFIRMED = "review_confirmed_defects";

/** The per-camera counters of a sink's health. */
export function reviewHealth(counts: LabelCounts): Record<string, Record<string, number>> {
  const cameras: Record<string, Record<string, number>> = {};
  for (const [camera, c] of Object.entries(counts))
    cameras[camera] = { [FALSE_ALARMS]: c.false_alarm, [CONFIRMED]: c.confirmed_defect };
  return cameras;
}

/**
 * A camera's review counts from the HTTP sink's health: undefined when it serves no labels (no `cameras` in its
 * health: the console or the record is off), zeros for a camera nothing was labelled on yet.
 */
export function reviewOf(
  sinks: readonly Pick<SinkStatus, "cameras" | "name">[],
  camera: string,
): ReviewSnapshot | undefined {
  const cameras = sinks.find((s) => s.name === "http")?.cameras;
  if (cameras === undefined) return undefined;
  const counts = cameras[camera];
  return { false_alarms: counts?.[FALSE_ALARMS] ?? 0, confirmed_defects: counts?.[CONFIRMED] ?? 0 };
}
