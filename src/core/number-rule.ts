/**
 * What a numeric option accepts: an integer or any finite number, at least `min` (above it where `above` is set:
 * a duration of 0 means nothing), and below `below` where given.
 * The CLI's parsers and the library functions behind them (retrain) check values against the same rule, so an
 * option is bounded once and worded the same wherever it is refused.
 */
export interface NumberRule {
  /** The option as the CLI spells it, e.g. `--epochs`: every message names it. */
  flag: string;
  integer?: boolean;
  min: number;
  /** `min` itself is refused too. */
  above?: boolean;
  below?: number;
}

/** Why `value` breaks `rule` ("must be an integer ≥ 1"), or undefined when it does not. */
export function numberProblem(rule: NumberRule, value: number): string | undefined {
  const fits =
    Number.isFinite(value) &&
    (rule.integer !== true || Number.isInteger(value)) &&
    (rule.above === true ? value > rule.min : value >= rule.min) &&
    (rule.below === undefined || value < rule.below);
  if (fits) return undefined;
  const kind = rule.integer === true ? "an integer" : "a number";
  return `must be ${kind} ${rule.above === true ? ">" : "≥"} ${rule.min}${rule.below === undefined ? "" : ` and below ${rule.below}`}`;
}
