/**
 * The anomaly map as a heatmap over its frame, one implementation for the part page and the Models page's
 * disagreement gallery: the daemon writes a map as grey levels with 128 = the threshold.
 */

/**
 * Paints the grey anomaly map (128 = the threshold) as a heatmap: transparent below the threshold, yellow to red
 * above it, so the overlay marks only what the model flagged.
 */
export function paintMap(canvas: HTMLCanvasElement, map: HTMLImageElement): void {
  canvas.width = map.naturalWidth;
  canvas.height = map.naturalHeight;
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  ctx.drawImage(map, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const d = pixels.data;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i]!;
    const over = Math.max(0, Math.min(1, (v - 96) / 127)); // a faint glow from 3/4 of the threshold up
    d[i] = 255;
    d[i + 1] = Math.round(220 * (1 - over));
    d[i + 2] = 0;
    d[i + 3] = Math.round(255 * over);
  }
  ctx.putImageData(pixels, 0, 0);
}

/**
 * Loads the map at `url` and paints it into `canvas`, then tells `onSize` the map's size (the model's grid, which
 * the regions' pixels are on: the frame beside it may be larger, kept at the ROI's own resolution); the returned
 * function stops a load not yet done.
 */
export function loadMap(
  canvas: HTMLCanvasElement,
  url: string,
  onSize?: (size: { w: number; h: number }) => void,
): () => void {
  let live = true;
  const map = new Image();
  map.onload = () => {
    if (!live) return;
    paintMap(canvas, map);
    onSize?.({ w: map.naturalWidth, h: map.naturalHeight });
  };
  map.src = url;
  return () => {
    live = false;
  };
}
