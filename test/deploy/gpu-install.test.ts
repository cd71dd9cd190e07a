/**
 * `npm run gpu:install` (deploy/gpu-install.mjs) refuses what it must refuse, offline: a provider package whose
 * libraries do not match the committed sha256, one that lacks a library, and (with --keep-ort) a core library of
 * another ONNX Runtime version. Each run gets a scratch project holding what the script looks at (onnxruntime-node's
 * package.json and core library) and a crafted tarball; nothing may be copied when it refuses. The success path
 * needs the real 180 MB package from the npm registry, so it is run by hand (docs/deploying.md, "GPU boxes"), not here.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { tempDir } from "../helpers/tiny-data.js";

const manifest = JSON.parse(readFileSync("deploy/gpu-providers.json", "utf8")) as {
  package: string;
  version: string;
  onnxruntime_version: string;
  sha256: Record<string, string>;
};
const LIBRARIES = Object.keys(manifest.sha256);

/** A project with onnxruntime-node `ortVersion` installed, and a provider tarball holding `files`. */
async function scratch(ortVersion: string, files: string[]) {
  const dir = await tempDir("stpmd-gpu-install-");
  const project = path.join(dir, "project");
  const binDir = path.join(project, "node_modules", "onnxruntime-node", "bin", "napi-v6", "linux", "x64");
  mkdirSync(binDir, { recursive: true });
  writeFileSync(path.join(project, "package.json"), '{"name": "scratch"}\n');
  writeFileSync(
    path.join(project, "node_modules", "onnxruntime-node", "package.json"),
    JSON.stringify({ name: "onnxruntime-node", version: ortVersion }),
  );
  writeFileSync(path.join(binDir, "libonnxruntime.so.1"), "core");
  const libDir = path.join(dir, "package", "Plugins", "Linux", "x64");
  mkdirSync(libDir, { recursive: true });
  for (const file of files) writeFileSync(path.join(libDir, file), `not the real ${file}`);
  const tarball = path.join(dir, "providers.tgz");
  execFileSync("tar", ["-czf", tarball, "-C", dir, "package"]);
  return { project, binDir, tarball };
}

function install(args: string[]) {
  const r = spawnSync(process.execPath, ["deploy/gpu-install.mjs", ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("a provider library whose sha256 differs from the committed one is refused, and nothing is copied", async () => {
  const { project, binDir, tarball } = await scratch(manifest.onnxruntime_version, LIBRARIES);
  const r = install(["--prefix", project, "--tarball", tarball]);
  assert.equal(r.code, 1);
  const first = Object.entries(manifest.sha256)[0]!;
  assert.match(
    r.stderr,
    new RegExp(
      `^gpu:install: refusing: ${first[0]} has sha256 [0-9a-f]{64}, deploy/gpu-providers.json expects ${first[1]}\\n$`,
    ),
  );
  assert.deepEqual(readdirSync(binDir), ["libonnxruntime.so.1"], "no provider library and no marker placed");
  assert.equal(r.stdout, "");
});

test("a package without one of the libraries is refused naming it", async () => {
  const { project, binDir, tarball } = await scratch(manifest.onnxruntime_version, LIBRARIES.slice(1));
  const r = install(["--prefix", project, "--tarball", tarball]);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    `gpu:install: refusing: ${LIBRARIES[0]} is not in ${manifest.package}@${manifest.version}\n`,
  );
  assert.deepEqual(readdirSync(binDir), ["libonnxruntime.so.1"]);
});

test("with --keep-ort, a core library of another ONNX Runtime version is refused before anything is fetched", async () => {
  const { project, binDir, tarball } = await scratch("1.30.0", LIBRARIES);
  const r = install(["--prefix", project, "--tarball", tarball, "--keep-ort"]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `^gpu:install: refusing: ${manifest.package}@${manifest.version} holds providers for ONNX Runtime ${manifest.onnxruntime_version.replace(/\./g, "\\.")}, but onnxruntime-node in \\S+ is 1\\.30\\.0; a provider library and the core library must be the same version`,
    ),
  );
  assert.deepEqual(readdirSync(binDir), ["libonnxruntime.so.1"]);
  assert.ok(existsSync(path.join(project, "node_modules", "onnxruntime-node", "package.json")));
});

test("an unknown option is a one-line error", () => {
  const r = install(["--prefixx", "/tmp"]);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    "gpu:install: unknown option --prefixx (options: --prefix DIR, --tarball FILE, --keep-ort)\n",
  );
});
