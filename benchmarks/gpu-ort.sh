#!/usr/bin/env bash
# The GPU proof on a lent GPU machine (see benchmarks/gpu-ort-prepare.sh, which builds what it carries):
#   run 1: bash benchmarks/gpu-ort.sh   carrying .gpu-ort/runtime and .gpu-ort/cuda
#   run 2: bash benchmarks/gpu-ort.sh   carrying .gpu-ort/node — only if run 1 said the machine has no Node.js 20+
# It unpacks the carried parts into .gpu-ort/run (git-ignored, so a warm machine keeps it between the two runs),
# puts the CUDA 13 libraries of the machine's PyTorch (its nvidia/* wheels) on the library path, prints what the
# CUDA provider still cannot find, and runs dist/benchmarks/gpu-ort.js twice — cpu + cuda, then cpu + webgpu, each
# in its own process so that one provider cannot take the other down — writing $OUT/{cuda,webgpu}/gpu-ort.{json,md}.
# Rehearsed on the CPU build machine as written in benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${OUT:-.gpu-ort/out}")
run=$(realpath -m .gpu-ort/run)
mkdir -p "$run" "$out"

unxz_to() { # file, then a command reading it on stdin
  local f=$1; shift
  if command -v xz > /dev/null; then xz -dc "$f" | "$@"; else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$f" | "$@"
  fi
}
for part in runtime cuda; do
  if [ -f ".gpu-ort/$part/$part.tar.xz" ]; then
    unxz_to ".gpu-ort/$part/$part.tar.xz" tar -x -C "$run"
    echo "gpu-ort: unpacked $part"
  fi
done
if [ -f .gpu-ort/node/node.xz ]; then
  unxz_to .gpu-ort/node/node.xz cat > "$run/node"
  chmod +x "$run/node"
  echo "gpu-ort: unpacked node"
fi

node=$run/node
if [ ! -x "$node" ]; then
  node=$(command -v node || true)
  if [ -z "$node" ] || ! "$node" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "gpu-ort: this machine has no Node.js 20 or newer; run again carrying .gpu-ort/node" >&2
    exit 3
  fi
fi
lib=$run/node_modules/onnxruntime-node/bin/napi-v6/linux/x64
for need in "$lib/libonnxruntime.so.1" "$lib/libonnxruntime_providers_cuda.so" "$run/dist/benchmarks/gpu-ort.js"; do
  [ -f "$need" ] || { echo "gpu-ort: $need is missing: carry .gpu-ort/runtime and .gpu-ort/cuda" >&2; exit 3; }
done

# the CUDA 13, cuBLAS, cuRAND and cuDNN libraries: directories of the `nvidia` Python packages that hold .so files
cuda_dirs=$(python3 - << 'PY' 2> /dev/null || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = {os.path.dirname(f) for p in nvidia.__path__ for f in glob.glob(os.path.join(p, "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "gpu-ort: node $("$node" -v); CUDA library directories: ${cuda_dirs:-none found}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "gpu-ort: no nvidia-smi"
echo "gpu-ort: what the CUDA provider cannot find: $(ldd "$lib/libonnxruntime_providers_cuda.so" | grep 'not found' | tr -s ' \t\n' ' ' || true)"

status=0
for provider in cuda webgpu; do
  (cd "$run" && "$node" dist/benchmarks/gpu-ort.js --out "$out/$provider" --bundle bundle \
    $( [ -f frames.rgb ] && echo --frames frames.rgb ) --providers "cpu,$provider" --seconds "${SECONDS_PER_BATCH:-2}") ||
    { echo "gpu-ort: the $provider run failed (exit $?)" >&2; status=1; }
done
exit $status
