import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import {
  driverCudaVersion,
  ortInstall,
  PROVIDER_LIBRARIES,
  pythonNvidiaLibraries,
  runDoctor,
} from "../../src/daemon/doctor.js";
import { MosquittoBroker } from "../../src/demo/broker.js";
import { probeProvider } from "../../src/onnx/provider-probe.js";
import { testConfig } from "../helpers/config.js";
import { replaySource, tinyStation, trainTinyBundle, waitFor } from "../helpers/daemon-process.js";
import { capturingLogger } from "../helpers/logs.js";
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

test("with the GPU providers installed on a machine without the NVIDIA driver: the package, the CUDA they need, and the libraries missing are named", async (t) => {
  if (!gpuPackageInstalled)
    return t.skip("the GPU provider libraries are not installed here (npm run gpu:install)");
  const r = doctorCli();
  if (/^ {2}cuda +works$/m.test(r.stdout)) return t.skip("CUDA works on this machine");
  if (!/libcuda\.so\.1/.test(r.stdout)) return t.skip("this machine has the NVIDIA driver's libcuda.so.1");
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^onnxruntime-node 1\.29\.0$/m,
    "gpu:install pins the core to the providers' version",
  );
  assert.match(
    r.stdout,
    /^ {2}GPU providers com\.github\.asus4\.onnxruntime\.linux-x64-gpu@0\.4\.9 \(for ONNX Runtime 1\.29\.0\)$/m,
  );
  assert.match(
    r.stdout,
    /^ {2}CUDA {10}the providers need CUDA 13 \(libcudart\.so\.13\): (found \/\S+|not found on the library path)$/m,
  );
  assert.match(
    r.stdout,
    /^ {2}cuda +no: present, but the libraries it links against are not found: \S.*libcuda\.so\.1 \(the CUDA runtime libraries and the NVIDIA driver's libcuda\.so\.1 must be installed and on the library path\)/m,
  );
  assert.doesNotMatch(`${r.stdout}${r.stderr}`, /\n\s+at /, "no stack trace");
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

test("the daemon configured with cuda first runs on the CPU here, with one warning naming cuda and the reason", async (t) => {
  if ((await probeProvider("cuda")).ok)
    return t.skip("CUDA works on this machine: there is nothing to fall back from");
  const { work, bundle, noise } = await tinyStation("stpmd-fallback-", { seed: 3, size: 32, frames: 2 });
  const broker = await MosquittoBroker.start();
  const { logger, lines } = capturingLogger();
  const results: InspectionResult[] = [];
  const daemon = new Daemon(
    testConfig({
      model: { bundle, watch: false },
      inference: { providers: [{ name: "cuda", device_id: 0 }, { name: "cpu" }] },
      cameras: [{ id: "cam", source: replaySource(noise, 20) }],
      mqtt: { url: broker.url, client_id: "fallback", outbox: { dir: path.join(work, "outbox") } },
      collection: { dir: path.join(work, "frames") },
      health: { watchdog: false },
    }),
    logger,
    { hooks: { onResult: (r) => results.push(r) } },
  );
  try {
    await daemon.start();
    await waitFor("frames inspected on the CPU", () => results.length >= 5, 20_000);
  } finally {
    await daemon.stop();
    await broker.stop();
  }
  const fallbacks = lines.filter((l) => l.msg === "execution provider unavailable; trying the next one");
  assert.equal(fallbacks.length, 1, JSON.stringify(fallbacks));
  assert.equal(fallbacks[0]!.provider, "cuda");
  const reason = String(fallbacks[0]!.reason);
  assert.match(reason, /Failed to load shared library/);
  assert.ok(!reason.includes("\n"), "one line");
});

test("the driver's CUDA version is read from nvidia-smi's header", () => {
  const header =
    "| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: 13.0     |\n";
  assert.equal(driverCudaVersion(header), "13.0");
  assert.equal(
    driverCudaVersion("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
    undefined,
  );
});
