import assert from "node:assert/strict";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput, type ort } from "../../src/onnx/ort.js";
import { l2NormalizeChannels } from "../../src/stpm/normalize.js";
import { Random } from "../../src/stpm/random.js";
import { initStudent, type StudentState } from "../../src/train/student.js";
import { buildTrainingGraph, studentLayout } from "../../src/train/training-graph.js";

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
  return { layout, state, run, rng };
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

test("batch statistics outputs equal the per-channel mean and biased variance", async () => {
  const { state, run } = await setup();
  const out = await run(state);
  const mean = out.batch_mean_0!.data as Float32Array;
  const variance = out.batch_var_0!.data as Float32Array;
  assert.ok(variance.every((v) => v >= 0));
  assert.equal(mean.length, state.gammas[0]!.length);
});
