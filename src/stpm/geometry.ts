import { StpmdError } from "../core/errors.js";

/**
 * How a frame becomes model input, and how the model's maps become one map of the frame. STPM is fully
 * convolutional, so nothing forces a square input or a single scale; a bundle records its geometry and the
 * daemon, eval and quantize apply the same one.
 *
 * - `resize`: the image (its ROI) is resized whole to `input` (square or not).
 * - `tile`: the image (its ROI) is resized by `scale` (1: native resolution) to `capture`, and cut into
 *   `input`-sized tiles overlapping by `tile.overlap` pixels; the tile maps are stitched back into one map at
 *   `capture` size (see {@link stitchTiles}).
 *
 * `capture` is the image the inspector sees: what the camera delivers, and the grid of the anomaly map, the
 * regions and the pixel metrics.
 */
export interface Size {
  width: number;
  height: number;
}

export interface Roi extends Size {
  x: number;
  y: number;
}

export interface Geometry {
  mode: "resize" | "tile";
  /** Model input: the whole image in resize mode, one tile in tile mode. */
  input: Size;
  /** The image after ROI and scaling: the map's grid. */
  capture: Size;
  /** Size of the source images (after the ROI) the bundle was trained on. */
  source: Size;
  /** ROI in source pixels the bundle was trained on; null = the whole image. */
  roi: Roi | null;
  /** Tile mode: tile overlap in capture pixels. */
  tile: { size: number; overlap: number } | null;
  /** Tile mode: capture = round(source × scale). */
  scale: number | null;
  /**
   * Context margin in model-input pixels per side (see {@link contextInput}); the network is fed
   * `input` + 2·margin and its map is cropped back to `input`. Absent in bundles written before it: 0.
   */
  margin?: number;
}

/** The bundle's context margin: 0 for a geometry that predates it. */
export function marginOf(g: Pick<Geometry, "margin">): number {
  return g.margin ?? 0;
}

/** What the network is fed: the model input with its context margin on every side. */
export function fedSize(g: Pick<Geometry, "input" | "margin">): Size {
  const m = marginOf(g);
  return { width: g.input.width + 2 * m, height: g.input.height + 2 * m };
}

/**
 * The problem with a context margin of `margin` pixels around images of `room` size (the area the context is
 * reflected from), or undefined. A multiple of 8 keeps input + 2·margin a multiple of 16, the teacher's stride;
 * reflection mirrors the area about its edge pixel, so it needs `margin` below the area's shorter side.
 */
export function marginProblem(margin: number, room: Size): string | undefined {
  if (!Number.isInteger(margin) || margin < 0 || margin % 8 !== 0)
    return "must be a whole number of pixels, at least 0 and a multiple of 8 (input + 2·margin must stay a multiple of 16)";
  const side = Math.min(room.width, room.height);
  if (margin >= side)
    return `is larger than the room: the context beyond the inspected area's edge is the area reflected, so the margin must be below its shorter side (${room.width}×${room.height}: below ${side})`;
  return undefined;
}

/** `index` mirrored into 0 … length−1 about the edge pixels (…, 2, 1 | 0, 1, …, n−1 | n−2, …), as numpy's "reflect". */
function reflectIndex(index: number, length: number): number {
  if (length === 1) return 0;
  const period = 2 * (length - 1);
  const k = ((index % period) + period) % period;
  return k < length ? k : period - k;
}

/**
 * The ONE way an area of an image becomes model input: the `width`×`height` area at (`x`, `y`) of the packed RGB
 * `image`, with `margin` pixels of context on every side — the image's own pixels where they exist (a tile's
 * neighbours), the image reflected about its edge beyond it — written to `out` at byte `offset`
 * ((width+2·margin)·(height+2·margin)·3 bytes). Training, calibration, validation, eval and the daemon all cut
 * through here, so the network sees the same context at the same place in all of them.
 *
 * Why: the convolutions pad with zeros (the shared teacher's TF-"SAME" padding is even asymmetric), so map pixels
 * near the edge are computed from content no normal image ever shows in the middle; on a held-out line set 65 of
 * 67 normal parts had their maximum within 16 px of the edge. With a margin the edge of the inspected area lies
 * `margin` pixels inside what the network sees, and the cropped map never reaches the padding.
 */
export function contextInput(
  image: Uint8Array,
  size: Size,
  area: Roi,
  margin: number,
  out: Uint8Array,
  offset = 0,
): void {
  const outWidth = area.width + 2 * margin;
  const rowBytes = outWidth * 3;
  // columns inside the image are one contiguous copy per row; only those beyond its edge are looked up one by one
  const x0 = area.x - margin;
  const inFrom = Math.max(0, -x0);
  const inTo = Math.min(outWidth, size.width - x0);
  for (let r = 0; r < area.height + 2 * margin; r++) {
    const srcRow = reflectIndex(area.y - margin + r, size.height) * size.width;
    const dst = offset + r * rowBytes;
    if (inTo > inFrom) {
      out.set(image.subarray((srcRow + x0 + inFrom) * 3, (srcRow + x0 + inTo) * 3), dst + inFrom * 3);
    }
    const outside = (c: number): void => {
      const src = (srcRow + reflectIndex(x0 + c, size.width)) * 3;
      const d = dst + c * 3;
      out[d] = image[src]!;
      out[d + 1] = image[src + 1]!;
      out[d + 2] = image[src + 2]!;
    };
    for (let c = 0; c < Math.min(inFrom, outWidth); c++) outside(c);
    for (let c = Math.max(inTo, inFrom); c < outWidth; c++) outside(c);
  }
}

function optionError(option: string, problem: string): StpmdError {
  return new StpmdError("ERR_OPTION_INVALID", `${option}: ${problem}`);
}

/** `WIDTHxHEIGHT` or a single `N` (N×N). Both multiples of 16 (the teacher's stride), at least 32. */
export function parseImageSize(text: string, option = "--image-size"): Size {
  const match = /^\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*$/.exec(text);
  if (!match) throw optionError(`${option} ${text}`, "must be N or WIDTHxHEIGHT, e.g. 256 or 256x640");
  const width = Number(match[1]);
  const height = match[2] === undefined ? width : Number(match[2]);
  const problem = inputSizeProblem({ width, height });
  if (problem) throw optionError(`${option} ${text}`, problem);
  return { width, height };
}

/** The problem with `size` as a model input, or undefined: both sides multiples of 16 (the teacher's stride), ≥ 32. */
export function inputSizeProblem(size: Size): string | undefined {
  for (const [name, v] of [
    ["width", size.width],
    ["height", size.height],
  ] as const) {
    if (!Number.isInteger(v) || v % 16 !== 0 || v < 32)
      return `${name} ${v} must be a multiple of 16 and at least 32`;
  }
  return undefined;
}

/** `x,y,width,height` in source pixels. */
export function parseRoi(text: string, option = "--roi"): Roi {
  const parts = text.split(",").map((p) => p.trim());
  const values = parts.map((p) => (p === "" ? Number.NaN : Number(p)));
  if (parts.length !== 4) throw optionError(`${option} ${text}`, ROI_FIELDS);
  const [x, y, width, height] = values as [number, number, number, number];
  const roi = { x, y, width, height };
  const problem = roiFieldsProblem(roi);
  if (problem) throw optionError(`${option} ${text}`, problem);
  return roi;
}

const ROI_FIELDS = "must be four non-negative integers x,y,width,height";

/** The problem with an ROI's own numbers (where it lies is {@link roiProblem}'s), or undefined. */
export function roiFieldsProblem(roi: Roi): string | undefined {
  if ([roi.x, roi.y, roi.width, roi.height].some((v) => !Number.isInteger(v) || v < 0)) return ROI_FIELDS;
  if (roi.width < 16 || roi.height < 16) return "width and height must be at least 16";
  return undefined;
}

/** The problem with placing `roi` in a frame of `frame` size, or undefined when it fits. */
export function roiProblem(roi: Roi, frame: Size): string | undefined {
  if (roi.x + roi.width > frame.width || roi.y + roi.height > frame.height) {
    return `ROI ${roi.x},${roi.y},${roi.width},${roi.height} lies outside the ${frame.width}×${frame.height} frame`;
  }
  return undefined;
}

/** Capture size of a tiled geometry: the source scaled by `scale`, rounded to whole pixels. */
export function scaledSize(source: Size, scale: number): Size {
  return {
    width: Math.max(1, Math.round(source.width * scale)),
    height: Math.max(1, Math.round(source.height * scale)),
  };
}

/**
 * Where tiles start along one axis: every `tile − overlap` pixels from 0, and the last one shifted inwards to end
 * exactly at the edge, so no tile is padded with content that is not in the image.
 */
export function tileStarts(length: number, tile: number, overlap: number): number[] {
  if (tile > length) throw new RangeError(`tile ${tile} is larger than the image (${length})`);
  const stride = tile - overlap;
  const starts: number[] = [];
  for (let s = 0; s + tile < length; s += stride) starts.push(s);
  starts.push(length - tile);
  return starts;
}

/** Tiles of one image: their origins, row by row, and which pixels of the stitched map each one owns. */
export interface TilePlan {
  image: Size;
  tile: number;
  xs: number[];
  ys: number[];
  /** Column boundaries: tile column i owns columns ownX[i] … ownX[i+1]−1 (likewise rows). */
  ownX: number[];
  ownY: number[];
  count: number;
}

/** Boundaries between neighbouring tiles at the middle of their overlap. */
function ownership(starts: number[], tile: number, length: number): number[] {
  const bounds = [0];
  for (let i = 1; i < starts.length; i++) bounds.push(Math.floor((starts[i]! + starts[i - 1]! + tile) / 2));
  bounds.push(length);
  return bounds;
}

/** The problem with tiling `image` by `tile` with `overlap`, or undefined. */
export function tileProblem(image: Size, tile: number, overlap: number): string | undefined {
  if (tile > image.width || tile > image.height) {
    return `tile ${tile} is larger than the scaled image (${image.width}×${image.height})`;
  }
  return overlapProblem(tile, overlap);
}

/** The problem with `overlap` between tiles of `tile` pixels, or undefined. */
export function overlapProblem(tile: number, overlap: number): string | undefined {
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= tile)
    return `must be a whole number of pixels, at least 0 and below the tile size ${tile}`;
  return undefined;
}

export function planTiles(image: Size, tile: number, overlap: number): TilePlan {
  const problem = tileProblem(image, tile, overlap);
  if (problem) throw new StpmdError("ERR_OPTION_INVALID", problem);
  const xs = tileStarts(image.width, tile, overlap);
  const ys = tileStarts(image.height, tile, overlap);
  return {
    image,
    tile,
    xs,
    ys,
    ownX: ownership(xs, tile, image.width),
    ownY: ownership(ys, tile, image.height),
    count: xs.length * ys.length,
  };
}

/**
 * Copies tile `index` (row by row of tiles) of one packed RGB image into `out` at tile slot `slot`, with `margin`
 * pixels of context from its neighbours (the image reflected at its edge; see {@link contextInput}).
 */
export function cutTile(
  rgb: Uint8Array,
  plan: TilePlan,
  index: number,
  out: Uint8Array,
  slot: number,
  margin = 0,
): void {
  const { tile, image } = plan;
  const x = plan.xs[index % plan.xs.length]!;
  const y = plan.ys[Math.floor(index / plan.xs.length)]!;
  const side = tile + 2 * margin;
  contextInput(rgb, image, { x, y, width: tile, height: tile }, margin, out, slot * side * side * 3);
}

/**
 * Copies the tiles of one packed RGB image into `out` (tile after tile, each tile × tile × 3 bytes, row by row of
 * tiles), starting at tile slot `first`. Rows are copied whole, so this is a memcpy per tile row.
 */
export function cutTiles(rgb: Uint8Array, plan: TilePlan, out: Uint8Array, first = 0, margin = 0): void {
  for (let i = 0; i < plan.count; i++) cutTile(rgb, plan, i, out, first + i, margin);
}

/**
 * One map of the image from its tiles' maps (`maps` holds `plan.count` tile maps from tile index `first`). Where
 * tiles overlap, each pixel is taken from the tile whose centre is nearer, i.e. the overlap is split at its middle:
 * a tile's outer rows and columns see the convolutions' zero padding and score highest on normal images, and
 * averaging or taking the maximum would carry those edge values into the map (max) or halve a defect that only
 * one tile sees whole (mean); splitting keeps, for every pixel, the tile in which it has the most context.
 * Returns the stitched map's maximum (the image score; NaN when a pixel is NaN).
 */
export function stitchTiles(maps: Float32Array, plan: TilePlan, out: Float32Array, first = 0): number {
  const { tile, image } = plan;
  const tileArea = tile * tile;
  let index = first;
  let max = Number.NEGATIVE_INFINITY;
  for (let ty = 0; ty < plan.ys.length; ty++) {
    const y0 = plan.ys[ty]!;
    for (let tx = 0; tx < plan.xs.length; tx++) {
      const x0 = plan.xs[tx]!;
      const fromX = plan.ownX[tx]!;
      const toX = plan.ownX[tx + 1]!;
      const base = index * tileArea;
      for (let y = plan.ownY[ty]!; y < plan.ownY[ty + 1]!; y++) {
        const src = base + (y - y0) * tile + (fromX - x0);
        const row = maps.subarray(src, src + (toX - fromX));
        out.set(row, y * image.width + fromX);
        // a NaN pixel makes the score NaN (see applyIgnoreMask)
        for (let i = 0; i < row.length; i++) if (row[i]! > max || Number.isNaN(row[i])) max = row[i]!;
      }
      index += 1;
    }
  }
  return max;
}

/** The geometry a bundle without one (written before geometry existed) implies: a square resize. */
export function resizeGeometry(input: Size, source: Size = input, roi: Roi | null = null): Geometry {
  return { mode: "resize", input, capture: input, source, roi, tile: null, scale: null };
}

/** Tile geometry for images of `source` size scaled by `scale`, cut into `tile`-pixel tiles. */
export function tiledGeometry(
  source: Size,
  roi: Roi | null,
  tile: number,
  overlap: number,
  scale: number,
): Geometry {
  if (!(scale > 0 && scale <= 4)) throw optionError(`--scale ${scale}`, "must be above 0 and at most 4");
  if (tile % 16 !== 0 || tile < 32)
    throw optionError(`--tile ${tile}`, "must be a multiple of 16 and at least 32");
  const overlapIssue = overlapProblem(tile, overlap);
  if (overlapIssue) throw optionError(`--tile-overlap ${overlap}`, overlapIssue);
  const capture = scaledSize(source, scale);
  const problem = tileProblem(capture, tile, overlap);
  if (problem)
    throw optionError(
      `--tile ${tile}`,
      `${problem} (source ${source.width}×${source.height} × scale ${scale})`,
    );
  return {
    mode: "tile",
    input: { width: tile, height: tile },
    capture,
    source,
    roi,
    tile: { size: tile, overlap },
    scale,
  };
}

/** A one-line description for logs and summaries, e.g. `tile 256 (overlap 32) of 750×500 (scale 0.5)`. */
export function describeGeometry(g: Geometry): string {
  const roi = g.roi ? `, ROI ${g.roi.x},${g.roi.y},${g.roi.width},${g.roi.height}` : "";
  const margin = marginOf(g) > 0 ? `, context margin ${marginOf(g)}` : "";
  if (g.mode === "resize") return `resize to ${g.input.width}×${g.input.height}${roi}${margin}`;
  return `tile ${g.tile!.size} (overlap ${g.tile!.overlap}) of ${g.capture.width}×${g.capture.height} (scale ${g.scale})${roi}${margin}`;
}
