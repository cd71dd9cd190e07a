import { StpmdError } from "../core/errors.js";
import type { Region } from "../core/result.js";

export type { Region };

/** Connected components of a binary mask: `labels[i]` is 1..count for foreground pixels and 0 for background. */
export interface Components {
  labels: Int32Array;
  count: number;
  /** `sizes[k - 1]` is the pixel count of component `k`. */
  sizes: number[];
}

/**
 * 8-connected component labelling (two-pass union-find, no recursion, so any image size is safe).
 * Labels are numbered in the raster order of each component's first pixel, like scipy.ndimage.label.
 */
export function labelComponents(mask: ArrayLike<number>, width: number, height: number): Components {
  checkImageShape(mask.length, width, height, "mask");
  const labels = new Int32Array(width * height);
  // A new provisional label starts only at a pixel with no foreground among W, NW, N and NE, so starting pixels
  // are never 8-adjacent to each other: at most one per 2×2 cell, which bounds the table below.
  const parent = new Int32Array(Math.ceil(width / 2) * Math.ceil(height / 2) + 1);
  let nextLabel = 1;

  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      const i = row + x;
      if (mask[i] === 0) continue;
      const north = y > 0 ? labels[i - width] : 0;
      if (north !== 0) {
        // W, NW and NE all touch N, so they were already joined with it when they were visited.
        labels[i] = north;
        continue;
      }
      // W and NW touch each other (joined already); NE touches neither, so it may bridge two provisional labels.
      const westOrNorthWest = x > 0 ? labels[i - 1] || (y > 0 ? labels[i - width - 1] : 0) : 0;
      const northEast = y > 0 && x < width - 1 ? labels[i - width + 1] : 0;
      if (westOrNorthWest !== 0 && northEast !== 0) {
        union(parent, westOrNorthWest, northEast);
        labels[i] = westOrNorthWest;
      } else if (westOrNorthWest !== 0 || northEast !== 0) {
        labels[i] = westOrNorthWest || northEast;
      } else {
        parent[nextLabel] = nextLabel;
        labels[i] = nextLabel++;
      }
    }
  }

  // union() always hangs the larger root under the smaller, so every label's root is <= the label and was
  // already given its final number when the label is reached in increasing order.
  const finalLabel = new Int32Array(nextLabel);
  let count = 0;
  for (let provisional = 1; provisional < nextLabel; provisional++) {
    const root = findRoot(parent, provisional);
    finalLabel[provisional] = root === provisional ? ++count : finalLabel[root];
  }

  const sizes = new Array<number>(count).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const provisional = labels[i];
    if (provisional === 0) continue;
    const label = finalLabel[provisional];
    labels[i] = label;
    sizes[label - 1]++;
  }
  return { labels, count, sizes };
}

/**
 * Blobs of `map > threshold` (strictly greater; NaN never counts), 8-connected, with at least `minArea` pixels,
 * sorted by peak value, highest first (equal peaks keep raster order).
 */
export function findRegions(
  map: Float32Array,
  width: number,
  height: number,
  threshold: number,
  minArea = 1,
): Region[] {
  checkImageShape(map.length, width, height, "anomaly map");
  if (Number.isNaN(threshold)) {
    throw new StpmdError("ERR_OPTION_INVALID", "region threshold is NaN; it must be a number");
  }
  if (Number.isNaN(minArea)) {
    throw new StpmdError("ERR_OPTION_INVALID", "region minArea is NaN; it must be a number of pixels");
  }

  // Defects are small: label only the band of rows that has any pixel above the threshold (a contiguous slice
  // of the mask), which makes the usual frame several times cheaper than labelling the whole map.
  const above = new Uint8Array(map.length);
  let firstRow = height;
  let lastRow = -1;
  for (let y = 0; y < height; y++) {
    let any = 0;
    for (let i = y * width, end = i + width; i < end; i++) {
      const on = map[i] > threshold ? 1 : 0;
      above[i] = on;
      any |= on;
    }
    if (any) {
      if (firstRow === height) firstRow = y;
      lastRow = y;
    }
  }
  if (lastRow < 0) return [];
  const bandHeight = lastRow - firstRow + 1;
  const { labels, count } = labelComponents(
    above.subarray(firstRow * width, (lastRow + 1) * width),
    width,
    bandHeight,
  );

  // Per-component accumulators, indexed by label (slot 0 unused).
  const minX = new Int32Array(count + 1).fill(width);
  const minY = new Int32Array(count + 1).fill(height);
  const maxX = new Int32Array(count + 1).fill(-1);
  const maxY = new Int32Array(count + 1).fill(-1);
  const area = new Float64Array(count + 1);
  const sumX = new Float64Array(count + 1);
  const sumY = new Float64Array(count + 1);
  const peak = new Float64Array(count + 1).fill(Number.NEGATIVE_INFINITY);

  for (let by = 0; by < bandHeight; by++) {
    const y = firstRow + by;
    for (let x = 0; x < width; x++) {
      const label = labels[by * width + x];
      if (label === 0) continue;
      if (x < minX[label]) minX[label] = x;
      if (x > maxX[label]) maxX[label] = x;
      if (y < minY[label]) minY[label] = y;
      if (y > maxY[label]) maxY[label] = y;
      area[label]++;
      sumX[label] += x;
      sumY[label] += y;
      const value = map[y * width + x];
      if (value > peak[label]) peak[label] = value;
    }
  }

  const regions: Region[] = [];
  for (let label = 1; label <= count; label++) {
    if (area[label] < minArea) continue;
    regions.push({
      bbox: [minX[label], minY[label], maxX[label] - minX[label] + 1, maxY[label] - minY[label] + 1],
      area: area[label],
      peak: peak[label],
      centroid: [sumX[label] / area[label], sumY[label] / area[label]],
    });
  }
  // Array.prototype.sort is stable, so equal peaks stay in raster order.
  return regions.sort((a, b) => b.peak - a.peak);
}

function checkImageShape(length: number, width: number, height: number, what: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
    throw new StpmdError(
      "ERR_MASK_SIZE",
      `${what} size ${width}×${height} is invalid; width and height must be non-negative integers`,
    );
  }
  if (length !== width * height) {
    throw new StpmdError(
      "ERR_MASK_SIZE",
      `${what} has ${length} pixels but ${width}×${height} needs ${width * height}`,
    );
  }
}

/** Root of a provisional label, halving the path on the way so later look-ups stay short. */
function findRoot(parent: Int32Array, label: number): number {
  let node = label;
  while (parent[node] !== node) {
    parent[node] = parent[parent[node]];
    node = parent[node];
  }
  return node;
}

function union(parent: Int32Array, a: number, b: number): void {
  const rootA = findRoot(parent, a);
  const rootB = findRoot(parent, b);
  if (rootA < rootB) parent[rootB] = rootA;
  else if (rootB < rootA) parent[rootA] = rootB;
}
