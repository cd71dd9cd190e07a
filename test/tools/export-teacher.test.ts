import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";

const { onnx } = onnxProto;
const execFileAsync = promisify(execFile);

// The exporter targets Debian's python3-torch, which lives under /usr/bin/python3, not a pyenv/venv python3.
const PYTHON = "/usr/bin/python3";
// dist/test/tools/<this>.js → repository root is three levels up.
const SCRIPT = fileURLToPath(new URL("../../../tools/export_teacher.py", import.meta.url));
const ALLOWED_OPS = new Set(["Conv", "Relu", "MaxPool", "Add", "Clip", "Pad"]);
const REQUIRED_METADATA = ["arch", "input_mean", "input_std", "padding", "source", "input"];
const OUTPUTS = ["feat_s4", "feat_s8", "feat_s16"] as const;
// ResNet-18 layer1..3 widths; spatial size is the input divided by the stride in each output's name.
const CHANNELS = { feat_s4: 64, feat_s8: 128, feat_s16: 256 } as const;
const STRIDES = { feat_s4: 4, feat_s8: 8, feat_s16: 16 } as const;

function torchMissingReason(): string | undefined {
  const probe = spawnSync(PYTHON, ["-c", "import torch, torchvision"], { encoding: "utf8", timeout: 60_000 });
  if (probe.status === 0) return undefined;
  const why = probe.error?.message ?? probe.stderr.trim().split("\n").at(-1) ?? "unknown error";
  return `${PYTHON} cannot import torch/torchvision (${why}); install python3-torch python3-torchvision`;
}

interface CheckTensor {
  file: string;
  shape: number[];
}
interface CheckManifest {
  dtype: string;
  byteorder: string;
  input: CheckTensor;
  outputs: Record<string, CheckTensor>;
}

function readFloat32LE(file: string): Float32Array {
  const bytes = readFileSync(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < values.length; i++) values[i] = view.getFloat32(i * 4, true);
  return values;
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, "tensor lengths differ");
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** A reproducible pseudo-random image so the dynamic-shape run does not depend on Math.random. */
function pseudoRandomInput(dims: number[], seed: number): ort.Tensor {
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  let state = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = state / 2 ** 32 - 0.5;
  }
  return new ort.Tensor("float32", data, dims);
}

function runScript(args: string[]): Promise<{ stdout: string; stderr: string }> {
  // nice: the machine's two cores are shared with other engineers' builds.
  return execFileAsync("nice", ["-n", "10", PYTHON, SCRIPT, ...args], { timeout: 120_000 });
}

const skipReason = torchMissingReason();

describe("tools/export_teacher.py", { skip: skipReason ?? false, timeout: 180_000 }, () => {
  let dir: string;
  let onnxPath: string;
  let summary: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "stpmd-export-teacher-"));
    onnxPath = path.join(dir, "teacher.onnx");
    const { stdout } = await runScript(["--arch", "resnet18", "--random", "--out", onnxPath, "--check"]);
    summary = stdout;
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("prints exactly one summary line naming the written file", () => {
    const lines = summary.trim().split("\n");
    assert.equal(lines.length, 1, summary);
    assert.match(lines[0]!, /wrote .*teacher\.onnx/);
  });

  test("graph holds only ops the TS engine rebuilds, IR <= 8, opset 17, and stpmd's metadata", () => {
    const model = onnx.ModelProto.decode(readFileSync(onnxPath));
    assert.ok(Number(model.irVersion) <= 8, `IR version ${model.irVersion}`);
    const defaultOpset = model.opsetImport.find((o) => !o.domain || o.domain === "ai.onnx");
    assert.equal(Number(defaultOpset?.version), 17);

    const nodes = model.graph?.node ?? [];
    const ops = new Set(nodes.map((n) => n.opType ?? ""));
    for (const op of ops) assert.ok(ALLOWED_OPS.has(op), `unexpected op ${op}`);
    // ResNet-18 up to layer3: stem conv + 2 convs in each of 6 blocks + 2 downsample convs, BN folded away.
    assert.equal(nodes.filter((n) => n.opType === "Conv").length, 15);
    assert.deepEqual(
      (model.graph?.output ?? []).map((o) => o.name),
      [...OUTPUTS],
    );

    const metadata = new Map(model.metadataProps.map((p) => [p.key ?? "", p.value ?? ""]));
    for (const key of REQUIRED_METADATA) assert.ok(metadata.has(key), `metadata ${key} missing`);
    assert.equal(metadata.get("arch"), "resnet18");
    assert.equal(metadata.get("input_mean"), "0.485,0.456,0.406");
    assert.equal(metadata.get("input_std"), "0.229,0.224,0.225");
    assert.equal(metadata.get("padding"), "symmetric");
    assert.equal(metadata.get("source"), "random");
  });

  test("ONNX Runtime reproduces the unfolded PyTorch model's outputs within 1e-4", async () => {
    const manifest = JSON.parse(
      readFileSync(onnxPath.replace(/\.onnx$/, ".check.json"), "utf8"),
    ) as CheckManifest;
    assert.equal(manifest.dtype, "float32");
    assert.equal(manifest.byteorder, "little");
    assert.deepEqual(manifest.input.shape, [1, 3, 64, 64]);

    const session = await ort.InferenceSession.create(onnxPath);
    try {
      assert.deepEqual(session.inputNames, ["input"]);
      assert.deepEqual(session.outputNames, [...OUTPUTS]);
      const input = readFloat32LE(path.join(dir, manifest.input.file));
      const results = await session.run({ input: new ort.Tensor("float32", input, manifest.input.shape) });
      const expectedShapes = {
        feat_s4: [1, 64, 16, 16],
        feat_s8: [1, 128, 8, 8],
        feat_s16: [1, 256, 4, 4],
      };
      for (const name of OUTPUTS) {
        const actual = results[name]!;
        assert.equal(actual.dims.length, 4);
        assert.deepEqual([...actual.dims], expectedShapes[name]);
        assert.deepEqual(manifest.outputs[name]!.shape, expectedShapes[name]);
        const reference = readFloat32LE(path.join(dir, manifest.outputs[name]!.file));
        const diff = maxAbsDifference(actual.data as Float32Array, reference);
        assert.ok(diff < 1e-4, `${name}: max |onnx - torch| = ${diff}`);
      }
    } finally {
      await session.release();
    }
  });

  test("batch, height and width are dynamic", async () => {
    const session = await ort.InferenceSession.create(onnxPath);
    try {
      const [batch, height, width] = [2, 96, 128];
      const results = await session.run({ input: pseudoRandomInput([batch, 3, height, width], 7) });
      for (const name of OUTPUTS) {
        const stride = STRIDES[name];
        assert.deepEqual([...results[name]!.dims], [batch, CHANNELS[name], height / stride, width / stride]);
      }
    } finally {
      await session.release();
    }
  });

  test("a missing weights file is a one-line error with exit status 2", async () => {
    const missing = path.join(dir, "no-such-weights.pth");
    await assert.rejects(
      runScript(["--arch", "resnet18", "--weights", missing, "--out", path.join(dir, "x.onnx")]),
      (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 2);
        const lines = (err.stderr ?? "").trim().split("\n");
        assert.equal(lines.length, 1, err.stderr);
        assert.match(lines[0]!, /no-such-weights\.pth does not exist/);
        return true;
      },
    );
  });
});
