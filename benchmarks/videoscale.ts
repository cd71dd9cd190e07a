/**
 * Does the capture pipeline's scaling reproduce the training-time resize? The daemon's cameras deliver frames that
 * GStreamer's `videoscale` has already scaled to the model size, while training and `stpmd eval` resize with sharp
 * (`kernel: "linear"`, antialiased; loadRgb in src/data/images.ts). A resize that differs too much makes good parts
 * score higher than anything the threshold was fitted on.
 *
 * For each videoscale method and for sharp (the reference), every MVTec AD bottle test/good image and the first
 * few test/broken_large images go through `filesrc ! pngdec ! videoconvert ! videoscale <method> ! RGB caps !
 * appsink` (as a camera would deliver them) and are scored with the trained bundle: false alarms on good images,
 * defects still flagged, and the pixel difference of each scaled frame against sharp's.
 *
 *   node dist/benchmarks/videoscale.js [--bundle out/models/bottle]
 *
 * Writes benchmarks/results/videoscale.json and .md. Skips (exit 0) when the data or the bundle is absent.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type gst from "gstreamer-superficial";
import { loadBundle, MANIFEST_FILE, scoringOptions } from "../src/bundle/bundle.js";
import { buildPipelineDescription, packRgbRows } from "../src/capture/pipeline-description.js";
import { listImages, loadRgb } from "../src/data/images.js";
import { Scorer } from "../src/stpm/scorer.js";
import { fmt, machineInfo, machineState, writeResults } from "./common.js";

// CommonJS require, as src/capture/camera.ts does: Node's ESM loader refuses the addon's extensionless "main".
const gstreamer = createRequire(import.meta.url)("gstreamer-superficial") as typeof gst;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");
const BOTTLE = path.join(SHARED, "data/mvtec_ad/bottle");
const DEFECT_CLASS = "broken_large";
const DEFECT_COUNT = 10;

/** The scalers compared, in table order; `videoscale` is null for sharp, the training-time reference. */
const METHODS: { name: string; videoscale: string | null }[] = [
  { name: "videoscale default", videoscale: "" },
  { name: "videoscale bilinear2", videoscale: "method=bilinear2" },
  { name: "videoscale 4-tap", videoscale: "method=4-tap" },
  { name: "videoscale lanczos", videoscale: "method=lanczos" },
  { name: "sharp linear (reference)", videoscale: null },
];

/** The videoscale arguments of the daemon's capture pipeline, taken from the description it actually builds. */
function daemonVideoscaleArgs(width: number, height: number): string | null {
  const description = buildPipelineDescription("videotestsrc", width, height);
  const m = /\bvideoscale\b([^!]*)/.exec(description);
  return m ? m[1]!.trim() : null;
}

/**
 * Decodes one PNG and scales it with GStreamer, as a camera pipeline would deliver it: packed RGB, W × H.
 * Also returns the scaler's `method` property as GStreamer reports it (names the default).
 */
async function gstFrame(
  file: string,
  videoscaleArgs: string,
  width: number,
  height: number,
): Promise<{ rgb: Uint8Array; method: string }> {
  const description =
    `filesrc location="${file}" ! pngdec ! videoconvert ! videoscale name=scale ${videoscaleArgs}` +
    ` ! video/x-raw,format=RGB,width=${width},height=${height} ! appsink name=sink sync=false`;
  const pipeline = new gstreamer.Pipeline(description);
  const sink = pipeline.findChild("sink");
  if (typeof sink?.pull !== "function") throw new Error(`no appsink in "${description}"`);
  // Bound: the addon finds its appsink through `this`.
  const pull = sink.pull.bind(sink);
  const method = String(pipeline.findChild("scale")?.method ?? "?");
  pipeline.play();
  try {
    const [buf, caps] = await new Promise<[Buffer | null, gst.SampleCaps]>((resolve) => {
      pull((b, c) => resolve([b, c]));
    });
    if (buf === null) {
      throw new Error(`GStreamer delivered no frame for "${description}" (run with GST_DEBUG=2 to see why)`);
    }
    if (caps.width !== undefined && (caps.width !== width || caps.height !== height)) {
      throw new Error(`${file}: caps say ${caps.width}×${caps.height}, expected ${width}×${height}`);
    }
    return { rgb: packRgbRows(buf, width, height), method };
  } finally {
    pipeline.stop();
  }
}

/** Mean and maximum absolute difference between two equally long uint8 buffers, summed up over many. */
class AbsDiff {
  private sum = 0;
  private count = 0;
  max = 0;

  add(a: Uint8Array, b: Uint8Array): void {
    if (a.length !== b.length) throw new RangeError(`frames of ${a.length} and ${b.length} bytes`);
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      this.sum += d;
      if (d > this.max) this.max = d;
    }
    this.count += a.length;
  }

  get mean(): number {
    return this.count ? this.sum / this.count : Number.NaN;
  }
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { bundle: { type: "string", default: path.join(REPO, "out/models/bottle") } },
  });
  const bundleDir = path.resolve(values.bundle);
  const goodDir = path.join(BOTTLE, "test/good");
  const defectDir = path.join(BOTTLE, "test", DEFECT_CLASS);
  const missing = [goodDir, defectDir, path.join(bundleDir, MANIFEST_FILE)].filter((p) => !existsSync(p));
  if (missing.length > 0) {
    process.stderr.write(`[bench] videoscale: skipped, not found: ${missing.join(", ")}\n`);
    return;
  }

  const before = await machineState();
  const bundle = await loadBundle(bundleDir);
  const { height, width } = bundle.manifest.input;
  const threshold = bundle.manifest.threshold;
  const daemonArgs = daemonVideoscaleArgs(width, height);
  const goodFiles = await listImages(goodDir, "bottle test/good");
  const defectFiles = (await listImages(defectDir, `bottle test/${DEFECT_CLASS}`)).slice(0, DEFECT_COUNT);

  const load = async (files: string[]): Promise<Uint8Array[]> =>
    Promise.all(files.map(async (f) => (await loadRgb(f, width, height)).rgb));
  const sharpGood = await load(goodFiles);
  const sharpDefect = await load(defectFiles);

  const scorer = await Scorer.create(bundle.teacher, bundle.student, scoringOptions(bundle.manifest));
  const rows = [];
  try {
    for (const m of METHODS) {
      process.stderr.write(`[bench] ${m.name}\n`);
      let good = sharpGood;
      let defect = sharpDefect;
      let methodProperty: string | null = null;
      const scaleAll = async (files: string[], args: string): Promise<Uint8Array[]> => {
        const frames: Uint8Array[] = [];
        for (const f of files) {
          const frame = await gstFrame(f, args, width, height);
          methodProperty = frame.method;
          frames.push(frame.rgb);
        }
        return frames;
      };
      if (m.videoscale !== null) {
        good = await scaleAll(goodFiles, m.videoscale);
        defect = await scaleAll(defectFiles, m.videoscale);
      }
      const diff = new AbsDiff();
      good.forEach((rgb, i) => {
        diff.add(rgb, sharpGood[i]!);
      });
      const goodScores = (await scorer.scoreAll(good)).scores;
      const defectScores = (await scorer.scoreAll(defect)).scores;
      rows.push({
        name: m.name,
        videoscale: m.videoscale,
        videoscale_method_property: methodProperty,
        daemon: m.videoscale !== null && m.videoscale === daemonArgs,
        good: {
          count: goodScores.length,
          max_score: Math.max(...goodScores),
          mean_score: mean(goodScores),
          false_alarms: goodScores.filter((s) => s > threshold).length,
          scores: goodScores,
        },
        defective: {
          class: DEFECT_CLASS,
          count: defectScores.length,
          flagged: defectScores.filter((s) => s > threshold).length,
          min_score: Math.min(...defectScores),
          scores: defectScores,
        },
        pixel_diff_vs_sharp_good: { mean: diff.mean, max: diff.max },
      });
    }
  } finally {
    await scorer.release();
  }

  const report = {
    benchmark: "GStreamer videoscale vs sharp resize, MVTec AD bottle",
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
    bundle: { dir: bundleDir, model_version: bundle.manifest.model_version, input: [width, height] },
    threshold,
    threshold_rule: bundle.manifest.threshold_rule,
    daemon_videoscale: daemonArgs,
    good_files: goodFiles.map((f) => path.basename(f)),
    defective_files: defectFiles.map((f) => `${DEFECT_CLASS}/${path.basename(f)}`),
    rows,
  };
  const daemonNote =
    daemonArgs === null
      ? "The daemon's capture pipeline (buildPipelineDescription in src/capture/pipeline-description.ts) has no videoscale element this benchmark could recognise."
      : `The daemon's capture pipeline uses \`videoscale${daemonArgs ? ` ${daemonArgs}` : ""}\` (read from the description buildPipelineDescription in src/capture/pipeline-description.ts builds; the method is written inline there, not in a constant).`;
  const lines = [
    "# GStreamer videoscale vs sharp resize on MVTec AD bottle",
    "",
    `Each image is decoded and scaled to ${width}×${height} by \`filesrc ! pngdec ! videoconvert ! videoscale <method> ! video/x-raw,format=RGB ! appsink\`, or by sharp (\`kernel: "linear"\`, as training and \`stpmd eval\` do), then scored with the bundle ${path.relative(REPO, bundleDir) || bundleDir} (${bundle.manifest.model_version}). A frame is flagged when its score is above the bundle threshold ${fmt(threshold, 4)}.`,
    "",
    daemonNote,
    "",
    `| scaler | good: max score | good: mean score | threshold | false alarms (of ${goodFiles.length} good) | ${DEFECT_CLASS} flagged (of ${defectFiles.length}) | mean \\|Δ\\| vs sharp | max \\|Δ\\| vs sharp |`,
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.name}${r.daemon ? " (daemon)" : ""} | ${fmt(r.good.max_score, 4)} | ${fmt(r.good.mean_score, 4)} | ${fmt(threshold, 4)} | ${r.good.false_alarms} | ${r.defective.flagged} | ${fmt(r.pixel_diff_vs_sharp_good.mean, 2)} | ${r.pixel_diff_vs_sharp_good.max} |`,
    ),
    "",
    `Pixel differences: absolute difference of every channel value (0–255) of the scaled test/good frames against sharp's. Defective images: the first ${defectFiles.length} of test/${DEFECT_CLASS}. The default method is GStreamer's \`${rows[0]?.videoscale_method_property ?? "?"}\`.`,
    "",
    `Load before: \`${before.uptime}\`, after: \`${report.load_after.uptime}\`.`,
    "",
  ];
  await writeResults("videoscale", report, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
