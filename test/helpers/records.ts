import type { InspectionResult, Verdict } from "../../src/core/result.js";
import type { RecordJob, WriterOptions } from "../../src/publish/records/record-writer.js";
import { Random } from "../../src/stpm/random.js";

/** An inspection result of `size`² noise with a map that peaks at the centre, for the part record's tests. */
export function recordResult(
  seq: number,
  options: { camera?: string; verdict?: Verdict; ts?: number; size?: number; partId?: string } = {},
): InspectionResult {
  const size = options.size ?? 16;
  const verdict = options.verdict ?? "ok";
  const random = new Random(seq + 1);
  const rgb = Uint8Array.from({ length: size * size * 3 }, () => Math.floor(random.next() * 256));
  const map = new Float32Array(size * size).map((_, i) => (i === (size * size) / 2 + size / 2 ? 0.9 : 0.1));
  return {
    frame: {
      cameraId: options.camera ?? "cam1",
      seq,
      captureTs: options.ts ?? Date.UTC(2026, 11, 6, 14, 2, 0) + seq * 100,
      width: size,
      height: size,
      rgb,
      ...(options.partId !== undefined ? { partId: options.partId } : {}),
    },
    score: verdict === "error" ? Number.NaN : verdict === "defect" ? 0.9 : 0.1,
    threshold: 0.5,
    verdict,
    ...(verdict === "error" ? { error: "the model's score is NaN" } : {}),
    regions: verdict === "defect" ? [{ bbox: [8, 8, 1, 1], area: 1, peak: 0.9, centroid: [8, 8] }] : [],
    map,
    modelVersion: "20261201T000000Z",
    inferredTs: (options.ts ?? Date.UTC(2026, 11, 6, 14, 2, 0) + seq * 100) + 25,
  };
}

/** A job as the sink builds it, without going through the sink: a row, and pixels when `image`. */
export function recordJob(
  seq: number,
  options: Parameters<typeof recordResult>[1] & { image?: boolean } = {},
): RecordJob {
  const r = recordResult(seq, options);
  return {
    row: {
      camera: r.frame.cameraId,
      ts: r.frame.captureTs,
      seq,
      part_id: r.frame.partId ?? null,
      recipe: r.frame.recipe ?? null,
      bundle: "/models/test",
      model_version: r.modelVersion,
      threshold: r.threshold,
      threshold_rule: "sigma 3",
      score: Number.isFinite(r.score) ? r.score : null,
      verdict: r.verdict,
      error: r.error ?? null,
      regions: JSON.stringify(r.regions),
      latency_ms: 25,
      image: null,
      map: null,
      image_bytes: 0,
    },
    ...(options.image
      ? {
          image: {
            pixels: { width: r.frame.width, height: r.frame.height, rgb: r.frame.rgb },
            ...(r.verdict === "defect" ? { map: r.map } : {}),
          },
        }
      : {}),
  };
}

export function writerOptionsFor(dir: string, partial: Partial<WriterOptions> = {}): WriterOptions {
  return {
    dir,
    fileMode: 0o640,
    dirMode: 0o750,
    maxAgeMs: 365 * 86_400_000,
    maxRows: 1_000_000,
    maxBytes: 1 << 30,
    retainEveryMs: 0,
    ...partial,
  };
}
