import { pyramidGraph } from "../src/bundle/random-teacher.js";
import { floatTensor, type Graph, GraphBuilder } from "../src/onnx/onnx-graph.js";
import { Random } from "../src/stpm/random.js";

/**
 * torchvision's ResNet-18 up to layer3 — the paper's teacher — as a pyramid ONNX graph (layer1–3 at strides 4, 8,
 * 16), with BatchNorm folded into biased convolutions (as stpmd deploys a student) and seeded Kaiming weights.
 * For speed and provider-agreement checks where the real weights cannot travel (benchmarks/gpu-ort.ts): the
 * compute is the real network's, the features are not ImageNet's.
 */
export function resnet18Pyramid(seed: number): Graph {
  const rng = new Random(seed);
  const b = new GraphBuilder(`r${seed}_`);
  const conv = (x: string, cin: number, cout: number, k: number, stride: number): string => {
    const w = floatTensor([cout, cin, k, k]);
    const scale = Math.sqrt(2 / (cout * k * k)); // fan-out, as torchvision's ResNet
    for (let i = 0; i < w.data.length; i++) (w.data as Float32Array)[i] = rng.normal() * scale;
    const bias = floatTensor([cout]);
    for (let i = 0; i < cout; i++) (bias.data as Float32Array)[i] = rng.normal() * 0.05;
    const p = (k - 1) / 2;
    return b.op("Conv", [x, b.constant(w, "w"), b.constant(bias, "b")], {
      kernel_shape: [k, k],
      strides: [stride, stride],
      pads: [p, p, p, p],
      group: 1,
      dilations: [1, 1],
    });
  };
  const relu = (x: string): string => b.op("Relu", [x]);
  const block = (x: string, cin: number, cout: number, stride: number): string => {
    const y = conv(relu(conv(x, cin, cout, 3, stride)), cout, cout, 3, 1);
    const shortcut = stride === 1 && cin === cout ? x : conv(x, cin, cout, 1, stride);
    return relu(b.op("Add", [y, shortcut]));
  };
  const stem = relu(conv("input", 3, 64, 7, 2));
  const pooled = b.op("MaxPool", [stem], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  const layer1 = block(block(pooled, 64, 64, 1), 64, 64, 1);
  const layer2 = block(block(layer1, 64, 128, 2), 128, 128, 1);
  const layer3 = block(block(layer2, 128, 256, 2), 256, 256, 1);
  return pyramidGraph(
    b,
    [
      { from: layer1, channels: 64 },
      { from: layer2, channels: 128 },
      { from: layer3, channels: 256 },
    ],
    { arch: `resnet18 layer1-3, seeded random (seed ${seed}), BatchNorm folded` },
  );
}
