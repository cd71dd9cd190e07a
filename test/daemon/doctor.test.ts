import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { ortInstall, PROVIDER_LIBRARIES, pythonNvidiaLibraries, runDoctor } from "../../src/daemon/doctor.js";
import { trainTinyBundle } from "../helpers/daemon-process.js";
import { tempDir } from "../helpers/tiny-data.js";

const install = ortInstall();
const gpuPackageInstalled = PROVIDER_LIBRARIES.cuda.every((f) => existsSync(path.join(install.binDir, f)));

function doctorCli(...args: string[]) {
  const r = spawnSync(process.execPath, ["dist/src/main.cjs", "doctor", ...args], {
    encoding: "utf8",
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("doctor names the ONNX Runtime version and the core library this process loaded", async () => {
  const { lines } = await runDoctor();
  assert.equal(lines[0], `onnxruntime-node ${install.version}`);
  assert.match(lines[1]!, /core library +\/\S+\/libonnxruntime\.so\.1$/);
  assert.ok(existsSync(lines[1]!.trim().split(/\s+/).at(-1)!));
});

test("without a config: cpu works, cuda and tensorrt name the provider library that is missing, exit code 0", async (t) => {
  const r = doctorCli();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ {2}cpu +works$/m);
  assert.match(r.stdout, /^OK: the CPU provider works$/m);
  assert.doesNotMatch(`${r.stdout}${r.stderr}`, /\n\s+at /, "no stack trace");
  if (gpuPackageInstalled) return t.skip("the GPU provider libraries are installed here");
  assert.match(
    r.stdout,
    /^ {2}cuda +no: .*libonnxruntime_providers_cuda\.so missing in \S+napi-v\d+\/linux\/x64/m,
  );
  assert.match(r.stdout, /^ {2}tensorrt +no: .*libonnxruntime_providers_tensorrt\.so missing in /m);
  assert.match(r.stdout, /^ {2}webgpu +(works|no: .+)$/m);
});

test("with a config: the bundle is timed on each working provider; exit code follows the first configured provider", async () => {
  const dir = await tempDir();
  const bundle = path.join(dir, "bundle");
  await trainTinyBundle(dir, bundle, 7, 32);
  const write = async (name: string, providers: string) => {
    const file = path.join(dir, name);
    await writeFile(
      file,
      `model: {bundle: ${bundle}}\ninference: {providers: ${providers}}\ncameras: [{id: c, source: videotestsrc}]\nmqtt: {url: "mqtt://localhost:1883"}\n`,
    );
    return file;
  };
  const cpuFirst = await runDoctor({
    configFile: await write("cpu.yaml", "[{name: cpu}]"),
    benchSeconds: 0.2,
  });
  assert.equal(cpuFirst.exitCode, 0);
  const row = cpuFirst.lines.find((l) => /^ {2}cpu +[\d.]+ f\/s +[\d.]+ f\/s +—$/.test(l));
  assert.ok(row, cpuFirst.lines.join("\n"));

  const webgpuWorks = cpuFirst.providers.find((p) => p.provider === "webgpu")!.works;
  const gpuFirst = doctorCli(
    "--config",
    await write("gpu.yaml", "[{name: webgpu}, {name: cpu}]"),
    "--seconds",
    "0.2",
  );
  assert.equal(gpuFirst.code, webgpuWorks ? 0 : 1, gpuFirst.stdout + gpuFirst.stderr);
  if (!webgpuWorks) {
    assert.match(gpuFirst.stdout, /^NOT OK: the first configured provider \(webgpu\) does not work here/m);
  }
});

test("the CUDA libraries of a Python install's NVIDIA packages are found for doctor's library-path hint", async () => {
  const site = await tempDir("stpmd-nvidia-wheels-");
  // the layout of nvidia-cublas 13 and nvidia-cudnn-cu13 (a namespace package `nvidia`, no __init__.py)
  for (const [dir, file] of [
    ["nvidia/cu13/lib", "libcublas.so.13"],
    ["nvidia/cudnn/lib", "libcudnn.so.9"],
  ] as const) {
    await mkdir(path.join(site, dir), { recursive: true });
    await writeFile(path.join(site, dir, file), "");
  }
  const found = await pythonNvidiaLibraries({ ...process.env, PYTHONPATH: site });
  assert.equal(found.get("libcublas.so.13"), path.join(site, "nvidia/cu13/lib"));
  assert.equal(found.get("libcudnn.so.9"), path.join(site, "nvidia/cudnn/lib"));
  const elsewhere = await pythonNvidiaLibraries({ ...process.env, PYTHONPATH: path.join(site, "nowhere") });
  assert.ok(
    ![...elsewhere.values()].some((dir) => dir.startsWith(site)),
    "found only through the Python path",
  );
});
