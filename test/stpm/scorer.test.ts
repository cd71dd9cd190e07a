import assert from "node:assert/strict";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { rgbToChw } from "../../src/data/images.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { Random } from "../../src/stpm/random.js";
import { Scorer } from "../../src/stpm/scorer.js";
import { foldedStudentGraph, initStudent } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";

/** Bilinear resize with half-pixel centres and edge clamping (PyTorch's align_corners=False). */
function upsample(src: Float64Array, h: number, w: number, H: number, W: number): Float64Array {
  const out = new Float64Array(H * W);
  const coord = (dst: number, inSize: number, outSize: number): [number, number, number] => {
    const x = Math.max(0, (dst + 0.5) * (inSize / outSize) - 0.5);
    const x0 = Math.min(Math.floor(x), inSize - 1);
    const x1 = Math.min(x0 + 1, inSize - 1);
    return [x0, x1, x - x0];
  };
  for (let y = 0; y < H; y++) {
    const [y0, y1, fy] = coord(y, h, H);
    for (let x = 0; x < W; x++) {
      const [x0, x1, fx] = coord(x, w, W);
      const top = src[y0 * w + x0]! * (1 - fx) + src[y0 * w + x1]! * fx;
      const bottom = src[y1 * w + x0]! * (1 - fx) + src[y1 * w + x1]! * fx;
      out[y * W + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}

// per-channel normalisation (ImageNet-like, built as a 1×1 conv) and one shared mean/std (built with scalars)
for (const [mean, std] of [
  [
    [0.5, 0.4, 0.3],
    [0.2, 0.25, 0.3],
  ],
  [
    [0.5, 0.5, 0.5],
    [0.5, 0.5, 0.5],
  ],
] as const) {
  test(`the fused scoring graph equals the STPM map computed step by step (mean ${mean}, std ${std})`, async () => {
    const S = 32;
    const N = 2;
    const teacher = randomTeacher(5, 4);
    const layout = studentLayout(teacher, S, S);
    const rng = new Random(9);
    const student = foldedStudentGraph(teacher, layout, initStudent(layout, rng));
    const frames = new Uint8Array(N * S * S * 3).map(() => Math.floor(rng.next() * 256));
    const scorer = await Scorer.create(teacher, student, {
      height: S,
      width: S,
      mean: [...mean],
      std: [...std],
    });
    const fused = await scorer.score(frames, N);

    const x = new Float32Array(N * 3 * S * S);
    for (let n = 0; n < N; n++)
      rgbToChw(frames.subarray(n * S * S * 3, (n + 1) * S * S * 3), S, S, [...mean], [...std], x, n);
    const tOut = await (await createSession(encodeModel(teacher))).run({
      input: floatInput(x, [N, 3, S, S]),
    });
    const sOut = await (await createSession(encodeModel(student))).run({
      input: floatInput(x, [N, 3, S, S]),
    });
    for (let n = 0; n < N; n++) {
      const map = new Float64Array(S * S).fill(1);
      for (const o of teacher.outputs) {
        const [, C, h, w] = tOut[o.name]!.dims as number[];
        const t = tOut[o.name]!.data as Float32Array;
        const s = sOut[o.name]!.data as Float32Array;
        const dist = new Float64Array(h! * w!);
        for (let p = 0; p < h! * w!; p++) {
          let tn = 0;
          let sn = 0;
          for (let c = 0; c < C!; c++) {
            const i = (n * C! + c) * h! * w! + p;
            tn += t[i]! ** 2;
            sn += s[i]! ** 2;
          }
          let d = 0;
          for (let c = 0; c < C!; c++) {
            const i = (n * C! + c) * h! * w! + p;
            d += (t[i]! / Math.max(Math.sqrt(tn), 1e-12) - s[i]! / Math.max(Math.sqrt(sn), 1e-12)) ** 2;
          }
          dist[p] = 0.5 * d;
        }
        const up = upsample(dist, h!, w!, S, S);
        for (let p = 0; p < S * S; p++) map[p]! *= up[p]!;
      }
      let maxDiff = 0;
      let peak = 0;
      for (let p = 0; p < S * S; p++) {
        maxDiff = Math.max(maxDiff, Math.abs(map[p]! - fused.maps[n * S * S + p]!));
        peak = Math.max(peak, map[p]!);
      }
      assert.ok(maxDiff <= 1e-4 * peak, `image ${n}: max diff ${maxDiff} vs peak ${peak}`);
      assert.ok(Math.abs(fused.scores[n]! - peak) <= 1e-4 * peak, `score ${fused.scores[n]} vs ${peak}`);
    }
    await scorer.release();
  });
}
