import assert from "node:assert/strict";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { rgbToChw } from "../../src/data/images.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { Random } from "../../src/stpm/random.js";
import { Scorer } from "../../src/stpm/scorer.js";
import { foldedStudentGraph, initStudent, type StudentState } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";
import { Validator } from "../../src/train/validation.js";

test("the per-epoch validator gives the Scorer's image scores for whatever weights it is fed", async () => {
  const size = 32;
  const count = 11; // two batches of 8, the second partial
  const teacher = randomTeacher(5, 8);
  const layout = studentLayout(teacher, size, size);
  const rng = new Random(9);
  const mean = [0.5, 0.4, 0.3];
  const std = [0.25, 0.2, 0.3];
  const images = Array.from({ length: count }, () =>
    Uint8Array.from({ length: size * size * 3 }, () => Math.floor(rng.next() * 256)),
  );
  const chw = 3 * size * size;
  const inputs = new Float32Array(count * chw);
  images.forEach((img, i) => {
    rgbToChw(img, size, size, mean, std, inputs, i);
  });
  const session = await createSession(encodeModel(teacher));
  const out = await session.run({ [teacher.inputs[0]!.name]: floatInput(inputs, [count, 3, size, size]) });
  const feats = teacher.outputs.map((o) => (out[o.name]!.data as Float32Array).slice());
  await session.release();

  const states: StudentState[] = [1, 2].map(() => {
    const s = initStudent(layout, rng);
    for (let k = 0; k < layout.convs.length; k++) {
      s.gammas[k] = s.gammas[k]!.map(() => 0.5 + rng.next());
      s.betas[k] = s.betas[k]!.map(() => rng.normal() * 0.3);
      s.runningMeans[k] = s.runningMeans[k]!.map(() => rng.normal() * 0.2);
      s.runningVars[k] = s.runningVars[k]!.map(() => 0.2 + 2 * rng.next());
    }
    return s;
  });
  const validator = await Validator.create(teacher, layout, inputs, feats, count, {
    width: size,
    height: size,
  });
  try {
    for (const state of states) {
      const got = await validator.scores(state);
      const scorer = await Scorer.create(teacher, foldedStudentGraph(teacher, layout, state), {
        height: size,
        width: size,
        mean,
        std,
      });
      const want = (await scorer.scoreAll(images, 4)).scores;
      await scorer.release();
      assert.equal(got.length, count);
      got.forEach((g, i) => {
        assert.ok(
          Math.abs(g - want[i]!) <= 1e-4 * Math.abs(want[i]!) + 1e-7,
          `image ${i}: ${g} vs ${want[i]}`,
        );
      });
    }
    const [a, b] = [await validator.scores(states[0]!), await validator.scores(states[1]!)];
    assert.notDeepEqual(a, b);
  } finally {
    await validator.release();
  }
});
