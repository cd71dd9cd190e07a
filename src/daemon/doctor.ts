import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { loadBundle, scoringOptions } from "../bundle/bundle.js";
import type { ExecutionProviderConfig } from "../config/index.js";
import { loadConfig } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import { ort, ortProviders } from "../onnx/ort.js";
import type { ProbeResult } from "../onnx/provider-probe.js";
import { Random } from "../stpm/random.js";
import { Scorer } from "../stpm/scorer.js";

const run = promisify(execFile);

/** The providers the doctor always checks, in the order it reports them. */
export const DOCTOR_PROVIDERS = ["cpu", "cuda", "tensorrt", "webgpu"] as const;
export type DoctorProvider = (typeof DOCTOR_PROVIDERS)[number];

/**
 * The shared libraries ONNX Runtime's provider bridge opens from the directory of its core library before it can
 * use a provider; the CPU and WebGPU providers are linked into the core library itself.
 */
export const PROVIDER_LIBRARIES: Readonly<Record<DoctorProvider, readonly string[]>> = {
  cpu: [],
  cuda: ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"],
  tensorrt: ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_tensorrt.so"],
  webgpu: [],
};

/** Written beside the provider libraries by `npm run gpu:install`, so the doctor can tell a version mismatch. */
export const GPU_MARKER_FILE = "stpmd-gpu-providers.json";

export interface GpuMarker {
  package: string;
  onnxruntime_version: string;
  files: Record<string, string>;
}

export interface OrtInstall {
  /** onnxruntime-node's version, from its package.json. */
  version: string;
  /** Folder holding the binding and the core library (bin/napi-v*\/linux/x64). */
  binDir: string;
  /** The core library this process has mapped, or the one in binDir when /proc is not there to ask. */
  coreLibrary: string;
  marker?: GpuMarker;
}

export function ortInstall(): OrtInstall {
  const require = createRequire(import.meta.url);
  const pkgFile = require.resolve("onnxruntime-node/package.json");
  const pkg = JSON.parse(readFileSync(pkgFile, "utf8")) as { version: string };
  const binRoot = path.join(path.dirname(pkgFile), "bin");
  const napi = existsSync(binRoot) ? readdirSync(binRoot).filter((d) => d.startsWith("napi-v")) : [];
  const binDir = path.join(binRoot, napi.sort().at(-1) ?? "napi-v6", process.platform, process.arch);
  // ort is imported above, and onnxruntime-node loads its binding (and so the core library) on import: the mapped
  // path is the one really in use, which matters when LD_LIBRARY_PATH or a second copy could shadow binDir's.
  void ort.env.versions;
  let coreLibrary = path.join(binDir, "libonnxruntime.so.1");
  try {
    const mapped = readFileSync("/proc/self/maps", "utf8")
      .split("\n")
      .map((l) => l.slice(l.indexOf("/")))
      .find((p) => /\/libonnxruntime\.so[.\d]*$/.test(p));
    if (mapped) coreLibrary = mapped;
  } catch {
    // not Linux: keep the expected path
  }
  let marker: GpuMarker | undefined;
  try {
    marker = JSON.parse(readFileSync(path.join(binDir, GPU_MARKER_FILE), "utf8")) as GpuMarker;
  } catch {
    marker = undefined;
  }
  return { version: pkg.version, binDir, coreLibrary, ...(marker ? { marker } : {}) };
}

export interface ProviderReport {
  provider: DoctorProvider;
  works: boolean;
  /** One line: why not, or a note on how it works. */
  reason: string;
}

const PROBE_SCRIPT = fileURLToPath(new URL("../onnx/provider-probe.js", import.meta.url));

/** The libraries a shared library links against, by name → the file the dynamic loader finds, or null (`ldd`). */
async function linkedLibraries(file: string): Promise<Map<string, string | null>> {
  const linked = new Map<string, string | null>();
  try {
    const { stdout } = await run("ldd", [file], { timeout: 10_000 });
    for (const line of stdout.split("\n")) {
      const m = /^\s*(\S+) => (not found|(\/\S+))/.exec(line);
      if (m) linked.set(m[1]!, m[3] ?? null);
    }
  } catch {
    // no ldd: nothing known
  }
  return linked;
}

/** Libraries a provider library links against that the dynamic loader cannot find (`ldd`'s "not found"). */
async function missingDependencies(file: string): Promise<string[]> {
  return [...(await linkedLibraries(file))].filter(([, found]) => found === null).map(([name]) => name);
}

/**
 * Which CUDA the CUDA provider needs (the libcudart it links against) and the file the loader finds for it;
 * undefined when the provider is not installed.
 */
export async function cudaRuntimeLine(install: OrtInstall): Promise<string | undefined> {
  const provider = path.join(install.binDir, "libonnxruntime_providers_cuda.so");
  if (!existsSync(provider)) return undefined;
  const cudart = [...(await linkedLibraries(provider))].find(([name]) => name.startsWith("libcudart.so"));
  if (cudart === undefined) return "the CUDA provider links against no libcudart (ldd)";
  const [name, file] = cudart;
  const where = file === null ? "not found on the library path" : `found ${realpathSync(file)}`;
  return `the providers need CUDA ${name.split(".so.")[1] ?? "?"} (${name}): ${where}`;
}

/** The CUDA version the driver supports, from the header of a plain `nvidia-smi` ("CUDA Version: 13.0"). */
export function driverCudaVersion(nvidiaSmiOutput: string): string | undefined {
  return /CUDA Version:\s*([\d.]+)/.exec(nvidiaSmiOutput)?.[1];
}

/**
 * Shared libraries of this machine's Python NVIDIA packages (`nvidia-cublas`, `nvidia-cudnn-cu13`, …, which PyTorch
 * installs; their folders are not on the library path), by file name → folder. Empty without python3 or them.
 */
export async function pythonNvidiaLibraries(
  env: NodeJS.ProcessEnv = process.env,
): Promise<Map<string, string>> {
  const script = [
    "import glob, os",
    "try:",
    "    import nvidia",
    "except ImportError:",
    "    raise SystemExit",
    "for p in nvidia.__path__:",
    "    for f in glob.glob(os.path.join(p, '**', 'lib*.so*'), recursive=True):",
    "        print(f)",
  ].join("\n");
  const found = new Map<string, string>();
  try {
    const { stdout } = await run("python3", ["-c", script], { timeout: 10_000, env });
    for (const file of stdout.split("\n").filter(Boolean)) found.set(path.basename(file), path.dirname(file));
  } catch {
    // no python3: nothing to suggest
  }
  return found;
}

/** ORT prefixes its messages with the source location and the failing check; the user needs what follows. */
function ortReason(message: string): string {
  const fail = message.match(/\[ONNXRuntimeError\] : \d+ : \w+ : (.*)/s);
  const text = fail ? fail[1]! : message.replace(/^\/onnxruntime_src\/\S+:\d+ .*? was false\. /s, "");
  const first = text.split("\n")[0]!.trim();
  return first.length > 240 ? `${first.slice(0, 237)}…` : first;
}

/** Why a probe failed, in the user's terms, from ORT's message, the probe's stderr and the provider files. */
export async function explainFailure(
  provider: DoctorProvider,
  error: string,
  stderr: string,
  install: OrtInstall,
): Promise<string> {
  const missing = PROVIDER_LIBRARIES[provider].filter((f) => !existsSync(path.join(install.binDir, f)));
  if (missing.length > 0) {
    return `${missing.join(", ")} missing in ${install.binDir} (the default install is CPU-only; see npm run gpu:install)`;
  }
  if (
    install.marker &&
    PROVIDER_LIBRARIES[provider].length > 0 &&
    install.marker.onnxruntime_version !== install.version
  ) {
    return `version mismatch: the provider libraries are for ONNX Runtime ${install.marker.onnxruntime_version}, onnxruntime-node is ${install.version}`;
  }
  const all = `${error}\n${stderr}`;
  if (provider === "webgpu") {
    const vulkan = all.match(/Couldn't load Vulkan: ([^\n]*)/);
    if (vulkan) return `no WebGPU adapter: no Vulkan driver (${vulkan[1]!.trim()})`;
    if (/No supported adapters|Failed to get a WebGPU adapter/.test(all)) {
      return "no WebGPU adapter: Vulkan is loaded but offers no GPU (no Vulkan ICD for a GPU here)";
    }
  }
  if (PROVIDER_LIBRARIES[provider].length > 0) {
    const unresolved = (
      await Promise.all(
        PROVIDER_LIBRARIES[provider].map((f) => missingDependencies(path.join(install.binDir, f))),
      )
    ).flat();
    if (unresolved.length > 0) {
      const names = [...new Set(unresolved)];
      const wheels = await pythonNvidiaLibraries();
      const inWheels = names.filter((n) => wheels.has(n));
      const hint =
        inWheels.length === 0
          ? ""
          : `; ${inWheels.join(", ")} ${inWheels.length === 1 ? "is" : "are"} in this machine's Python NVIDIA packages: start stpmd with LD_LIBRARY_PATH=${[...new Set(inWheels.map((n) => wheels.get(n)!))].join(":")}`;
      return `present, but the libraries it links against are not found: ${names.join(", ")} (the CUDA${provider === "tensorrt" ? ", cuDNN and TensorRT" : ""} runtime libraries and the NVIDIA driver's libcuda.so.1 must be installed and on the library path)${hint}`;
    }
    if (
      /cudaSetDevice|no CUDA-capable device|CUDA driver version is insufficient|cudaErrorNoDevice/i.test(all)
    ) {
      return `present, but no CUDA device (${ortReason(error)})`;
    }
  }
  return ortReason(error);
}

/** Tries a tiny session on one provider, alone, in a child process (see provider-probe.ts for why). */
export async function checkProvider(
  provider: DoctorProvider,
  install: OrtInstall,
  config?: ExecutionProviderConfig,
): Promise<ProviderReport> {
  const ortConfig = ortProviders([config ?? defaultEntry(provider)])[0]!;
  let result: ProbeResult;
  let stderr = "";
  try {
    const out = await run(process.execPath, [PROBE_SCRIPT, JSON.stringify(ortConfig)], {
      timeout: 60_000,
      maxBuffer: 4 * 1024 * 1024,
    });
    stderr = out.stderr;
    result = JSON.parse(out.stdout.trim().split("\n").at(-1)!) as ProbeResult;
  } catch (err) {
    const e = err as { stderr?: string; signal?: string; code?: number };
    stderr = e.stderr ?? "";
    result = { ok: false, error: `the probe process died (${e.signal ?? `exit ${e.code}`})` };
  }
  if (result.ok) return { provider, works: true, reason: "a session was created and ran" };
  return {
    provider,
    works: false,
    reason: await explainFailure(provider, result.error ?? "", stderr, install),
  };
}

function defaultEntry(provider: DoctorProvider): ExecutionProviderConfig {
  return provider === "cuda" || provider === "tensorrt"
    ? { name: provider, device_id: 0 }
    : { name: provider };
}

/**
 * GPU name, memory and driver from nvidia-smi, and the CUDA version the driver supports (the query interface has
 * no field for it, the plain header does); undefined when there is no nvidia-smi.
 */
export async function nvidiaGpus(): Promise<string[] | undefined> {
  try {
    const { stdout } = await run(
      "nvidia-smi",
      ["--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
      { timeout: 15_000 },
    );
    const header = await run("nvidia-smi", [], { timeout: 15_000 }).then(
      (r) => r.stdout,
      () => "",
    );
    const cuda = driverCudaVersion(header);
    return stdout
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [index, name, memory, driver] = l.split(",").map((s) => s.trim());
        return `GPU ${index}: ${name}, ${memory}, driver ${driver}${cuda ? ` (CUDA ${cuda})` : ""}`;
      });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    return [`nvidia-smi failed: ${ortReason(errorMessage(err))}`];
  }
}

export interface BenchRow {
  provider: DoctorProvider;
  fps1: number;
  fps8: number;
  /** Largest |score − CPU score| over the same frames; 0 for the CPU itself. */
  maxDelta: number;
}

/** Frames per second of `score` at one batch size, over about `seconds` after one warm-up run. */
async function framesPerSecond(
  scorer: Scorer,
  frames: Uint8Array,
  batch: number,
  seconds: number,
): Promise<number> {
  const hw3 = scorer.height * scorer.width * 3;
  const packed = frames.subarray(0, batch * hw3);
  await scorer.score(packed, batch);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000 || n < 2) {
    await scorer.score(packed, batch);
    n += batch;
  }
  return (n * 1000) / (performance.now() - start);
}

/**
 * Times the configured bundle with the daemon's Scorer on each provider, alone, and compares its scores with the
 * CPU's on the same seeded frames: a provider that is fast but scores differently would move the threshold.
 */
export async function benchBundle(
  bundleDir: string,
  providers: { provider: DoctorProvider; config: ExecutionProviderConfig }[],
  seconds = 1,
  intraOpThreads = 0,
): Promise<BenchRow[]> {
  const bundle = await loadBundle(bundleDir);
  const options = scoringOptions(bundle.manifest);
  const { height, width, margin } = options;
  const rng = new Random(12345);
  const frames = new Uint8Array(8 * (height + 2 * margin) * (width + 2 * margin) * 3).map(() =>
    Math.floor(rng.next() * 256),
  );
  const rows: BenchRow[] = [];
  let cpuScores: Float32Array | undefined;
  for (const { provider, config } of providers) {
    const scorer = await Scorer.create(bundle.teacher, bundle.student, options, {
      providers: ortProviders([config]),
      ...(intraOpThreads ? { intraOpThreads } : {}),
    });
    try {
      const { scores } = await scorer.score(frames, 8);
      if (provider === "cpu") cpuScores = scores;
      let maxDelta = Number.NaN;
      if (cpuScores) {
        maxDelta = 0;
        for (let i = 0; i < scores.length; i++)
          maxDelta = Math.max(maxDelta, Math.abs(scores[i]! - cpuScores[i]!));
      }
      const fps1 = await framesPerSecond(scorer, frames, 1, seconds);
      const fps8 = await framesPerSecond(scorer, frames, 8, seconds);
      rows.push({ provider, fps1, fps8, maxDelta });
    } finally {
      await scorer.release();
    }
  }
  return rows;
}

export interface DoctorReport {
  lines: string[];
  /** 0 iff the first configured provider works (without a config: iff the CPU works), else 1. */
  exitCode: 0 | 1;
  providers: ProviderReport[];
}

export interface DoctorOptions {
  configFile?: string;
  /** Seconds each timed batch size runs for. */
  benchSeconds?: number;
}

/** Everything `stpmd doctor` prints, and its exit code. */
export async function runDoctor(opts: DoctorOptions = {}): Promise<DoctorReport> {
  const config = opts.configFile ? loadConfig(opts.configFile) : undefined;
  const configured = config?.inference.providers ?? [];
  const install = ortInstall();
  const lines: string[] = [];
  lines.push(`onnxruntime-node ${install.version}`);
  lines.push(`  core library  ${install.coreLibrary}`);
  if (install.marker) {
    lines.push(
      `  GPU providers ${install.marker.package} (for ONNX Runtime ${install.marker.onnxruntime_version})`,
    );
  }
  const cuda = await cudaRuntimeLine(install);
  if (cuda) lines.push(`  CUDA          ${cuda}`);
  lines.push("execution providers (a tiny session on each, alone, in its own process):");
  const reports: ProviderReport[] = [];
  for (const provider of DOCTOR_PROVIDERS) {
    const entry = configured.find((p) => p.name === provider);
    const r = await checkProvider(provider, install, entry);
    reports.push(r);
    lines.push(`  ${provider.padEnd(9)} ${r.works ? "works" : `no: ${r.reason}`}`);
  }
  const gpus = await nvidiaGpus();
  if (gpus === undefined) lines.push("GPU: no nvidia-smi on PATH (no NVIDIA driver here); skipped");
  else lines.push(...gpus.map((g) => `${g}`));

  const works = (name: string): boolean => reports.find((r) => r.provider === name)?.works ?? false;
  let exitCode: 0 | 1;
  if (config) {
    const first = configured[0]!;
    lines.push(`config ${opts.configFile}: providers ${configured.map((p) => p.name).join(", ")}`);
    const usable = DOCTOR_PROVIDERS.filter(works).map((provider) => ({
      provider,
      config: configured.find((p) => p.name === provider) ?? defaultEntry(provider),
    }));
    try {
      const rows = await benchBundle(
        config.model.bundle,
        usable,
        opts.benchSeconds ?? 1,
        config.inference.intra_op_threads,
      );
      lines.push(`  bundle ${config.model.bundle}`);
      lines.push(
        `  ${"provider".padEnd(9)} ${"batch 1".padStart(12)} ${"batch 8".padStart(12)}   max |Δscore| vs cpu`,
      );
      for (const r of rows) {
        const delta =
          r.provider === "cpu"
            ? "—"
            : Number.isNaN(r.maxDelta)
              ? "n/a (cpu failed)"
              : r.maxDelta.toExponential(2);
        lines.push(
          `  ${r.provider.padEnd(9)} ${`${r.fps1.toFixed(1)} f/s`.padStart(12)} ${`${r.fps8.toFixed(1)} f/s`.padStart(12)}   ${delta}`,
        );
      }
    } catch (err) {
      lines.push(`  bundle ${config.model.bundle}: not timed: ${errorMessage(err)}`);
    }
    exitCode = works(first.name) ? 0 : 1;
    lines.push(
      exitCode === 0
        ? `OK: the first configured provider (${first.name}) works`
        : `NOT OK: the first configured provider (${first.name}) does not work here; the daemon would fall back along the list`,
    );
  } else {
    exitCode = works("cpu") ? 0 : 1;
    lines.push(exitCode === 0 ? "OK: the CPU provider works" : "NOT OK: even the CPU provider does not work");
  }
  return { lines, exitCode, providers: reports };
}
