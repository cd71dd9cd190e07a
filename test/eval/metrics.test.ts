import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StpmdError } from "../../src/core/errors.js";
import { aupro, auroc, f1Max, pixelAuroc, radixArgsort, rocCurve } from "../../src/eval/metrics.js";
import { Random } from "../../src/stpm/random.js";

/** Deterministic PRNG so random cases are the same on every run. */
function seededRandom(seed: number): () => number {
  const rng = new Random(seed);
  return () => rng.next();
}

function isStpmdError(code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof StpmdError && err.code === code;
}

/** O(n²) reference: fraction of (anomalous, normal) pairs ranked correctly, ties ½. */
function pairwiseAuroc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  let wins = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] === 0) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i] > scores[j]) wins += 1;
      else if (scores[i] === scores[j]) wins += 0.5;
    }
  }
  return wins / pairs;
}

/** Reference argsort: comparator sort on (value, index), so equal values keep index order. */
function comparatorArgsort(values: ArrayLike<number>): number[] {
  const indices = Array.from({ length: values.length }, (_, i) => i);
  return indices.sort((a, b) => values[a] - values[b] || a - b);
}

/** Independent 8-connected labelling for the AUPRO reference: recursive flood fill, fine for tiny masks. */
function referenceRegions(mask: Uint8Array, width: number, height: number): number[][] {
  const seen = new Uint8Array(mask.length);
  const regions: number[][] = [];
  const fill = (x: number, y: number, region: number[]) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const i = y * width + x;
    if (mask[i] === 0 || seen[i]) return;
    seen[i] = 1;
    region.push(i);
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) fill(x + dx, y + dy, region);
  };
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] === 0 || seen[i]) continue;
    const region: number[] = [];
    fill(i % width, Math.floor(i / width), region);
    regions.push(region);
  }
  return regions;
}

/**
 * Brute-force AUPRO straight from the definition: for every distinct score t (descending), FPR = share of all
 * normal pixels with score >= t, PRO = mean over regions of the share of the region with score >= t; curve
 * (0,0) + those points + (1,1); trapezoid area up to the limit with the MVTec interpolation; divided by it.
 */
function bruteForceAupro(
  maps: Float32Array[],
  masks: Uint8Array[],
  width: number,
  height: number,
  fprLimit: number,
): number {
  const regions = masks.flatMap((mask, k) =>
    referenceRegions(mask, width, height).map((pixels) => pixels.map((p) => maps[k][p])),
  );
  const normalScores = maps.flatMap((map, k) => [...map].filter((_, p) => masks[k][p] === 0));
  const thresholds = [...new Set(maps.flatMap((map) => [...map]))].sort((a, b) => b - a);
  const xs = [0];
  const ys = [0];
  for (const t of thresholds) {
    xs.push(normalScores.filter((s) => s >= t).length / normalScores.length);
    const overlaps = regions.map((scores) => scores.filter((s) => s >= t).length / scores.length);
    ys.push(overlaps.reduce((a, b) => a + b, 0) / regions.length);
  }
  xs.push(1);
  ys.push(1);

  let correction = 0;
  if (!xs.includes(fprLimit)) {
    const insertAt = xs.findIndex((x) => x > fprLimit); // bisect_right
    const [x0, x1, y0, y1] = [xs[insertAt - 1], xs[insertAt], ys[insertAt - 1], ys[insertAt]];
    const yAtLimit = y0 + ((y1 - y0) * (fprLimit - x0)) / (x1 - x0);
    correction = 0.5 * (yAtLimit + y0) * (fprLimit - x0);
  }
  let area = 0;
  for (let k = 1; k < xs.length && xs[k] <= fprLimit; k++)
    area += 0.5 * (ys[k] + ys[k - 1]) * (xs[k] - xs[k - 1]);
  return (area + correction) / fprLimit;
}

describe("radixArgsort", () => {
  it("orders float32 values with negatives, ±0, duplicates, infinities and subnormals like a stable sort", () => {
    const random = seededRandom(1);
    const specials = [
      0,
      -0,
      1e-45,
      -1e-45,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      3.4e38,
      -3.4e38,
    ];
    for (const n of [0, 1, 2, 17, 1000, 70_000]) {
      const values = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const pick = random();
        if (pick < 0.1) values[i] = specials[Math.floor(random() * specials.length)];
        else if (pick < 0.5)
          values[i] = Math.round((random() - 0.5) * 20) / 4; // many duplicates
        else values[i] = (random() - 0.5) * 10 ** (random() * 20 - 10);
      }
      assert.deepEqual([...radixArgsort(values)], comparatorArgsort(values), `n = ${n}`);
    }
  });

  it("treats -0 and +0 as equal, keeping input order", () => {
    assert.deepEqual([...radixArgsort(new Float32Array([0, -0, 0, -0]))], [0, 1, 2, 3]);
    assert.deepEqual([...radixArgsort([-0, 0, -1, -0])], [2, 0, 1, 3]);
  });

  it("sorts plain numbers that float32 would merge by their exact float64 value", () => {
    const random = seededRandom(2);
    const values = Array.from({ length: 5000 }, () => {
      const pick = random();
      if (pick < 0.2) return 1 + Math.floor(random() * 10) * 1e-13; // equal in float32, distinct in float64
      if (pick < 0.3) return pick < 0.25 ? -0 : 0;
      if (pick < 0.4) return Math.round(random() * 8) - 4;
      return (random() - 0.5) * 10 ** (random() * 600 - 300);
    });
    values.push(Number.MAX_VALUE, -Number.MAX_VALUE, 5e-324, -5e-324, Number.POSITIVE_INFINITY);
    assert.deepEqual([...radixArgsort(values)], comparatorArgsort(values));
  });

  it("throws a clear error on NaN in either key width", () => {
    const nanError = (err: unknown) => err instanceof StpmdError && /score 2 of 3 is NaN/.test(err.message);
    assert.throws(() => radixArgsort(new Float32Array([1, 2, Number.NaN])), nanError);
    assert.throws(() => radixArgsort([0.1, 0.2, Number.NaN]), nanError);
    assert.throws(() => radixArgsort([1, 2, Number.NaN]), nanError);
  });
});

describe("auroc", () => {
  it("is 1 for perfect separation and 0 for inverted separation", () => {
    assert.equal(auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1);
    assert.equal(auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]), 0);
  });

  it("is 0.5 when all scores are equal, whatever the labels", () => {
    assert.equal(auroc([3, 3, 3, 3, 3], [1, 0, 0, 1, 0]), 0.5);
    assert.equal(auroc(new Float32Array([-0, 0, -0]), [1, 0, 1]), 0.5);
  });

  it("matches a known fraction: 3 of 4 pairs ordered → 0.75", () => {
    // Anomalous 0.35 beats normal 0.1 but loses to 0.4; anomalous 0.8 beats both: 3/4.
    assert.equal(auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75);
  });

  it("counts ties as half a pair", () => {
    // Anomalous 2 beats normal 1 and ties normal 2 (½); anomalous 3 beats both: (1 + ½ + 2) / 4 = 0.875.
    assert.equal(auroc([1, 2, 2, 3], [0, 0, 1, 1]), 0.875);
    // A tie across one pair only: 1 anomalous vs 2 normals, one tie and one win → 0.75.
    assert.equal(auroc(new Float32Array([5, 5, 1]), new Uint8Array([255, 0, 0])), 0.75);
  });

  it("separates float64 scores that differ below float32 precision", () => {
    assert.equal(auroc([1, 1 + 1e-12], [0, 1]), 1);
  });

  it("matches the O(n²) pairwise definition on random data with ties", () => {
    const random = seededRandom(3);
    for (let trial = 0; trial < 20; trial++) {
      const n = 2 + Math.floor(random() * 400);
      const decimals = trial % 3; // 0 decimals: heavy ties
      const scores = Array.from({ length: n }, () => Number(((random() - 0.3) * 10).toFixed(decimals)));
      const labels = Array.from({ length: n }, (_, i) => (i < 1 ? 1 : i < 2 ? 0 : random() < 0.3 ? 1 : 0));
      const expected = pairwiseAuroc(scores, labels);
      assert.ok(Math.abs(auroc(scores, labels) - expected) < 1e-12, `trial ${trial}`);
      assert.ok(
        Math.abs(
          auroc(Float32Array.from(scores), labels) - pairwiseAuroc(Float32Array.from(scores), labels),
        ) < 1e-12,
      );
    }
  });

  it("throws ERR_INPUT_EMPTY when a class is missing, ERR_MASK_SIZE on a length mismatch", () => {
    assert.throws(() => auroc([0.1, 0.2], [1, 1]), isStpmdError("ERR_INPUT_EMPTY"));
    assert.throws(() => auroc([0.1, 0.2], [0, 0]), isStpmdError("ERR_INPUT_EMPTY"));
    assert.throws(() => auroc([], []), isStpmdError("ERR_INPUT_EMPTY"));
    assert.throws(() => auroc([0.1, 0.2], [0, 1, 1]), isStpmdError("ERR_MASK_SIZE"));
  });
});

describe("pixelAuroc", () => {
  it("pools the pixels of all images", () => {
    // Anomalous pixels 0.9 and 0.2, normal 0.1 and 0.5: 0.9 beats both, 0.2 beats only 0.1 → 3/4.
    const maps = [new Float32Array([0.1, 0.9]), new Float32Array([0.5, 0.2])];
    const masks = [new Uint8Array([0, 1]), new Uint8Array([0, 255])];
    assert.equal(pixelAuroc(maps, masks), 0.75);
  });

  it("equals pairwise AUROC on the flattened arrays", () => {
    const random = seededRandom(4);
    const maps = Array.from({ length: 3 }, () =>
      new Float32Array(60).map(() => Math.round(random() * 20) / 20),
    );
    const masks = Array.from({ length: 3 }, () => new Uint8Array(60).map(() => (random() < 0.2 ? 1 : 0)));
    const flatScores = maps.flatMap((map) => [...map]);
    const flatLabels = masks.flatMap((mask) => [...mask]);
    assert.ok(Math.abs(pixelAuroc(maps, masks) - pairwiseAuroc(flatScores, flatLabels)) < 1e-12);
  });

  it("rejects a map and mask of different sizes", () => {
    assert.throws(
      () => pixelAuroc([new Float32Array(4)], [new Uint8Array(5)]),
      (err: unknown) =>
        isStpmdError("ERR_MASK_SIZE")(err) && /map 0 has 4 pixels/.test((err as Error).message),
    );
    assert.throws(() => pixelAuroc([new Float32Array(4)], []), isStpmdError("ERR_MASK_SIZE"));
  });
});

describe("rocCurve", () => {
  it("has one point per distinct score, as sklearn's roc_curve(drop_intermediate=False)", () => {
    const { fpr, tpr, thresholds } = rocCurve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]);
    assert.deepEqual([...fpr], [0, 0, 0.5, 0.5, 1]);
    assert.deepEqual([...tpr], [0, 0.5, 0.5, 1, 1]);
    assert.deepEqual([...thresholds], [Number.POSITIVE_INFINITY, 0.8, 0.4, 0.35, 0.1]);
  });

  it("has an area (trapezoids) equal to auroc, ties included", () => {
    const random = seededRandom(5);
    const scores = Array.from({ length: 300 }, () => Math.round(random() * 30));
    const labels = scores.map((s) => (random() < s / 40 ? 1 : 0));
    const { fpr, tpr } = rocCurve(scores, labels);
    let area = 0;
    for (let k = 1; k < fpr.length; k++) area += 0.5 * (tpr[k] + tpr[k - 1]) * (fpr[k] - fpr[k - 1]);
    assert.ok(Math.abs(area - auroc(scores, labels)) < 1e-12);
  });
});

describe("f1Max", () => {
  it("finds the best threshold, ties moving together", () => {
    // P = 3. Thresholds, with F1 = 2TP / (TP + FP + P):
    //   >= 0.9: TP 1 FP 0 → 2/4 = 0.5      >= 0.8: TP 1 FP 1 → 2/5 = 0.4
    //   >= 0.7: TP 2 FP 1 → 4/6 ≈ 0.667    >= 0.6 (a tie of one anomalous and one normal): TP 3 FP 2 → 6/8 = 0.75
    //   >= 0.5: TP 3 FP 3 → 6/9 ≈ 0.667
    // Splitting the tie would wrongly offer TP 3 FP 1 → 6/7, whichever of the tied pair came first.
    const scores = [0.9, 0.8, 0.7, 0.6, 0.6, 0.5];
    assert.deepEqual(f1Max(scores, [1, 0, 1, 1, 0, 0]), { f1: 0.75, threshold: 0.6 });
    assert.deepEqual(f1Max(scores, [1, 0, 1, 0, 1, 0]), { f1: 0.75, threshold: 0.6 });
  });

  it("picks the lowest of equally good thresholds, like np.argmax over sklearn's ascending thresholds", () => {
    // P = 2: >= 5 → TP 1 FP 0 → 2/3; >= 4 → 2/4; >= 3 → 2/5; >= 2 → TP 2 FP 2 → 4/6 = 2/3.
    assert.deepEqual(f1Max([5, 4, 3, 2], [1, 0, 0, 1]), { f1: 2 / 3, threshold: 2 });
  });

  it("is 1 for perfect separation and needs an anomalous sample", () => {
    assert.deepEqual(f1Max(new Float32Array([0.25, 0.5, 0.75]), [0, 1, 1]), { f1: 1, threshold: 0.5 });
    assert.throws(() => f1Max([0.1, 0.2], [0, 0]), isStpmdError("ERR_INPUT_EMPTY"));
  });
});

describe("aupro", () => {
  // Two 4×4 images. Image A: region R1 = (0,0) and (1,1), joined only diagonally (8-connectivity: one region
  // of 2 px). Image B: region R2 = the 2×2 block at (2,2). Normal pixels: 14 + 12 = 26.
  //   A scores: R1 (0,0)=0.9, (1,1)=0.5; normal (3,0)=0.9 (ties R1), (2,1)=0.7; the rest 0.
  //   B scores: R2 (2,2)=0.8, (3,2)=0.8, (2,3)=0.3, (3,3)=0; normal (0,0)=0.5 (ties R1), (1,0)=0.4; the rest 0.
  // Curve points (FPR, PRO = mean of R1 share and R2 share) after each distinct score, descending:
  //   start (0, 0)
  //   0.9: FP 1, R1 1/2, R2 0   → (1/26, 0.25)   [tie: R1 pixel and normal pixel move together]
  //   0.8: FP 1, R2 2/4         → (1/26, 0.5)
  //   0.7: FP 2                 → (2/26, 0.5)
  //   0.5: FP 3, R1 2/2         → (3/26, 0.75)
  //   0.4: FP 4                 → (4/26, 0.75)
  //   0.3: R2 3/4               → (4/26, 0.875)
  //   0:   FP 26, R2 4/4        → (1, 1), then the appended (1, 1)
  // Trapezoids up to 4/26: (0.125 + 0 + 0.5 + 0.625 + 0.75 + 0) / 26 = 2/26 = 1/13.
  // fprLimit 0.3 lies between 4/26 and 1: PRO(0.3) = 7/8 + (1/8)(0.3 − 4/26)/(22/26) = 7/8 + 19/880 = 789/880;
  //   last trapezoid ½ (7/8 + 789/880)(0.3 − 4/26) = ½ (1559/880)(19/130) = 29621/228800;
  //   total 17600/228800 + 29621/228800 = 47221/228800; ÷ 0.3 = 47221/68640 ≈ 0.687951.
  // fprLimit 2/26 is a curve point, so no interpolation: (0.125 + 0.5)/26 ÷ (2/26) = 0.3125.
  // fprLimit 1: 1/13 + ½ (0.875 + 1)(22/26) = (2 + 20.625)/26 = 22.625/26.
  const width = 4;
  const height = 4;
  const pixel = (x: number, y: number) => y * width + x;
  const mapA = new Float32Array(16);
  const maskA = new Uint8Array(16);
  const mapB = new Float32Array(16);
  const maskB = new Uint8Array(16);
  maskA[pixel(0, 0)] = maskA[pixel(1, 1)] = 1;
  mapA[pixel(0, 0)] = mapA[pixel(3, 0)] = 0.9;
  mapA[pixel(1, 1)] = 0.5;
  mapA[pixel(2, 1)] = 0.7;
  for (const [x, y] of [
    [2, 2],
    [3, 2],
    [2, 3],
    [3, 3],
  ]) {
    maskB[pixel(x, y)] = 255;
  }
  mapB[pixel(2, 2)] = mapB[pixel(3, 2)] = 0.8;
  mapB[pixel(2, 3)] = 0.3;
  mapB[pixel(0, 0)] = 0.5;
  mapB[pixel(1, 0)] = 0.4;
  const maps = [mapA, mapB];
  const masks = [maskA, maskB];

  it("matches the hand-worked curve with interpolation at the default limit 0.3", () => {
    assert.ok(Math.abs(aupro(maps, masks, width, height) - 47221 / 68640) < 1e-12);
  });

  it("needs no interpolation when the limit is a curve point, and integrates the whole curve at limit 1", () => {
    assert.ok(Math.abs(aupro(maps, masks, width, height, 2 / 26) - 0.3125) < 1e-12);
    assert.ok(Math.abs(aupro(maps, masks, width, height, 1) - 22.625 / 26) < 1e-12);
  });

  it("matches a brute-force evaluation of the definition on random data with ties", () => {
    const random = seededRandom(6);
    for (let trial = 0; trial < 30; trial++) {
      const w = 2 + Math.floor(random() * 7);
      const h = 2 + Math.floor(random() * 7);
      const images = 1 + Math.floor(random() * 3);
      const density = 0.1 + random() * 0.4;
      const randomMaps = Array.from({ length: images }, () =>
        new Float32Array(w * h).map(() => Math.round((random() - 0.2) * 10) / 10),
      );
      const randomMasks = Array.from({ length: images }, () =>
        new Uint8Array(w * h).map(() => (random() < density ? 1 : 0)),
      );
      // Make sure there is a region and a normal pixel.
      randomMasks[0][0] = 1;
      randomMasks[0][w * h - 1] = 0;
      // Correlate scores with defects a little so the curve is not trivial.
      randomMasks.forEach((mask, k) => {
        mask.forEach((m, p) => {
          if (m) randomMaps[k][p] += 0.3;
        });
      });
      for (const limit of [0.05, 0.3, 1]) {
        const expected = bruteForceAupro(randomMaps, randomMasks, w, h, limit);
        const actual = aupro(randomMaps, randomMasks, w, h, limit);
        assert.ok(
          Math.abs(actual - expected) < 1e-9,
          `trial ${trial}, limit ${limit}: ${actual} vs ${expected}`,
        );
      }
    }
  });

  it("rejects inputs without regions or normal pixels, bad limits and mismatched sizes", () => {
    const empty = [new Uint8Array(16), new Uint8Array(16)];
    assert.throws(() => aupro(maps, empty, width, height), isStpmdError("ERR_INPUT_EMPTY"));
    const full = [new Uint8Array(16).fill(1), new Uint8Array(16).fill(1)];
    assert.throws(() => aupro(maps, full, width, height), isStpmdError("ERR_INPUT_EMPTY"));
    for (const limit of [0, -0.1, 1.5, Number.NaN]) {
      assert.throws(() => aupro(maps, masks, width, height, limit), isStpmdError("ERR_OPTION_INVALID"));
    }
    assert.throws(() => aupro(maps, masks, 8, 3), isStpmdError("ERR_MASK_SIZE"));
  });
});
