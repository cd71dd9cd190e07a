/** How the console writes numbers, rules and times (one place, so every page agrees). */
import type { CameraSnapshot } from "./api.js";

export function fmt(value: number | null | undefined, digits = 4): string {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}

export function ruleText(rule: CameraSnapshot["threshold_rule"]): string {
  if (rule === "bundle") return "bundle";
  const [key, value] = Object.entries(rule)[0] ?? ["?", ""];
  return key === "value" ? "fixed" : `${key} ${value}`;
}

/** "0 % (≤ 9.5 %) of 30": the threshold's predicted false-alarm rate on the bundle's validation normals. */
export function falseAlarmText(p: CameraSnapshot["predicted_false_alarms"]): string {
  if (!p || p.rate === null || p.upper95 === null) return "–";
  return `${percent(p.rate)} (≤ ${percent(p.upper95)}) of ${p.normals}`;
}

export function percent(x: number): string {
  return `${Number((x * 100).toPrecision(2))} %`;
}

/**
 * Local date and time to the second, as an operator reads a clock, from the API's one time format (ISO 8601 UTC
 * with milliseconds: `time`, `ts` of the audit, `capture_ts`); a record's `ts` in epoch ms is its sort key.
 */
export function timeText(iso: string): string {
  const date = new Date(iso);
  return `${date.toLocaleDateString()} ${date.toLocaleTimeString()}`;
}

/** A `datetime-local` input's value as ISO 8601 UTC, or undefined when empty. */
export function fromLocalInput(value: string): string | undefined {
  if (value === "") return undefined;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
