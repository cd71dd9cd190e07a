#!/usr/bin/env bash
# Builds the two payloads of the GPU proof (benchmarks/gpu-ort.ts, run by benchmarks/gpu-ort.sh) in the git-ignored
# .gpu-ort/. A lent GPU machine gets the working tree plus at most 64 MiB of named ignored paths per run and may have
# no Node.js, and what the proof needs does not fit one run (measured, xz -9 with the x86 filter): node 23 MB,
# ONNX Runtime 1.29.0's core library 12 MB, its CUDA provider 38 MB even with only the GPU's own cubins (230 MB as
# shipped: 166 MB of them are cubins for seven architectures). So three parts, each a folder to carry:
#   .gpu-ort/runtime/  ORT 1.29.0 (core + binding), the JS the proof imports, the bundle, the frames   (19 MiB)
#   .gpu-ort/cuda/     ORT 1.29.0's CUDA provider (cubins for SM only) and its shared provider library   (35 MiB)
#   .gpu-ort/node/     this machine's node binary                                                        (22 MiB)
# Run 1 carries runtime and cuda (54 MiB); benchmarks/gpu-ort.sh unpacks them and, if the machine has Node.js 20 or
# newer, runs the proof. If it has none, it says so, and run 2 — at once, while the machine is warm and keeps run 1's
# unpacked files — carries node alone and finishes. Everything is fetched from the npm registry through
# deploy/gpu-install.mjs, which checks the provider libraries against deploy/gpu-providers.json.
#
#   benchmarks/gpu-ort-prepare.sh [--bundle DIR] [--sm 90]     (H100/H200: sm_90)
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=out/models/bottle
sm=90
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle=$2; shift 2 ;;
    --sm) sm=$2; shift 2 ;;
    *) echo "gpu-ort-prepare: unknown option $1 (options: --bundle DIR, --sm N)" >&2; exit 2 ;;
  esac
done
[ -f "$bundle/manifest.json" ] || { echo "gpu-ort-prepare: $bundle is not a model bundle (stpmd retrain --out $bundle first)" >&2; exit 2; }
shared=${STPMD_SHARED:-../shared}
limit=$((60 * 1024 * 1024)) # one run's carry, leaving room for the working tree under the 64 MiB

npx tsc -p .
work=.gpu-ort/work
rm -rf .gpu-ort/runtime .gpu-ort/cuda .gpu-ort/node "$work/runtime" "$work/cuda"
mkdir -p .gpu-ort/runtime .gpu-ort/cuda .gpu-ort/node "$work/prefix" "$work/runtime"

# ORT 1.29.0 with its GPU providers, installed by the project's own installer into a scratch project
[ -f "$work/prefix/package.json" ] || echo '{"name": "stpmd-gpu-ort-payload", "private": true}' > "$work/prefix/package.json"
tarball=$work/com.github.asus4.onnxruntime.linux-x64-gpu-0.4.9.tgz
[ -f "$tarball" ] || (cd "$work" && npm pack --silent com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 > /dev/null)
node deploy/gpu-install.mjs --prefix "$work/prefix" --tarball "$tarball"
ortdir=$work/prefix/node_modules/onnxruntime-node
bin=bin/napi-v6/linux/x64

# the runtime tree as the proof runs it (node_modules only what dist/benchmarks/gpu-ort.js imports)
rt=$work/runtime
cp package.json "$rt/" # "type": "module" for dist/
cp -r dist "$rt/dist"
rm -rf "$rt/dist/test"
mkdir -p "$rt/node_modules/onnxruntime-node/$bin"
cp -r "$ortdir/package.json" "$ortdir/dist" "$ortdir/lib" "$rt/node_modules/onnxruntime-node/"
cp "$ortdir/$bin/libonnxruntime.so.1" "$ortdir/$bin/onnxruntime_binding.node" "$rt/node_modules/onnxruntime-node/$bin/"
cp -r "$work/prefix/node_modules/onnxruntime-common" "$rt/node_modules/"
for m in onnx-proto protobufjs @protobufjs long; do cp -r "node_modules/$m" "$rt/node_modules/"; done
cp -r "$bundle" "$rt/bundle"
if [ -d "$shared/data/mvtec_ad/bottle/test" ]; then
  # the 32 bottle test frames of inference.ts, resized to 256×256 as in training
  node --input-type=module -e '
    import { writeFileSync } from "node:fs";
    import { benchFrames } from "./dist/benchmarks/common.js";
    import { loadRgb } from "./dist/src/data/images.js";
    const [bottle, out] = process.argv.slice(1);
    const frames = await Promise.all((await benchFrames(bottle, 32)).map((f) => loadRgb(f.file, 256, 256)));
    writeFileSync(out, Buffer.concat(frames.map((f) => Buffer.from(f.rgb))));
    console.error(`gpu-ort-prepare: ${frames.length} bottle test frames`);
  ' "$shared/data/mvtec_ad/bottle" "$rt/frames.rgb"
fi
tar -C "$rt" -cf - . | xz -9 -T2 > .gpu-ort/runtime/runtime.tar.xz
xz --x86 --lzma2=preset=9e -T2 -c "$(command -v node)" > .gpu-ort/node/node.xz

# the CUDA provider with the GPU's cubins only, and the shared provider library
mkdir -p "$work/cuda/node_modules/onnxruntime-node/$bin"
python3 benchmarks/prune-fatbin.py "$ortdir/$bin/libonnxruntime_providers_cuda.so" \
  "$work/cuda/node_modules/onnxruntime-node/$bin/libonnxruntime_providers_cuda.so" "$sm"
cp "$ortdir/$bin/libonnxruntime_providers_shared.so" "$work/cuda/node_modules/onnxruntime-node/$bin/"
tar -C "$work/cuda" -cf - . | xz --x86 --lzma2=preset=9e -T2 > .gpu-ort/cuda/cuda.tar.xz

mib() { echo $(($(cat "$@" | wc -c) / 1024 / 1024)); }
for p in runtime cuda node; do echo "gpu-ort-prepare: .gpu-ort/$p holds $(mib .gpu-ort/$p/*) MiB"; done
first=$(cat .gpu-ort/runtime/* .gpu-ort/cuda/* | wc -c)
if [ "$first" -gt "$limit" ]; then
  echo "gpu-ort-prepare: runtime + cuda are $((first / 1024 / 1024)) MiB, over the $((limit / 1024 / 1024)) MiB of one run" >&2
  exit 1
fi
echo "gpu-ort-prepare: run 1 carries .gpu-ort/runtime and .gpu-ort/cuda ($((first / 1024 / 1024)) MiB); run 2, only if the machine has no Node.js 20+, .gpu-ort/node"
