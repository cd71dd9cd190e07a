import assert from "node:assert/strict";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput, type ort } from "../../src/onnx/ort.js";
import { l2NormalizeChannels } from "../../src/stpm/normalize.js";
import { Random } from "../../src/stpm/random.js";
import { initStudent, type StudentState } from "../../src/train/student.js";
import {
  BN_EPS,
  buildTrainingGraph,
  type StudentConv,
  studentLayout,
} from "../../src/train/training-graph.js";

const N = 3;
const H = 32;
const W = 32;

async function setup() {
  const teacher = randomTeacher(3, 4);
  const layout = studentLayout(teacher, H, W);
  const rng = new Random(7);
  const x = new Float32Array(N * 3 * H * W).map(() => rng.normal());
  const tSession = await createSession(encodeModel(teacher));
  const tOut = await tSession.run({ input: floatInput(x, [N, 3, H, W]) });
  const teacherFeats = teacher.outputs.map((o) => {
    const t = tOut[o.name]!;
    const [n, c, h, w] = t.dims as number[];
    return floatInput(l2NormalizeChannels((t.data as Float32Array).slice(), n!, c!, h! * w!), t.dims);
  });
  const session = await createSession(encodeModel(buildTrainingGraph(teacher, layout)));
  const state = initStudent(layout, rng);
  // move BN affine parameters off their trivial initial values so their gradients are exercised
  for (const g of state.gammas) for (let i = 0; i < g.length; i++) g[i] = 0.5 + rng.next();
  for (const b of state.betas) for (let i = 0; i < b.length; i++) b[i] = 0.2 * rng.normal();
  const run = async (s: StudentState) => {
    const feeds: Record<string, ort.Tensor> = {
      x: floatInput(x, [N, 3, H, W]),
      inv_batch: floatInput(new Float32Array([1 / N]), []),
    };
    teacherFeats.forEach((t, i) => {
      feeds[`teacher_${i}`] = t;
    });
    layout.convs.forEach((c, k) => {
      feeds[`w_${k}`] = floatInput(s.weights[k]!, c.weightDims);
      feeds[`gamma_${k}`] = floatInput(s.gammas[k]!, [1, c.channels, 1, 1]);
      feeds[`beta_${k}`] = floatInput(s.betas[k]!, [1, c.channels, 1, 1]);
    });
    return session.run(feeds);
  };
  return { layout, state, run, rng, x };
}

test("training graph gradients match central finite differences for every parameter tensor", async () => {
  const { layout, state, run, rng } = await setup();
  const out = await run(state);
  const loss0 = (out.loss!.data as Float32Array)[0]!;
  assert.ok(loss0 > 0 && Number.isFinite(loss0));
  const groups: [string, Float32Array[]][] = [
    ["w", state.weights],
    ["gamma", state.gammas],
    ["beta", state.betas],
  ];
  const errors: number[] = [];
  for (const [kind, params] of groups) {
    for (let k = 0; k < layout.convs.length; k++) {
      const p = params[k]!;
      const grad = out[`grad_${kind}_${k}`]!.data as Float32Array;
      assert.equal(grad.length, p.length, `grad_${kind}_${k} size`);
      // probe along the gradient itself (plus noise): the largest directional derivative, so float32 rounding
      // in the loss stays small relative to the signal
      let gnorm = 0;
      for (let i = 0; i < p.length; i++) gnorm += grad[i]! * grad[i]!;
      gnorm = Math.sqrt(gnorm);
      const dir = new Float32Array(p.length).map(
        (_, i) => grad[i]! / gnorm + (0.3 * rng.normal()) / Math.sqrt(p.length),
      );
      let analytic = 0;
      for (let i = 0; i < p.length; i++) analytic += grad[i]! * dir[i]!;
      const eps = 1e-3;
      const orig = p.slice();
      for (let i = 0; i < p.length; i++) p[i] = orig[i]! + eps * dir[i]!;
      const lp = ((await run(state)).loss!.data as Float32Array)[0]!;
      for (let i = 0; i < p.length; i++) p[i] = orig[i]! - eps * dir[i]!;
      const lm = ((await run(state)).loss!.data as Float32Array)[0]!;
      p.set(orig);
      const numeric = (lp - lm) / (2 * eps);
      const err = Math.abs(numeric - analytic) / Math.max(Math.abs(analytic), Math.abs(numeric), 1e-4);
      errors.push(err);
      // ReLU/Clip kinks and max-pool switches make finite differences of a float32 loss noisy, so single probes
      // get a loose bound and the median a tight one; a wrong gradient is off by far more than either
      assert.ok(
        err < 0.08,
        `${kind}_${k}: analytic ${analytic} vs numeric ${numeric} (rel err ${err.toFixed(4)})`,
      );
    }
  }
  errors.sort((a, b) => a - b);
  assert.ok(errors[errors.length >> 1]! < 0.01, `median relative error ${errors[errors.length >> 1]}`);
});

/** A plain convolution (no bias) of NCHW `x` by `conv`'s geometry, written out here to check the graph against. */
function conv2d(x: Float32Array, c: number, h: number, w: number, weight: Float32Array, conv: StudentConv) {
  const { kernel, strides, pads, group } = conv.geometry;
  const [kh, kw] = kernel;
  const cout = conv.channels;
  const oh = Math.floor((h + pads[0] + pads[2] - kh) / strides[0]) + 1;
  const ow = Math.floor((w + pads[1] + pads[3] - kw) / strides[1]) + 1;
  const cinPerGroup = c / group;
  const coutPerGroup = cout / group;
  const y = new Float64Array(N * cout * oh * ow);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < cout; o++) {
      const g = Math.floor(o / coutPerGroup);
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++) {
          let sum = 0;
          for (let ci = 0; ci < cinPerGroup; ci++) {
            const cin = g * cinPerGroup + ci;
            for (let a = 0; a < kh; a++) {
              const yi = i * strides[0] - pads[0] + a;
              if (yi < 0 || yi >= h) continue;
              for (let bb = 0; bb < kw; bb++) {
                const xj = j * strides[1] - pads[1] + bb;
                if (xj < 0 || xj >= w) continue;
                sum +=
                  x[((n * c + cin) * h + yi) * w + xj]! *
                  weight[((o * cinPerGroup + ci) * kh + a) * kw + bb]!;
              }
            }
          }
          y[((n * cout + o) * oh + i) * ow + j] = sum;
        }
      }
    }
  }
  return { y, c: cout, h: oh, w: ow };
}

/** Per-channel mean and biased variance over batch and positions. */
function channelStats(y: Float64Array, c: number, hw: number): { mean: number[]; variance: number[] } {
  const mean = new Array<number>(c).fill(0);
  const variance = new Array<number>(c).fill(0);
  const count = N * hw;
  for (let n = 0; n < N; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let p = 0; p < hw; p++) mean[ch]! += y[(n * c + ch) * hw + p]! / count;
    }
  }
  for (let n = 0; n < N; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let p = 0; p < hw; p++) variance[ch]! += (y[(n * c + ch) * hw + p]! - mean[ch]!) ** 2 / count;
    }
  }
  return { mean, variance };
}

function assertClose(actual: Float32Array, expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  expected.forEach((e, i) => {
    const tolerance = 1e-4 * Math.abs(e) + 1e-6;
    assert.ok(Math.abs(actual[i]! - e) <= tolerance, `${what}[${i}]: graph ${actual[i]}, computed here ${e}`);
  });
}

test("batch statistics outputs equal the per-channel mean and biased variance", async () => {
  const { layout, state, run, x } = await setup();
  const out = await run(state);
  // computed here from the inputs: the stem convolution, then (through training-mode BatchNorm and the teacher's
  // Clip 0..6) the depthwise convolution after it
  assert.equal(layout.convs[1]!.geometry.group, layout.convs[1]!.channels, "conv 1 is the depthwise one");
  let input = Float64Array.from(x);
  let [c, h, w] = [3, H, W];
  for (const k of [0, 1]) {
    const conv = conv2d(Float32Array.from(input), c, h, w, state.weights[k]!, layout.convs[k]!);
    const hw = conv.h * conv.w;
    const { mean, variance } = channelStats(conv.y, conv.c, hw);
    assert.ok(
      variance.every((v) => v > 1e-3),
      `conv ${k}: a real batch has spread in every channel`,
    );
    assertClose(out[`batch_mean_${k}`]!.data as Float32Array, mean, `batch_mean_${k}`);
    assertClose(out[`batch_var_${k}`]!.data as Float32Array, variance, `batch_var_${k}`);
    input = conv.y.map((v, i) => {
      const ch = Math.floor(i / hw) % conv.c;
      const bn =
        ((v - mean[ch]!) / Math.sqrt(variance[ch]! + BN_EPS)) * state.gammas[k]![ch]! + state.betas[k]![ch]!;
      return Math.min(6, Math.max(0, bn));
    });
    [c, h, w] = [conv.c, conv.h, conv.w];
  }
});
