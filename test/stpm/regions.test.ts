import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StpmdError } from "../../src/core/errors.js";
import { Random } from "../../src/stpm/random.js";
import { findRegions, labelComponents } from "../../src/stpm/regions.js";

/** Mask from rows of "#" (foreground) and "." (background). */
function drawMask(rows: string[]): { mask: Uint8Array; width: number; height: number } {
  const width = rows[0].length;
  const mask = new Uint8Array(width * rows.length);
  rows.forEach((row, y) => {
    for (let x = 0; x < width; x++) mask[y * width + x] = row[x] === "#" ? 1 : 0;
  });
  return { mask, width, height: rows.length };
}

/** Deterministic PRNG so random cases are the same on every run. */
function seededRandom(seed: number): () => number {
  const rng = new Random(seed);
  return () => rng.next();
}

/**
 * Independent reference: breadth-first flood fill over the 8 neighbours, labelling components in raster order
 * of their first pixel (the order labelComponents promises).
 */
function floodFillLabels(mask: Uint8Array, width: number, height: number): Int32Array {
  const labels = new Int32Array(width * height);
  let next = 0;
  for (let start = 0; start < mask.length; start++) {
    if (mask[start] === 0 || labels[start] !== 0) continue;
    next++;
    labels[start] = next;
    const queue = [start];
    for (let head = 0; head < queue.length; head++) {
      const x = queue[head] % width;
      const y = Math.floor(queue[head] / width);
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
          const j = ny * width + nx;
          if (mask[j] !== 0 && labels[j] === 0) {
            labels[j] = next;
            queue.push(j);
          }
        }
      }
    }
  }
  return labels;
}

describe("labelComponents", () => {
  it("joins pixels that touch only at a corner (8-connectivity), in both diagonal directions", () => {
    const down = drawMask(["#..", ".#.", "..#"]);
    assert.deepEqual(labelComponents(down.mask, down.width, down.height).sizes, [3]);
    const up = drawMask(["..#", ".#.", "#.."]);
    assert.deepEqual(labelComponents(up.mask, up.width, up.height).sizes, [3]);
  });

  it("merges two provisional labels bridged through the north-east neighbour", () => {
    // (0,0) and (2,0) start separate labels; (1,1) touches both diagonally, so all three are one component.
    const { mask, width, height } = drawMask(["#.#", ".#."]);
    const { labels, count, sizes } = labelComponents(mask, width, height);
    assert.equal(count, 1);
    assert.deepEqual(sizes, [3]);
    assert.deepEqual([...labels], [1, 0, 1, 0, 1, 0]);
  });

  it("labels a U shape as one component although its arms start as two", () => {
    const { mask, width, height } = drawMask(["#...#", "#...#", "#...#", "#####"]);
    const { count, sizes } = labelComponents(mask, width, height);
    assert.equal(count, 1);
    assert.deepEqual(sizes, [3 + 3 + 5]);
  });

  it("numbers separate components in raster order of their first pixel, with their sizes", () => {
    const { mask, width, height } = drawMask(["..##..#", "......#", "#.....#", "##.#..."]);
    const { labels, count, sizes } = labelComponents(mask, width, height);
    // Component 1: the pair at the top (first pixel (2,0)); 2: the column on the right ((6,0));
    // 3: the L at the bottom left ((0,2)); 4: the lone pixel (3,3), which is 2 columns from the L.
    assert.equal(count, 4);
    assert.deepEqual(sizes, [2, 3, 3, 1]);
    assert.equal(labels[0 * width + 2], 1);
    assert.equal(labels[2 * width + 6], 2);
    assert.equal(labels[3 * width + 1], 3);
    assert.equal(labels[3 * width + 3], 4);
    assert.equal(labels[0], 0);
  });

  it("handles empty, full and zero-sized masks", () => {
    assert.deepEqual(labelComponents(new Uint8Array(12), 4, 3).sizes, []);
    const full = labelComponents(new Uint8Array(12).fill(255), 4, 3);
    assert.deepEqual(full.sizes, [12]);
    assert.ok(full.labels.every((label) => label === 1));
    assert.equal(labelComponents(new Uint8Array(0), 0, 0).count, 0);
  });

  it("matches a flood-fill reference on random masks", () => {
    const random = seededRandom(7);
    for (let trial = 0; trial < 40; trial++) {
      const width = 1 + Math.floor(random() * 30);
      const height = 1 + Math.floor(random() * 30);
      const density = random();
      const mask = new Uint8Array(width * height).map(() => (random() < density ? 1 : 0));
      const expected = floodFillLabels(mask, width, height);
      const { labels, count, sizes } = labelComponents(mask, width, height);
      assert.deepEqual(
        labels,
        expected,
        `trial ${trial} (${width}×${height}, density ${density.toFixed(2)})`,
      );
      assert.equal(count, Math.max(0, ...expected));
      const expectedSizes = new Array<number>(count).fill(0);
      for (const label of expected) if (label > 0) expectedSizes[label - 1]++;
      assert.deepEqual(sizes, expectedSizes);
    }
  });

  it("labels 2000×2000 masks without recursion limits: random noise and a 2-million-pixel serpentine", () => {
    const width = 2000;
    const height = 2000;
    const random = seededRandom(42);
    const noise = new Uint8Array(width * height).map(() => (random() < 0.45 ? 1 : 0));
    const started = performance.now();
    const { labels, count, sizes } = labelComponents(noise, width, height);
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs < 5000, `took ${elapsedMs.toFixed(0)} ms`);
    // Every foreground pixel carries a label, sizes add up, and 8-neighbours share a label. Mismatches are
    // counted rather than asserted one by one to keep 4 million checks fast.
    let foreground = 0;
    let mismatches = 0;
    for (let i = 0; i < noise.length; i++) {
      if (noise[i] === 0) {
        if (labels[i] !== 0) mismatches++;
        continue;
      }
      foreground++;
      if (labels[i] < 1 || labels[i] > count) mismatches++;
      const x = i % width;
      if (x + 1 < width && noise[i + 1] && labels[i + 1] !== labels[i]) mismatches++;
      if (i + width < noise.length) {
        if (noise[i + width] && labels[i + width] !== labels[i]) mismatches++;
        if (x > 0 && noise[i + width - 1] && labels[i + width - 1] !== labels[i]) mismatches++;
        if (x + 1 < width && noise[i + width + 1] && labels[i + width + 1] !== labels[i]) mismatches++;
      }
    }
    assert.equal(mismatches, 0);
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      foreground,
    );
    assert.ok(count > 1000);

    // Even rows full; odd rows open only at alternating ends: one path snaking through half the image.
    const snake = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      if (y % 2 === 0) snake.fill(1, y * width, (y + 1) * width);
      else snake[y * width + (y % 4 === 1 ? width - 1 : 0)] = 1;
    }
    const snakeComponents = labelComponents(snake, width, height);
    assert.equal(snakeComponents.count, 1);
    assert.deepEqual(snakeComponents.sizes, [(height / 2) * width + height / 2]);
  });

  it("rejects a mask whose length does not match width × height", () => {
    assert.throws(
      () => labelComponents(new Uint8Array(10), 4, 3),
      (err: unknown) =>
        err instanceof StpmdError && err.code === "ERR_MASK_SIZE" && /10 pixels/.test(err.message),
    );
  });
});

describe("findRegions", () => {
  // 7×5 map with two blobs above 0.5 and a value exactly at the threshold, which must not count:
  //   x:    0    1    2    3    4    5    6
  //   y0: 0.9  0.6  0    0    0    0    0
  //   y1: 0.7  0    0    0    0    0.5  0
  //   y2: 0    0    0    0    0.8  0.95 0
  //   y3: 0    0    0    0    0    0.6  0.55
  //   y4: 0    0    0    0.3  0    0    0.1
  const width = 7;
  const height = 5;
  const map = new Float32Array(width * height);
  const put = (x: number, y: number, value: number) => {
    map[y * width + x] = value;
  };
  put(0, 0, 0.9);
  put(1, 0, 0.6);
  put(0, 1, 0.7);
  put(5, 1, 0.5);
  put(4, 2, 0.8);
  put(5, 2, 0.95);
  put(5, 3, 0.6);
  put(6, 3, 0.55);
  put(3, 4, 0.3);
  put(6, 4, 0.1);

  it("reports bbox, area, peak and centroid of each blob, highest peak first", () => {
    const regions = findRegions(map, width, height, 0.5);
    assert.equal(regions.length, 2);
    // Right blob: (4,2) (5,2) (5,3) (6,3); (5,1) equals the threshold and is left out.
    // bbox x 4..6, y 2..3 → [4, 2, 3, 2]; centroid ((4+5+5+6)/4, (2+2+3+3)/4) = (5, 2.5).
    const [right, left] = regions;
    assert.deepEqual(right.bbox, [4, 2, 3, 2]);
    assert.equal(right.area, 4);
    assert.equal(right.peak, Math.fround(0.95));
    assert.deepEqual(right.centroid, [5, 2.5]);
    // Left blob: (0,0) (1,0) (0,1); bbox [0, 0, 2, 2]; centroid (1/3, 1/3).
    assert.deepEqual(left.bbox, [0, 0, 2, 2]);
    assert.equal(left.area, 3);
    assert.equal(left.peak, Math.fround(0.9));
    assert.deepEqual(left.centroid, [1 / 3, 1 / 3]);
  });

  it("drops blobs smaller than minArea and finds nothing above the maximum", () => {
    const big = findRegions(map, width, height, 0.5, 4);
    assert.equal(big.length, 1);
    assert.equal(big[0].area, 4);
    assert.deepEqual(findRegions(map, width, height, 0.95), []);
    // Below every value the whole image is one region.
    const all = findRegions(map, width, height, -1);
    assert.deepEqual(all[0].bbox, [0, 0, width, height]);
    assert.equal(all[0].area, width * height);
  });

  it("matches a flood-fill reference on random maps whose blobs lie away from the edges", () => {
    const random = seededRandom(7);
    for (let trial = 0; trial < 20; trial++) {
      const w = 20 + Math.floor(random() * 30);
      const h = 20 + Math.floor(random() * 30);
      const m = new Float32Array(w * h);
      // a few bumps somewhere in the middle rows, so the labelled band starts and ends inside the map
      for (let bump = 0; bump < 3; bump++) {
        const cx = random() * w;
        const cy = h * (0.3 + 0.4 * random());
        for (let y = 0; y < h; y++)
          for (let x = 0; x < w; x++)
            m[y * w + x] += Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 6) * random();
      }
      const threshold = 0.3;
      const mask = Uint8Array.from(m, (v) => (v > threshold ? 1 : 0));
      const labels = floodFillLabels(mask, w, h);
      const expected = new Map<number, { xs: number[]; ys: number[]; peak: number }>();
      labels.forEach((label, i) => {
        if (label === 0) return;
        const e = expected.get(label) ?? { xs: [], ys: [], peak: Number.NEGATIVE_INFINITY };
        e.xs.push(i % w);
        e.ys.push(Math.floor(i / w));
        e.peak = Math.max(e.peak, m[i]);
        expected.set(label, e);
      });
      const sum = (a: number[]) => a.reduce((p, q) => p + q, 0);
      const want = [...expected.values()]
        .map((e) => ({
          bbox: [
            Math.min(...e.xs),
            Math.min(...e.ys),
            Math.max(...e.xs) - Math.min(...e.xs) + 1,
            Math.max(...e.ys) - Math.min(...e.ys) + 1,
          ],
          area: e.xs.length,
          peak: e.peak,
          centroid: [sum(e.xs) / e.xs.length, sum(e.ys) / e.ys.length],
        }))
        .sort((a, b) => b.peak - a.peak);
      const got = findRegions(m, w, h, threshold);
      assert.equal(got.length, want.length, `trial ${trial}`);
      got.forEach((r, k) => {
        assert.deepEqual(r.bbox, want[k]!.bbox, `trial ${trial} region ${k}`);
        assert.equal(r.area, want[k]!.area);
        assert.equal(r.peak, want[k]!.peak);
        assert.ok(Math.abs(r.centroid[0] - want[k]!.centroid[0]!) < 1e-9);
        assert.ok(Math.abs(r.centroid[1] - want[k]!.centroid[1]!) < 1e-9);
      });
    }
  });

  it("rejects a map of the wrong size and a NaN threshold", () => {
    assert.throws(() => findRegions(map, width, height + 1, 0.5), { code: "ERR_MASK_SIZE" });
    assert.throws(() => findRegions(map, width, height, Number.NaN), { code: "ERR_OPTION_INVALID" });
  });
});
