/**
 * The eval report as one self-contained HTML page: inline CSS and SVG, images as files beside it, nothing fetched
 * from anywhere (it is read on line PCs without internet). People look rather than read, so the page leads with
 * the verdict numbers, then the score histogram, then the parts themselves.
 */
import path from "node:path";
import type { EvalReport } from "./evaluate.js";
import {
  type FalseAlarmPoint,
  formatPercent,
  type Interval,
  type ThresholdPoint,
} from "./operating-points.js";

/** One part shown in a gallery: its rendered image (relative to the page) and what it scored. */
export interface GalleryItem {
  /** Path of the image file relative to the report folder. */
  image: string;
  /** The test image it shows. */
  source: string;
  kind: string;
  score: number;
  /** Width / height of the inspected area, so squashed model inputs are shown at the part's own aspect. */
  aspect: number;
}

export interface Galleries {
  falseAlarms: GalleryItem[];
  misses: GalleryItem[];
  /** How many images each list may show at most. */
  limit: number;
}

const HISTOGRAM_BINS = 30;

export function reportHtml(r: EvalReport, galleries: Galleries): string {
  const judged = r.at_threshold.threshold;
  const title = `stpmd eval — ${r.model_version} on ${path.basename(r.data)}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${CSS}</style></head><body>
<h1>${esc(title)}</h1>
<p class="meta">${esc(r.data)} · ${r.num_images} test images (${r.num_good} good, ${r.num_defective} defective) ·
${esc(r.geometry)} · ${r.seconds.toFixed(1)} s</p>
<h2>Verdicts</h2>
${pointsTable(r)}
<p class="note">${esc(resolutionNote(r))}</p>
<h2>Ranking</h2>
<table><tr><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO (FPR ≤ 0.3)</th><th>image F1-max</th></tr>
<tr><td>${r.image_auroc.toFixed(4)}</td><td>${r.pixel_auroc.toFixed(4)}</td><td>${r.aupro.toFixed(4)}</td>
<td>${r.image_f1_max.toFixed(4)}</td></tr></table>
<h2>Scores of good and defective parts</h2>
${histogramSvg(r)}
<h2>By defect type</h2>
${typesTable(r)}
<h2>Worst false alarms: the highest-scoring good parts</h2>
${gallery(galleries.falseAlarms, judged, galleries.limit, "good parts", r.num_good)}
<h2>Misses: the lowest-scoring defective parts at or below the threshold</h2>
${gallery(galleries.misses, judged, galleries.limit, "misses", r.at_threshold.false_negative)}
<p class="note">Images are the model's input (shown at the inspected area's aspect) with the anomaly map drawn over
it as the line's snapshots draw it, but scaled to each part's own score so that every map shows where it peaks:
untouched below a third of the score, blue → yellow at two thirds → red at the peak; magenta boxes are the ground
truth's regions.</p>
</body></html>
`;
}

function pointsTable(r: EvalReport): string {
  const rows = [r.operating_points.at_threshold, ...r.operating_points.false_alarm_targets].map((p) => {
    const notes: string[] = [];
    if ("predicted_false_alarm_rate" in p && p.predicted_false_alarm_rate !== null) {
      notes.push(
        `predicted ${formatPercent(p.predicted_false_alarm_rate)} false alarms by the bundle's ${p.validation_images} validation images (at most ${formatPercent(p.predicted_false_alarm_upper95 ?? 1)} at 95 %)`,
      );
    }
    if ("resolvable" in p) notes.push(farNote(p, r.num_good));
    return `<tr><td>${esc(p.rule)}</td><td>${fmt(p.threshold)}</td>
<td>${p.caught} of ${p.defective} (${pct(p.caught_rate)})</td><td>${interval(p.caught_rate_95)}</td>
<td>${p.false_alarms} of ${p.good} (${pct(p.false_alarm_rate)})</td><td>${interval(p.false_alarm_rate_95)}</td>
<td>${esc(notes.join("; "))}</td></tr>`;
  });
  return `<table class="points"><tr><th>threshold set by</th><th>threshold</th><th>defective parts caught</th>
<th>95 % interval</th><th>false alarms</th><th>95 % interval</th><th>notes</th></tr>
${rows.join("\n")}</table>`;
}

function farNote(p: FalseAlarmPoint, good: number): string {
  const spread = `threshold 95 % ${fmt(p.threshold_95[0])}–${fmt(p.threshold_95[1])}`;
  if (p.resolvable) return spread;
  return `${good} good parts cannot show ${formatPercent(p.target_false_alarm_rate)}: this is the highest good score; ${spread}`;
}

/** What the number of good parts lets the report say about small false-alarm rates. */
export function resolutionNote(r: EvalReport): string {
  const n = r.num_good;
  const finest = Math.min(...r.operating_points.false_alarm_targets.map((p) => p.target_false_alarm_rate));
  return (
    `Intervals: ${r.bootstrap.resamples} stratified bootstrap resamples (seed ${r.bootstrap.seed}). ` +
    `${n} good parts resolve false-alarm rates in steps of 1/${n} = ${formatPercent(1 / n)}: that is the smallest ` +
    `rate this set can show, and a threshold with none of them above it is only known to have a rate below about ` +
    `3/${n} = ${formatPercent(Math.min(1, 3 / n))} (95 %). Showing ${formatPercent(finest)} needs about ` +
    `${Math.ceil(3 / finest)} good parts.`
  );
}

function typesTable(r: EvalReport): string {
  const good = r.good_parts;
  const rows = r.by_defect_type.map(
    (t) =>
      `<tr><td>${esc(t.type)}</td><td>${t.count}</td><td>${t.caught} (${pct(t.caught / t.count)})</td>` +
      `<td>${t.image_auroc.toFixed(3)}</td><td>${fmt(t.mean_score)}</td></tr>`,
  );
  return `<table><tr><th>type</th><th>parts</th><th>caught at ${fmt(r.at_threshold.threshold)}</th>
<th>image AUROC vs good</th><th>mean score</th></tr>
<tr class="good"><td>good</td><td>${good.count}</td><td>${good.false_alarms} false alarms</td><td></td>
<td>${fmt(good.mean_score)}</td></tr>
${rows.join("\n")}</table>`;
}

function gallery(
  items: GalleryItem[],
  threshold: number,
  limit: number,
  what: string,
  total: number,
): string {
  if (items.length === 0) return `<p class="note">None.</p>`;
  const shown =
    total > items.length
      ? `<p class="note">${items.length} of ${total} ${what} shown (at most ${limit}).</p>`
      : "";
  const figures = items.map(
    (
      it,
    ) => `<figure><img src="${esc(it.image)}" alt="${esc(it.source)}" style="aspect-ratio: ${it.aspect.toFixed(4)}">
<figcaption><b>${fmt(it.score)}</b> ${it.score > threshold ? ">" : "≤"} ${fmt(threshold)} · ${esc(it.kind)}<br>
<span class="file">${esc(it.source)}</span></figcaption></figure>`,
  );
  return `${shown}<div class="gallery">\n${figures.join("\n")}\n</div>`;
}

/**
 * A histogram of good and defective image scores (overlaid bars, one bin width) with every threshold of the
 * verdicts table drawn as a labelled vertical line.
 */
export function histogramSvg(r: EvalReport): string {
  const scores = r.images.map((im) => im.score);
  const points = [r.operating_points.at_threshold, ...r.operating_points.false_alarm_targets];
  const lines = distinctThresholds(points);
  const values = [...scores, ...lines.map((l) => l.threshold)];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi === lo) hi = lo + 1;
  const pad = (hi - lo) * 0.02;
  lo -= pad;
  hi += pad;
  const binWidth = (hi - lo) / HISTOGRAM_BINS;
  const counts = (label: 0 | 1): number[] => {
    const c = new Array<number>(HISTOGRAM_BINS).fill(0);
    for (const im of r.images) {
      if (im.label !== label) continue;
      c[Math.min(HISTOGRAM_BINS - 1, Math.floor((im.score - lo) / binWidth))]! += 1;
    }
    return c;
  };
  const good = counts(0);
  const defective = counts(1);
  const maxCount = Math.max(1, ...good, ...defective);
  const W = 760;
  const H = 280;
  const left = 44;
  const right = 32;
  const top = 40;
  const bottom = 36;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const x = (v: number): number => left + ((v - lo) / (hi - lo)) * plotW;
  const y = (c: number): number => top + plotH - (c / maxCount) * plotH;
  const bars = (c: number[], cls: string): string =>
    c
      .map((n, i) => {
        const x0 = x(lo + i * binWidth);
        return `<rect class="${cls}" x="${x0.toFixed(1)}" y="${y(n).toFixed(1)}" width="${(plotW / HISTOGRAM_BINS - 1).toFixed(1)}" height="${(top + plotH - y(n)).toFixed(1)}"><title>${n} ${cls} in ${fmt(lo + i * binWidth)}–${fmt(lo + (i + 1) * binWidth)}</title></rect>`;
      })
      .join("");
  const ticks = Array.from({ length: 6 }, (_, k) => lo + ((hi - lo) * k) / 5)
    .map(
      (v) =>
        `<text x="${x(v).toFixed(1)}" y="${H - bottom + 16}" text-anchor="middle">${fmt(v)}</text>` +
        `<line x1="${x(v).toFixed(1)}" x2="${x(v).toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" stroke="#555"/>`,
    )
    .join("");
  const thresholdLines = lines
    .map((l, k) => {
      const lx = x(l.threshold).toFixed(1);
      return (
        `<line class="threshold" x1="${lx}" x2="${lx}" y1="${top - 4}" y2="${top + plotH}"><title>${esc(l.label)}: ${fmt(l.threshold)}</title></line>` +
        `<text class="threshold-label" x="${lx}" y="${top - 8 - 12 * k}" text-anchor="middle">${esc(l.label)}</text>`
      );
    })
    .join("");
  return `<svg class="histogram" viewBox="0 0 ${W} ${H + 12 * Math.max(0, lines.length - 2)}" width="${W}" role="img" aria-label="score histogram">
<g transform="translate(0 ${12 * Math.max(0, lines.length - 2)})">
<line x1="${left}" x2="${W - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="#555"/>
<text x="${left - 6}" y="${top + 4}" text-anchor="end">${maxCount}</text>
<text x="${left - 6}" y="${top + plotH}" text-anchor="end">0</text>
${bars(good, "good")}${bars(defective, "defective")}${ticks}${thresholdLines}
<text x="${W - right}" y="${H - 4}" text-anchor="end">image score</text>
<rect class="good" x="${W - right - 110}" y="${top + 4}" width="12" height="12"/><text x="${W - right - 94}" y="${top + 14}">good (${r.num_good})</text>
<rect class="defective" x="${W - right - 110}" y="${top + 22}" width="12" height="12"/><text x="${W - right - 94}" y="${top + 32}">defective (${r.num_defective})</text>
</g></svg>`;
}

/** Thresholds to draw; points sharing a value (e.g. both unresolvable rates) share one line and one label. */
function distinctThresholds(
  points: (ThresholdPoint | FalseAlarmPoint)[],
): { threshold: number; label: string }[] {
  const out: { threshold: number; label: string }[] = [];
  for (const p of points) {
    const label = "target_false_alarm_rate" in p ? formatPercent(p.target_false_alarm_rate) : "threshold";
    const same = out.find((o) => o.threshold === p.threshold);
    if (same) same.label += ` = ${label}`;
    else out.push({ threshold: p.threshold, label });
  }
  return out;
}

function interval([low, high]: Interval): string {
  return `${(low * 100).toFixed(1)}–${pct(high)}`;
}

function pct(rate: number): string {
  return `${(rate * 100).toFixed(1)} %`;
}

function fmt(value: number): string {
  return value.toPrecision(4);
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; padding: 0 16px; color: #222; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.meta, .note { color: #555; } table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; } th { background: #f3f3f3; }
tr.good td { background: #f4f8fc; } table.points td:nth-child(n+2):nth-child(-n+6) { white-space: nowrap; } table.points td:last-child { min-width: 16em; }
svg.histogram { max-width: 100%; height: auto; font-size: 11px; }
svg rect.good { fill: #2f6fb3; fill-opacity: 0.55; } svg rect.defective { fill: #d9531e; fill-opacity: 0.55; }
svg line.threshold { stroke: #111; stroke-width: 1.5; stroke-dasharray: 5 3; } svg text.threshold-label { font-weight: 600; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
figure { margin: 0; } figure img { width: 100%; height: auto; object-fit: fill; border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; } .file { color: #666; word-break: break-all; }
`;
