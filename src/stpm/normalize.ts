/** F.normalize's epsilon: features whose norm is below it are divided by it instead. */
export const NORM_EPS = 1e-12;

/**
 * L2-normalises every position's feature vector over the channel axis of an N×C×H×W tensor, in place, as
 * torch.nn.functional.normalize(x, dim=1) does (norms below 1e-12 are clamped to it).
 */
export function l2NormalizeChannels(data: Float32Array, n: number, c: number, hw: number): Float32Array {
  const norms = new Float64Array(hw);
  for (let b = 0; b < n; b++) {
    const base = b * c * hw;
    norms.fill(0);
    for (let ch = 0; ch < c; ch++) {
      const off = base + ch * hw;
      for (let p = 0; p < hw; p++) norms[p]! += data[off + p]! * data[off + p]!;
    }
    for (let p = 0; p < hw; p++) norms[p] = 1 / Math.max(Math.sqrt(norms[p]!), NORM_EPS);
    for (let ch = 0; ch < c; ch++) {
      const off = base + ch * hw;
      for (let p = 0; p < hw; p++) data[off + p] = data[off + p]! * norms[p]!;
    }
  }
  return data;
}
