import type { EvalReport } from "./evaluate.js";
import { formatPercent, type Interval, type OperatingPoint } from "./operating-points.js";
import { resolutionNote } from "./report-html.js";

/** The eval report as the console shows it: the ranking metrics, the verdicts, the defect types. */
export function formatEvalSummary(r: EvalReport): string[] {
  const points = r.operating_points;
  const judged = points.at_threshold;
  const predicted =
    judged.predicted_false_alarm_rate === null
      ? ""
      : ` (${formatPercent(judged.predicted_false_alarm_rate)} predicted by ${judged.validation_images} validation images, at most ${formatPercent(judged.predicted_false_alarm_upper95 ?? 1)} at 95 %)`;
  const lines = [
    `eval: image AUROC ${r.image_auroc.toFixed(4)}, pixel AUROC ${r.pixel_auroc.toFixed(4)}, AUPRO ${r.aupro.toFixed(4)}, ` +
      `image F1-max ${r.image_f1_max.toFixed(4)} on ${r.num_images} images (${r.num_good} good, ${r.num_defective} defective) in ${r.seconds.toFixed(1)} s`,
    `  at ${judged.rule}: ${verdict(judged)}${predicted}`,
    ...points.false_alarm_targets.map(
      (p) =>
        `  at ${p.rule}: ${verdict(p)}${p.resolvable ? "" : ` — ${r.num_good} good parts cannot show ${formatPercent(p.target_false_alarm_rate)}`}`,
    ),
    `  ${resolutionNote(r)}`,
    `  good: ${r.good_parts.count} parts, ${r.good_parts.false_alarms} false alarms, mean score ${r.good_parts.mean_score.toPrecision(4)}`,
    ...r.by_defect_type.map(
      (t) =>
        `  ${t.type}: ${t.count} parts, ${t.caught} caught, image AUROC vs good ${t.image_auroc.toFixed(3)}, mean score ${t.mean_score.toPrecision(4)}`,
    ),
  ];
  if (r.report) lines.push(`  report: ${r.report}/index.html`);
  return lines;
}

function verdict(p: OperatingPoint): string {
  return (
    `threshold ${p.threshold.toPrecision(4)}, caught ${p.caught} of ${p.defective} (95 % ${interval(p.caught_rate_95)}), ` +
    `${p.false_alarms} false alarms of ${p.good} (95 % ${interval(p.false_alarm_rate_95)})`
  );
}

function interval([low, high]: Interval): string {
  return `${(low * 100).toFixed(1)}–${(high * 100).toFixed(1)} %`;
}
