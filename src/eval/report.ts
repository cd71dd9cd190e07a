/**
 * Writes `--report DIR`: index.html (report-html.ts), the gallery images it shows and the report's numbers as
 * JSON ({@link REPORT_MARKER}), all into the staging folder, then renamed into place.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { loadMask, loadRgb } from "../data/images.js";
import { renderSnapshot } from "../data/snapshot.js";
import type { Roi } from "../stpm/geometry.js";
import { findRegions } from "../stpm/regions.js";
import type { EvalReport } from "./evaluate.js";
import { publishReportDir, REPORT_MARKER, type ReportStaging } from "./report-dir.js";
import { type GalleryItem, reportHtml } from "./report-html.js";

/** What the report needs of the scored test set beyond the numbers: where each image is and its map. */
export interface ScoredTestSet {
  maps: readonly Float32Array[];
  maskFiles: readonly (string | undefined)[];
  /** The capture size the maps and model inputs have. */
  width: number;
  height: number;
  roi: Roi | undefined;
}

/** Images per gallery; JPEG quality and longest side of each (a tiled 1500×1000 capture needs no more to be read). */
export const REPORT_DEFAULTS = { images: 12, jpegQuality: 85, maxSide: 768 } as const;

/** The parts each gallery shows, by index into `r.images`: highest good scores; lowest misses at the threshold. */
export function galleryIndices(r: EvalReport, limit: number): { falseAlarms: number[]; misses: number[] } {
  const threshold = r.at_threshold.threshold;
  const indices = r.images.map((_, i) => i);
  const falseAlarms = indices
    .filter((i) => r.images[i]!.label === 0)
    .sort((a, b) => r.images[b]!.score - r.images[a]!.score)
    .slice(0, limit);
  const misses = indices
    .filter((i) => r.images[i]!.label === 1 && !(r.images[i]!.score > threshold))
    .sort((a, b) => r.images[a]!.score - r.images[b]!.score)
    .slice(0, limit);
  return { falseAlarms, misses };
}

export async function writeReport(
  staging: ReportStaging,
  r: EvalReport,
  set: ScoredTestSet,
  limit: number = REPORT_DEFAULTS.images,
): Promise<void> {
  const { falseAlarms, misses } = galleryIndices(r, limit);
  await mkdir(path.join(staging.staging, "images"));
  const render = (list: number[], name: string): Promise<GalleryItem[]> =>
    Promise.all(
      list.map((index, k) =>
        renderPart(staging.staging, r, set, index, `${name}-${String(k + 1).padStart(2, "0")}`),
      ),
    );
  const html = reportHtml(r, {
    falseAlarms: await render(falseAlarms, "false-alarm"),
    misses: await render(misses, "miss"),
    limit,
  });
  await writeFile(path.join(staging.staging, "index.html"), html);
  await writeFile(path.join(staging.staging, REPORT_MARKER), `${JSON.stringify(r, null, 2)}\n`);
  await publishReportDir(staging);
}

/**
 * Where on the snapshot ramp a part's peak lands: 1.5 = full red at the peak, yellow at 2/3 of it, heat from 1/3.
 * At 1 (yellow at the peak, from 1/2) fryum's 256² maps showed specks a reader missed at gallery size.
 */
const PEAK_RATIO = 1.5;

/**
 * One part as the model saw it, its map drawn over it and the ground truth's regions boxed. The heat is scaled to
 * the part's own score ({@link PEAK_RATIO}), not to a threshold: drawn at the threshold, fryum's good parts (their
 * highest score half the bundle's threshold) and its misses showed no heat at all, and where a map peaks — at the
 * defect's box or elsewhere — is what these pictures are for; the caption gives the score itself.
 */
async function renderPart(
  folder: string,
  r: EvalReport,
  set: ScoredTestSet,
  index: number,
  name: string,
): Promise<GalleryItem> {
  const part = r.images[index]!;
  const { width, height, roi } = set;
  const image = await loadRgb(part.file, width, height, roi);
  const maskFile = set.maskFiles[index];
  const mask = maskFile ? await loadMask(maskFile, image.originalSize, width, height, roi) : undefined;
  const regions = mask ? findRegions(Float32Array.from(mask), width, height, 0) : [];
  const jpeg = await renderSnapshot(
    { cameraId: "eval", seq: index, captureTs: 0, width, height, rgb: image.rgb },
    set.maps[index]!,
    part.score > 0 ? part.score / PEAK_RATIO : r.at_threshold.threshold,
    { quality: REPORT_DEFAULTS.jpegQuality, maxSide: REPORT_DEFAULTS.maxSide, regions },
  );
  const file = `images/${name}.jpg`;
  await writeFile(path.join(folder, file), jpeg);
  const [w, h] = roi ? [roi.width, roi.height] : image.originalSize;
  return { image: file, source: part.file, kind: part.kind, score: part.score, aspect: w / h };
}
