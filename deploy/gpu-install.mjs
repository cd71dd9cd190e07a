#!/usr/bin/env node
// npm run gpu:install [-- --prefix DIR] [--tarball FILE] [--keep-ort]
//
// Puts ONNX Runtime's CUDA and TensorRT provider libraries beside onnxruntime-node's core library. onnxruntime-node's
// npm package is CPU-only on Linux; the provider libraries come from a package that ships ORT's official GPU build
// (deploy/gpu-providers.json names it, with the sha256 of each library as first downloaded). A provider library
// only works with the core library of exactly the same ORT version, so onnxruntime-node is pinned to that version
// in the same step; the default install (npm ci) stays CPU-only and is the way back.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const manifest = JSON.parse(readFileSync(path.join(here, "gpu-providers.json"), "utf8"));
const MARKER = "stpmd-gpu-providers.json"; // read by `stpmd doctor` (src/daemon/doctor.ts)

function fail(message) {
  process.stderr.write(`gpu:install: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { prefix: path.resolve(here, ".."), tarball: undefined, keepOrt: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--prefix") o.prefix = path.resolve(argv[++i] ?? fail("--prefix needs a directory"));
    else if (a === "--tarball") o.tarball = path.resolve(argv[++i] ?? fail("--tarball needs a file"));
    else if (a === "--keep-ort") o.keepOrt = true;
    else fail(`unknown option ${a} (options: --prefix DIR, --tarball FILE, --keep-ort)`);
  }
  return o;
}

function installedOrtVersion(prefix) {
  const file = path.join(prefix, "node_modules", "onnxruntime-node", "package.json");
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")).version : undefined;
}

function sha256(file) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

const npm = (args, cwd) => execFileSync("npm", args, { cwd, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });

const opts = parseArgs(process.argv.slice(2));
if (process.platform !== "linux" || process.arch !== "x64") {
  fail(`the GPU provider libraries are built for linux x64, this is ${process.platform} ${process.arch}`);
}
if (!existsSync(path.join(opts.prefix, "package.json"))) fail(`${opts.prefix} has no package.json`);
const want = manifest.onnxruntime_version;
const done = [];

// 1. The core library must be the providers' version: pin onnxruntime-node unless told not to.
let have = installedOrtVersion(opts.prefix);
if (have !== want) {
  if (opts.keepOrt) {
    fail(
      `refusing: ${manifest.package}@${manifest.version} holds providers for ONNX Runtime ${want}, but onnxruntime-node ` +
        `in ${opts.prefix} is ${have ?? "not installed"}; a provider library and the core library must be the same ` +
        "version (run without --keep-ort to pin onnxruntime-node to it)",
    );
  }
  // --ignore-scripts: onnxruntime-node's postinstall would download its own CUDA libraries, which this step replaces
  // with verified ones; --no-save: package.json and the lockfile keep the CPU install, so npm ci restores it.
  npm(["install", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund", `onnxruntime-node@${want}`], opts.prefix);
  have = installedOrtVersion(opts.prefix);
  if (have !== want) fail(`refusing: asked npm for onnxruntime-node@${want} but ${have ?? "nothing"} is installed`);
  done.push(`installed onnxruntime-node@${want} (not saved to package.json) in ${opts.prefix}`);
}
const binRoot = path.join(opts.prefix, "node_modules", "onnxruntime-node", "bin");
const napi = readdirSync(binRoot).filter((d) => d.startsWith("napi-v")).sort().at(-1);
const binDir = path.join(binRoot, napi ?? fail(`no napi-v* folder in ${binRoot}`), "linux", "x64");
if (!existsSync(path.join(binDir, "libonnxruntime.so.1"))) fail(`no libonnxruntime.so.1 in ${binDir}`);

// 2. Fetch the provider package into a scratch folder, or take an already downloaded tarball.
const scratch = mkdtempSync(path.join(os.tmpdir(), "stpmd-gpu-"));
try {
  let tarball = opts.tarball;
  if (!tarball) {
    process.stderr.write(`gpu:install: fetching ${manifest.package}@${manifest.version} (about 180 MB)…\n`);
    const name = npm(["pack", "--silent", `${manifest.package}@${manifest.version}`], scratch).trim().split("\n").at(-1);
    tarball = path.join(scratch, name);
  }
  execFileSync("tar", ["-xzf", tarball, "-C", scratch]);
  const libDir = path.join(scratch, "package", "Plugins", "Linux", "x64");

  // 3. Verify every library before copying any, so a bad download leaves the install as it was.
  for (const [file, expected] of Object.entries(manifest.sha256)) {
    const src = path.join(libDir, file);
    if (!existsSync(src)) fail(`refusing: ${file} is not in ${manifest.package}@${manifest.version}`);
    const actual = await sha256(src);
    if (actual !== expected) fail(`refusing: ${file} has sha256 ${actual}, deploy/gpu-providers.json expects ${expected}`);
  }
  for (const file of Object.keys(manifest.sha256)) copyFileSync(path.join(libDir, file), path.join(binDir, file));
  writeFileSync(
    path.join(binDir, MARKER),
    `${JSON.stringify({ package: `${manifest.package}@${manifest.version}`, onnxruntime_version: want, files: manifest.sha256 }, null, 2)}\n`,
  );
  done.push(`verified (sha256) and copied ${Object.keys(manifest.sha256).join(", ")} into ${binDir}`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

for (const line of done) process.stdout.write(`gpu:install: ${line}\n`);
process.stdout.write(
  "gpu:install: the providers load only with the NVIDIA driver (libcuda.so.1) and the CUDA 13 libraries they link against " +
    "(libcudart.so.13, libcublas.so.13, libcurand.so.10; TensorRT also libcudnn.so.9, libnvinfer.so.10) on the library path; " +
    "check with: npx stpmd doctor\n" +
    `gpu:install: to undo, run npm ci in ${opts.prefix} (reinstalls onnxruntime-node from the lockfile, CPU-only)\n`,
);
