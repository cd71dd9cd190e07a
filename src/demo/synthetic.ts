import { Random } from "../stpm/random.js";

export interface SyntheticPart {
  rgb: Uint8Array;
  width: number;
  height: number;
  defect: "none" | "scratch" | "blob";
}

/**
 * A machined part as a camera on a line might see it: a disc with a fine concentric turning texture, lit from
 * one side, on a darker fixture, with sensor noise and a little positional jitter. Defective parts carry a dark
 * scratch or a bright contamination blob. Used by `stpmd demo` so a newcomer needs no dataset.
 */
export function synthesizePart(size: number, seed: number, defect: SyntheticPart["defect"]): SyntheticPart {
  const rng = new Random(seed);
  const rgb = new Uint8Array(size * size * 3);
  const cx = size / 2 + (rng.next() - 0.5) * size * 0.04;
  const cy = size / 2 + (rng.next() - 0.5) * size * 0.04;
  const radius = size * 0.38;
  const scratch = {
    x0: cx + (rng.next() - 0.5) * radius,
    y0: cy + (rng.next() - 0.5) * radius,
    angle: rng.next() * Math.PI,
    length: radius * (0.4 + 0.3 * rng.next()),
  };
  const blob = {
    x: cx + (rng.next() - 0.5) * radius,
    y: cy + (rng.next() - 0.5) * radius,
    r: size * (0.05 + 0.02 * rng.next()),
  };
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dx = x - cx;
      const dy = y - cy;
      const r = Math.sqrt(dx * dx + dy * dy);
      let v: number;
      if (r < radius) {
        const rings = 0.5 + 0.5 * Math.sin(r * 1.3);
        const light = 0.75 + 0.25 * (dx / radius);
        v = (140 + 40 * rings) * light;
      } else {
        v = 55 + 10 * Math.sin(x * 0.2) * Math.sin(y * 0.2);
      }
      let tint = [1, 1, 1];
      if (defect === "scratch") {
        const ux = Math.cos(scratch.angle);
        const uy = Math.sin(scratch.angle);
        const along = (x - scratch.x0) * ux + (y - scratch.y0) * uy;
        const across = Math.abs(-(x - scratch.x0) * uy + (y - scratch.y0) * ux);
        if (along > 0 && along < scratch.length && across < size * 0.02) v *= 0.25;
      } else if (defect === "blob") {
        const d = Math.hypot(x - blob.x, y - blob.y);
        if (d < blob.r) {
          v = 230;
          tint = [1, 0.85, 0.55];
        }
      }
      const noise = rng.normal() * 4;
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) rgb[o + c] = Math.max(0, Math.min(255, Math.round(v * tint[c]! + noise)));
    }
  }
  return { rgb, width: size, height: size, defect };
}
