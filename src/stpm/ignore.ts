/**
 * Ignore masks: parts of the view whose anomaly-map pixels are set to 0 before the image score and the regions are
 * computed (conveyor edges, labels, serial numbers that change on every part).
 */

/** Corners [x, y] of one polygon. */
export type Polygon = readonly (readonly [number, number])[];

/**
 * Rasterises polygons given in `scaleX`/`scaleY`-times-larger coordinates (ROI pixels) onto a width × height grid
 * (the map): 1 where a pixel's centre is inside any polygon (even–odd rule), else 0.
 */
export function rasterisePolygons(
  polygons: readonly Polygon[],
  width: number,
  height: number,
  scaleX = 1,
  scaleY = 1,
): Uint8Array {
  const mask = new Uint8Array(width * height);
  for (const polygon of polygons) {
    const pts = polygon.map(([x, y]) => [x / scaleX, y / scaleY] as const);
    for (let row = 0; row < height; row++) {
      const cy = row + 0.5;
      // x positions where the polygon's edges cross this row's centre line
      const crossings: number[] = [];
      for (let i = 0; i < pts.length; i++) {
        const [x1, y1] = pts[i]!;
        const [x2, y2] = pts[(i + 1) % pts.length]!;
        if (y1 <= cy !== y2 <= cy) crossings.push(x1 + ((cy - y1) / (y2 - y1)) * (x2 - x1));
      }
      crossings.sort((a, b) => a - b);
      for (let k = 0; k + 1 < crossings.length; k += 2) {
        // pixels whose centre x + 0.5 lies in [from, to)
        const from = Math.max(0, Math.ceil(crossings[k]! - 0.5));
        const to = Math.min(width, Math.ceil(crossings[k + 1]! - 0.5));
        for (let col = from; col < to; col++) mask[row * width + col] = 1;
      }
    }
  }
  return mask;
}

/**
 * Sets the masked pixels of `map` to 0 and returns the maximum of what is left (the image score): NaN when a pixel
 * left is NaN, so a model that yields NaN never scores as a finite number (a plain `>` would skip NaN pixels).
 */
export function applyIgnoreMask(map: Float32Array, mask: Uint8Array): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < map.length; i++) {
    if (mask[i] === 1) map[i] = 0;
    else if (map[i]! > max || Number.isNaN(map[i])) max = map[i]!;
  }
  return max === Number.NEGATIVE_INFINITY ? 0 : max;
}

/** Nearest-neighbour resampling of a 0/1 mask (e.g. a mask image) to another grid. */
export function resampleMask(
  mask: Uint8Array,
  width: number,
  height: number,
  toWidth: number,
  toHeight: number,
): Uint8Array {
  const out = new Uint8Array(toWidth * toHeight);
  for (let y = 0; y < toHeight; y++) {
    const sy = Math.min(height - 1, Math.floor(((y + 0.5) * height) / toHeight));
    for (let x = 0; x < toWidth; x++) {
      const sx = Math.min(width - 1, Math.floor(((x + 0.5) * width) / toWidth));
      out[y * toWidth + x] = mask[sy * width + sx]!;
    }
  }
  return out;
}
