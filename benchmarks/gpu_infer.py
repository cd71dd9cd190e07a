#!/usr/bin/env python3
"""GPU contender of benchmarks/inference.ts: the STPM scoring pipeline of torch_infer.stpm_scores on a CUDA device.

Run on the lent GPU machine (repo root, `.gpu` carried, $OUT an output folder):

    set -o pipefail; PYTHONUNBUFFERED=1 timeout -k 10 290 python3 benchmarks/gpu_infer.py --device cuda --data .gpu --out "$OUT" 2>&1 | tee "$OUT/gpu-infer.log"

`.gpu` comes from benchmarks/gpu-prepare.sh (32 bottle test frames, the bottle bundle's conv weights). Test here:

    benchmarks/.venv/bin/python benchmarks/gpu_infer.py --device cpu --batches 1,2 --runs 1 --warmup 1 --out /tmp/g

ONNX Runtime's CUDA / TensorRT providers cannot be installed in this offline workplace, so the GPU figures are
PyTorch's. One process runs every contender; progress goes to stderr with timestamps, gpu-inference.json (every
run) and gpu-inference.md go to --out (the JSON is rewritten after every case, so a cut-off run leaves what it
measured), and the Markdown is printed last on stdout.

Timed path per batch, as torch_infer.stpm_scores defines it: uint8 NHWC 900x900 frames in pinned host memory ->
copy to the device -> antialiased bilinear resize to 256 -> /255, (x - mean) / std -> teacher and student -> per
level L2 normalisation over channels, 1/2 ||t - s||^2, bilinear upsample, product over levels, max per image ->
anomaly maps [N, 256, 256] and scores copied back into pinned host buffers; torch.cuda.synchronize() before the
clock is read. Variants (contenders):

  fp32_nchw      float32, NCHW, TF32 off (cuDNN and matmul) -- the reference for speed and accuracy
  fp32_cl        float32, channels_last, TF32 off
  tf32_cl        float32 with TF32 tensor cores, channels_last
  fp16_cl        networks in float16, channels_last; resize, normalisation, distance, upsample, product in float32
  fp16_cl_graph  fp16_cl captured as one CUDA graph per batch size (static input/output buffers on the device);
                 the host->device copy of the frames and the device->host copies of maps and scores stay in the
                 timed region, OUTSIDE the graph (ordinary async copies around graph.replay()).

torch.compile is not run (not required, and its compile time is not predictable enough for a one-shot run).
cudnn.benchmark is on for every variant; warm-up runs absorb its autotuning. Each variant's failure (or a
skipped variant: fp16/TF32/graph on CPU) is recorded in the JSON and does not stop the others; the graph
variants run after all eager ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_nets import build, load_conv_tensors  # noqa: E402

T_START = time.perf_counter()


def log(msg: str) -> None:
    now = datetime.now().strftime("%H:%M:%S")
    print(f"[gpu_infer {now} +{time.perf_counter() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.perf_counter() - T_START


# ---------------------------------------------------------------------------------------------------------------
# Precision switches
# ---------------------------------------------------------------------------------------------------------------


def set_tf32(on: bool) -> dict:
    """TF32 for cuDNN convolutions and cuBLAS matmuls together; returns the settings as torch reports them.

    Uses the legacy allow_tf32 setters: they keep torch's newer fp32_precision settings in step (checked on torch
    2.13), whereas setting only the new ones makes every later read of the legacy flags raise ("mix of the legacy
    and new APIs"). Note cuDNN's default is TF32 *on* for convolutions, so "off" has to be set explicitly."""
    with warnings.catch_warnings():  # newer torch calls these setters deprecated; they still do the job
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    state: dict = {}
    for key, read in (
        ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
        ("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
        ("float32_matmul_precision", torch.get_float32_matmul_precision),
        ("cuda.matmul.fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision),
        ("cudnn.conv.fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
    ):
        try:
            state[key] = read()
        except Exception as e:  # noqa: BLE001 -- an attribute this torch lacks, or its consistency check
            state[key] = f"unreadable: {type(e).__name__}"
    return state


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    dtype: torch.dtype
    channels_last: bool
    tf32: bool
    graph: bool
    precision: str  # which measured peak the "% of peak" divides by


VARIANTS = (
    Variant("fp32_nchw", "fp32 NCHW eager (TF32 off) [reference]", torch.float32, False, False, False, "fp32"),
    Variant("fp32_cl", "fp32 channels_last eager (TF32 off)", torch.float32, True, False, False, "fp32"),
    Variant("tf32_cl", "TF32 channels_last eager", torch.float32, True, True, False, "tf32"),
    Variant("fp16_cl", "fp16 channels_last eager", torch.float16, True, False, False, "fp16"),
    Variant("fp16_cl_graph", "fp16 channels_last CUDA graph", torch.float16, True, False, True, "fp16"),
)
REFERENCE = "fp32_nchw"


def cpu_skip_reason(v: Variant, force: bool) -> str | None:
    if v.graph:
        return "CUDA graphs need a CUDA device"
    if force:
        return None
    if v.tf32:
        return "TF32 is a CUDA tensor-core mode (no effect on CPU)"
    if v.dtype == torch.float16:
        return "fp16 networks are a GPU variant (run with --cpu-all-variants to exercise the code path on CPU)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------


def probe_uint8_resize(device: torch.device) -> bool:
    """Whether the device resizes uint8 directly (torch's CPU fast path, the reference's definition)."""
    try:
        x = torch.zeros((1, 12, 12, 3), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
        y = F.interpolate(x, size=(5, 5), mode="bilinear", antialias=True, align_corners=False)
        return y.dtype == torch.uint8
    except Exception:  # noqa: BLE001 -- "not implemented for 'Byte'" on CUDA
        return False


class Pipeline:
    """Device-side STPM path from uint8 NHWC frames to (maps [N, size, size] float32, scores [N] float32)."""

    def __init__(self, teacher, student, mean, std, size: int, v: Variant, uint8_resize: bool, device):
        self.teacher, self.student = teacher, student
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.size = size
        self.dtype = v.dtype
        self.fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        self.uint8_resize = uint8_resize

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.size
        x = frames.permute(0, 3, 1, 2)  # NCHW view, stored channels-last
        if self.uint8_resize:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).float()
        else:
            # no uint8 kernel on this device: the same filter in float32, rounded to the 8-bit values the uint8
            # path hands on
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)
        x = x.div_(255).sub_(self.mean).div_(self.std)
        x = x.to(dtype=self.dtype, memory_format=self.fmt)
        product = None
        for t, s in zip(self.teacher(x), self.student(x)):
            d = F.normalize(t.float(), dim=1) - F.normalize(s.float(), dim=1)
            dist = 0.5 * (d * d).sum(dim=1, keepdim=True)
            m = F.interpolate(dist, size=(size, size), mode="bilinear", align_corners=False)
            product = m if product is None else product * m
        maps = product[:, 0]
        return maps, maps.amax(dim=(1, 2))


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarise(times_ms: list[float], batch: int) -> dict:
    med = statistics.median(times_ms)
    srt = sorted(times_ms)
    return {
        "batch": batch,
        "runs_ms": [round(t, 4) for t in times_ms],
        "median_ms": med,
        "min_ms": srt[0],
        "p90_ms": srt[min(len(srt) - 1, math.ceil(0.9 * len(srt)) - 1)],
        "ms_per_frame": med / batch,
        "frames_per_s": 1000 * batch / med,
    }


def conv_flops_per_frame(model: nn.Module, size: int) -> int:
    """2 * Cout * (Cin / groups) * kh * kw * Hout * Wout over every nn.Conv2d call, for one 3 x size x size image."""
    total = 0

    def hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * m.out_channels * (m.in_channels // m.groups) * kh * kw * out.shape[2] * out.shape[3]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peaks(device: torch.device, n: int, samples: int, reps: int, cpu_all: bool) -> dict:
    """Square n x n matmuls: TFLOP/s median and best of `samples` timings of `reps` back-to-back products each."""
    out: dict = {"n": n, "samples": samples, "reps_per_sample": reps}
    cases = [("fp32", torch.float32, False), ("tf32", torch.float32, True), ("fp16", torch.float16, False)]
    for key, dtype, tf32 in cases:
        if device.type != "cuda" and (tf32 or (dtype == torch.float16 and not cpu_all)):
            out[key] = {"skipped": "CUDA only"}
            continue
        try:
            flags = set_tf32(tf32)
            g = torch.Generator(device=device).manual_seed(5)
            a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
            b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
            c = torch.empty(n, n, device=device, dtype=dtype)
            for _ in range(2):
                torch.mm(a, b, out=c)
            sync(device)
            ts = []
            for _ in range(samples):
                t0 = time.perf_counter()
                for _ in range(reps):
                    torch.mm(a, b, out=c)
                sync(device)
                ts.append((time.perf_counter() - t0) / reps)
            flops = 2 * n**3
            out[key] = {
                "median_tflops": flops / statistics.median(ts) / 1e12,
                "best_tflops": flops / min(ts) / 1e12,
                "median_ms": statistics.median(ts) * 1000,
                "flags": flags,
            }
            log(f"peak {key}: {out[key]['median_tflops']:.1f} TFLOP/s median, {out[key]['best_tflops']:.1f} best")
            del a, b, c
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            log(f"peak {key} failed: {e}")
    set_tf32(False)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def accuracy(maps: torch.Tensor, scores: torch.Tensor, ref_maps: torch.Tensor, ref_scores: torch.Tensor) -> dict:
    m, r = maps.double(), ref_maps.double()
    s, rs = scores.double(), ref_scores.double()
    ds = (s - rs).abs()
    return {
        "frames": int(s.numel()),
        "max_abs_dscore": float(ds.max()),
        "max_rel_dscore": float((ds / rs.abs().clamp_min(1e-30)).max()),
        "map_rel_l2": float(torch.linalg.vector_norm(m - r) / torch.linalg.vector_norm(r).clamp_min(1e-30)),
        "max_abs_dmap": float((m - r).abs().max()),
        "nonfinite_map_values": int((~torch.isfinite(maps)).sum()),
    }


def mib(x: int) -> float:
    return x / 2**20


# ---------------------------------------------------------------------------------------------------------------
# One variant of one backbone
# ---------------------------------------------------------------------------------------------------------------


def run_variant(ctx: dict, bb: dict, v: Variant) -> dict:
    a = ctx["args"]
    device: torch.device = ctx["device"]
    maps_host: torch.Tensor = ctx["maps_host"]
    scores_host: torch.Tensor = ctx["scores_host"]
    cuda = device.type == "cuda"
    rec: dict = {"name": v.name, "label": v.label, "precision": v.precision, "status": "ok", "results": []}
    if not cuda:
        reason = cpu_skip_reason(v, a.cpu_all_variants)
        if reason:
            rec.update(status="skipped", reason=reason)
            log(f"{bb['backbone']} {v.name}: skipped ({reason})")
            return rec
    rec["tf32_flags"] = set_tf32(v.tf32) if cuda else "n/a on CPU"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    teacher = copy.deepcopy(bb["teacher"]).to(device=device, dtype=v.dtype).eval()
    student = copy.deepcopy(bb["student"]).to(device=device, dtype=v.dtype).eval()
    if v.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
        student = student.to(memory_format=torch.channels_last)
    pipe = Pipeline(teacher, student, bb["mean"], bb["std"], a.size, v, ctx["uint8_resize"], device)
    if cuda:
        rec["weights_mib"] = mib(torch.cuda.memory_allocated(device))
    log(f"{bb['backbone']} {v.name}: {v.label}")
    for batch in ctx["batches"]:
        if elapsed() > a.budget_s:
            rec["results"].append({"batch": batch, "skipped": f"time budget of {a.budget_s} s spent"})
            log(f"  b{batch}: skipped, time budget spent")
            continue
        try:
            r = time_case(ctx, pipe, v, batch)
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc()
            log(f"  b{batch}: FAILED {type(e).__name__}: {e}")
            rec["results"].append({"batch": batch, "error": f"{type(e).__name__}: {e}", "traceback": tb[-4000:]})
            rec["status"] = "partial"
            try:
                sync(device)
            except Exception as e2:  # noqa: BLE001
                rec["results"][-1]["sync_after_error"] = f"{type(e2).__name__}: {e2}"
            continue
        # accuracy against the reference on the same frames (the reference itself is stored, not compared)
        out_maps = maps_host[:batch].clone()
        out_scores = scores_host[:batch].clone()
        r["score0"] = float(out_scores[0])
        if v.name == REFERENCE:
            bb["ref"][batch] = (out_maps, out_scores)
            r["accuracy"] = "reference"
        elif batch in bb["ref"]:
            r["accuracy"] = accuracy(out_maps, out_scores, *bb["ref"][batch])
        else:
            r["accuracy"] = None
        acc = r["accuracy"]
        acc_txt = (
            f", max|dscore| {acc['max_abs_dscore']:.2e} (rel {acc['max_rel_dscore']:.2e}), map rel L2 "
            f"{acc['map_rel_l2']:.2e}"
            if isinstance(acc, dict)
            else ""
        )
        mem_txt = f", peak {r['peak_mem_mib']:.0f} MiB" if "peak_mem_mib" in r else ""
        log(
            f"  b{batch}: median {r['median_ms']:.3f} ms ({r['frames_per_s']:.1f} frames/s, first run "
            f"{r['first_run_ms']:.1f} ms){mem_txt}, score0 {r['score0']:.6g}{acc_txt}"
        )
        rec["results"].append(r)
    if cuda:
        rec["peak_mem_mib"] = max((r.get("peak_mem_mib", 0.0) for r in rec["results"]), default=None)
    del pipe, teacher, student
    if cuda:
        torch.cuda.empty_cache()
    return rec


def time_case(ctx: dict, pipe: Pipeline, v: Variant, batch: int) -> dict:
    a = ctx["args"]
    device: torch.device = ctx["device"]
    cuda = device.type == "cuda"
    src = ctx["host_frames"][:batch]
    maps_host = ctx["maps_host"][:batch]
    scores_host = ctx["scores_host"][:batch]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    extra: dict = {}

    if v.graph:
        static_in = torch.empty(src.shape, dtype=torch.uint8, device=device)
        static_in.copy_(src)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        t0 = time.perf_counter()
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up before capture (cuDNN autotuning, lazy initialisation)
                pipe(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        sync(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_maps, static_scores = pipe(static_in)
        sync(device)
        extra["capture_s"] = time.perf_counter() - t0  # the three warm-up runs included

        def step_events(ev) -> None:
            ev[0].record()
            static_in.copy_(src, non_blocking=True)
            ev[1].record()
            graph.replay()
            ev[2].record()
            maps_host.copy_(static_maps, non_blocking=True)
            scores_host.copy_(static_scores, non_blocking=True)
            ev[3].record()

    else:

        def step() -> None:  # CPU: no events
            maps, scores = pipe(src.to(device, non_blocking=True))
            maps_host.copy_(maps, non_blocking=True)
            scores_host.copy_(scores, non_blocking=True)

        def step_events(ev) -> None:
            ev[0].record()
            x = src.to(device, non_blocking=True)
            ev[1].record()
            maps, scores = pipe(x)
            ev[2].record()
            maps_host.copy_(maps, non_blocking=True)
            scores_host.copy_(scores, non_blocking=True)
            ev[3].record()

    times: list[float] = []
    stages: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []}
    first = None
    for i in range(a.warmup + a.runs):
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            t0 = time.perf_counter()
            step_events(ev)
            torch.cuda.synchronize(device)
            dt = (time.perf_counter() - t0) * 1000
        else:
            t0 = time.perf_counter()
            step()
            dt = (time.perf_counter() - t0) * 1000
        if first is None:
            first = dt
        if i < a.warmup:
            continue
        times.append(dt)
        if cuda:
            stages["h2d"].append(ev[0].elapsed_time(ev[1]))
            stages["compute"].append(ev[1].elapsed_time(ev[2]))
            stages["d2h"].append(ev[2].elapsed_time(ev[3]))
    r = summarise(times, batch)
    r["first_run_ms"] = first
    if cuda:
        r["stages_ms"] = {k: statistics.median(s) for k, s in stages.items()}
        r["peak_mem_mib"] = mib(torch.cuda.max_memory_allocated(device))
        r["peak_reserved_mib"] = mib(torch.cuda.max_memory_reserved(device))
    r.update(extra)
    return r


# ---------------------------------------------------------------------------------------------------------------
# Set-up, report
# ---------------------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict:
    env: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    try:
        env["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except Exception:  # noqa: BLE001
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=p.total_memory / 2**30,
            gpu_sm_count=p.multi_processor_count,
            gpu_capability=f"{p.major}.{p.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            q = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,persistence_mode",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=15,
            )
            env["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
            head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=15).stdout
            versions = [ln.strip(" |") for ln in head.splitlines() if "CUDA Version" in ln]
            env["nvidia_smi_header"] = versions[0] if versions else None
        except Exception as e:  # noqa: BLE001
            env["nvidia_smi"] = f"unavailable: {e}"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
        env["onnxruntime_device"] = ort.get_device()
    except Exception as e:  # noqa: BLE001
        env["onnxruntime"] = f"not importable: {type(e).__name__}: {e}"
    return env


def load_backbone(name: str, data: str, manifest: dict, size: int) -> dict:
    if name == "mobilenet_v2":
        info = manifest["mobilenet_v2"]
        teacher, student, mean, std = build("mobilenet_v2", None, seed=0)
        load_conv_tensors(teacher, os.path.join(data, info["weights"]["teacher"]))
        load_conv_tensors(student, os.path.join(data, info["weights"]["student"]))

        def close(u, w) -> bool:
            return all(abs(p - q) < 1e-6 for p, q in zip(u, w, strict=True))

        if not (close(info["mean"], mean) and close(info["std"], std)):
            log(f"WARNING: bundle normalisation {info['mean']}/{info['std']} differs from torch_nets' {mean}/{std}")
        bb = {
            "teacher_source": f"bottle bundle {info['bundle']} ({info['model_version']}) teacher conv weights",
            "student_source": f"trained bottle student ({info['model_version']})",
            "conv_flops_per_frame_stpmd": info.get("conv_flops_per_frame"),
            "threshold": info.get("threshold"),
        }
    else:
        teacher, _, mean, std = build("resnet18", None, seed=0)
        student, _, _, _ = build("resnet18", None, seed=1)
        bb = {
            "teacher_source": "random ResNet-18 pyramid (torch_nets, seed 0, BatchNorm folded)",
            "student_source": "random ResNet-18 pyramid (torch_nets, seed 1)",
        }
    for m in (teacher, student):
        m.eval().requires_grad_(False)
    bb.update(backbone=name, teacher=teacher, student=student, mean=mean, std=std, ref={})
    bb["conv_flops_per_frame"] = conv_flops_per_frame(teacher, size) + conv_flops_per_frame(student, size)
    return bb


def cpu_check(bb: dict, ctx: dict) -> dict:
    """torch_infer.stpm_scores itself on the CPU (fp32 NCHW) for the first frames, against this run's reference."""
    from torch_infer import stpm_scores

    n = min(4, ctx["host_frames"].shape[0])
    ref_batch = max(bb["ref"]) if bb["ref"] else None
    if ref_batch is None:
        return {"skipped": "no reference results"}
    n = min(n, ref_batch)
    mean_t = torch.tensor(bb["mean"]).view(1, 3, 1, 1)
    std_t = torch.tensor(bb["std"]).view(1, 3, 1, 1)
    frames = ctx["host_frames"][:n].clone()  # pageable copy, as torch_infer has it
    t0 = time.perf_counter()
    with torch.inference_mode():
        maps, scores = stpm_scores(bb["teacher"], bb["student"], frames, ctx["args"].size, mean_t, std_t, False)
    ref_maps, ref_scores = bb["ref"][ref_batch]
    out = {
        "frames": n,
        "compared_with": f"{REFERENCE} b{ref_batch} on {ctx['device']}",
        "cpu_seconds": time.perf_counter() - t0,
        "cpu_scores": [float(s) for s in scores],
        "device_scores": [float(s) for s in ref_scores[:n]],
    }
    if not ctx["uint8_resize"]:
        out["note"] = (
            "the device resizes in float32 and rounds (no uint8 kernel), the CPU in uint8 fixed point: about 8% "
            "of the resized pixels differ by 1, which moves scores by ~1e-3 relative (measured on CPU)"
        )
    out.update(accuracy(ref_maps[:n], ref_scores[:n], maps, scores))
    return out


def fmt(x, digits=1, suffix="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}{suffix}"


def sci(x) -> str:
    return "–" if x is None else f"{x:.1e}"


def markdown(report: dict) -> str:
    env = report["environment"]
    peak = report.get("peak_used", {})
    lines = [
        "# stpmd STPM pipeline on GPU (PyTorch)",
        "",
        f"{report['input']}. {report['method']}",
        "",
        f"Device: {env.get('gpu', env['device'])}; torch {env['torch']} (CUDA {env.get('torch_cuda')}, cuDNN "
        f"{env.get('cudnn')}); nvidia-smi: {env.get('nvidia_smi', '–')}; {env.get('nvidia_smi_header') or ''}; "
        f"CPU: {env.get('cpu_model', '?')} × {env['cpu_count']}. ONNX Runtime: {env.get('onnxruntime')} providers "
        f"{env.get('onnxruntime_providers', '–')}.",
        "",
        f"Resize on the device: {report['resize']}. Timed region: {report['timed_region']}",
        "",
        "Peak (square matmul n = {n}, median): fp32 (TF32 off) {fp32} TFLOP/s, TF32 {tf32} TFLOP/s, fp16 {fp16} "
        "TFLOP/s. \"% of peak\" = conv FLOPs/frame × best frames/s ÷ the peak of the variant's precision.".format(
            n=report.get("peak_start", {}).get("n", "?"),
            fp32=fmt(peak.get("fp32"), 1),
            tf32=fmt(peak.get("tf32"), 1),
            fp16=fmt(peak.get("fp16"), 1),
        ),
        "",
    ]
    for bb in report["backbones"]:
        variants = bb["variants"]
        batches = report["batches"]
        flops = bb.get("conv_flops_per_frame")
        lines += [
            f"## {bb['backbone']}",
            "",
            f"Teacher: {bb['teacher_source']}; student: {bb['student_source']}. Conv FLOPs teacher+student: "
            f"{fmt(flops / 1e9 if flops else None, 2)} GFLOP/frame"
            + (
                f" (stpmd's ONNX count: {fmt(bb['conv_flops_per_frame_stpmd'] / 1e9, 2)})"
                if bb.get("conv_flops_per_frame_stpmd")
                else ""
            )
            + ".",
            "",
        ]
        ref = next((x for x in variants if x["name"] == REFERENCE and x["status"] in ("ok", "partial")), None)

        def res(x: dict, b: int) -> dict | None:
            return next((r for r in x.get("results", []) if r.get("batch") == b and "median_ms" in r), None)

        head = (
            "| variant | b1 latency ms | "
            + " | ".join(f"b{b} frames/s" for b in batches)
            + f" | b{batches[-1]} ms/frame | speed-up vs ref (best batch) | peak GPU MiB | % of peak | "
            f"max abs Δscore | max rel Δscore | map rel L2 |"
        )
        lines += [head, "|---|" + "---:|" * (len(batches) + 8)]
        for x in variants:
            if x["status"] in ("skipped", "failed"):
                why = x.get("reason") or x.get("error", "")
                lines.append(f"| {x['label']} | {x['status']}: {why} |" + " |" * (len(batches) + 7))
                continue
            fps = {b: (res(x, b) or {}).get("frames_per_s") for b in batches}
            best_b = max((b for b in batches if fps[b]), key=lambda b: fps[b], default=None)
            best = fps[best_b] if best_b else None
            ref_fps = (res(ref, best_b) or {}).get("frames_per_s") if ref and best_b else None
            speed = best / ref_fps if best and ref_fps else None
            pk = peak.get(x["precision"])
            pct = 100 * flops * best / 1e12 / pk if best and flops and pk else None
            accs = [r["accuracy"] for r in x["results"] if isinstance(r.get("accuracy"), dict)]
            is_ref = x["name"] == REFERENCE
            def worst(k: str, accs=accs) -> str:
                return sci(max(a[k] for a in accs)) if accs else "–"

            b1 = res(x, 1)
            last = res(x, batches[-1])
            lines.append(
                f"| {x['label']} | {fmt(b1['median_ms'] if b1 else None, 2)} | "
                + " | ".join(fmt(fps[b], 1) for b in batches)
                + f" | {fmt(last['ms_per_frame'] if last else None, 3)} | {fmt(speed, 2, '×')} (b{best_b}) | "
                f"{fmt(x.get('peak_mem_mib'), 0)} | {fmt(pct, 1, '%')} ({x['precision']}) | "
                + (
                    "ref | ref | ref |"
                    if is_ref
                    else f"{worst('max_abs_dscore')} | {worst('max_rel_dscore')} | {worst('map_rel_l2')} |"
                )
            )
        lines += ["", f"Stage medians on the device (CUDA events, ms per batch) and first (cold) run:", ""]
        lines += [
            "| variant | batch | h2d | compute | d2h | wall median | first run | peak MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in variants:
            for r in x.get("results", []):
                if "median_ms" not in r:
                    if "error" in r or "skipped" in r:
                        why = r.get("error") or r.get("skipped")
                        lines.append(f"| {x['name']} | {r['batch']} | {why} | | | | | |")
                    continue
                st = r.get("stages_ms", {})
                lines.append(
                    f"| {x['name']} | {r['batch']} | {fmt(st.get('h2d'), 3)} | {fmt(st.get('compute'), 3)} | "
                    f"{fmt(st.get('d2h'), 3)} | {fmt(r['median_ms'], 3)} | {fmt(r['first_run_ms'], 1)} | "
                    f"{fmt(r.get('peak_mem_mib'), 0)} |"
                )
        scores0 = ", ".join(
            f"{x['name']} {r['score0']:.6f}"
            for x in variants
            for r in x.get("results", [])[:1]
            if "score0" in r
        )
        cc = bb.get("cpu_check", {})
        lines += [
            "",
            f"Score of frame 0 (b{batches[0]}): {scores0}.",
            "",
            "torch_infer.stpm_scores on the CPU vs this run's reference: "
            + (
                f"{cc['frames']} frames, max abs Δscore {sci(cc['max_abs_dscore'])}, max rel Δscore "
                f"{sci(cc['max_rel_dscore'])}, map rel L2 {sci(cc['map_rel_l2'])}."
                if "map_rel_l2" in cc
                else f"{cc.get('skipped') or cc.get('error') or '–'}."
            ),
            "",
        ]
    failed = [
        f"{bb['backbone']} {x['name']}: {x['status']}, {x.get('error') or x.get('reason') or 'see the stage table'}"
        for bb in report["backbones"]
        for x in bb["variants"]
        if x["status"] != "ok"
    ] + [f"{bb['backbone']}: {bb['error']}" for bb in report["backbones"] if "error" in bb]
    if failed:
        lines += ["Skipped or failed: " + "; ".join(failed) + ".", ""]
    cut = " (INTERRUPTED or cut short: partial results)" if report.get("partial") else ""
    lines.append(f"Run took {fmt(report.get('elapsed_s'), 1)} s{cut}.")
    return "\n".join(lines) + "\n"


def public(bb: dict) -> dict:
    return {k: v for k, v in bb.items() if k not in ("teacher", "student", "ref")}


def write_outputs(out: str, report: dict, final: bool) -> None:
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "gpu-inference.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "gpu-inference.json"))
    if final:
        with open(os.path.join(out, "gpu-inference.md"), "w") as f:
            f.write(markdown(report))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (for testing)")
    ap.add_argument("--data", default=".gpu", help="folder written by benchmarks/gpu-prepare.sh")
    ap.add_argument("--out", required=True, help="folder for gpu-inference.json / .md")
    ap.add_argument("--backbones", default="mobilenet_v2,resnet18")
    ap.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--peak-n", type=int, help="matmul size for the peaks (default 8192 on CUDA, 512 on CPU)")
    ap.add_argument("--peak-samples", type=int, default=7)
    ap.add_argument("--peak-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--budget-s", type=float, default=200, help="start no new case after this many seconds")
    ap.add_argument("--cpu-all-variants", action="store_true", help="testing: run TF32 and fp16 variants on CPU too")
    a = ap.parse_args()
    if a.runs < 1 or a.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("CUDA is not available (use --device cpu to test)")
        device = torch.device("cuda", device.index or 0)  # set_device and friends want an index
        torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in a.batches.split(",")]
    wanted = [v for v in VARIANTS if v.name in a.variants.split(",")]
    if REFERENCE not in [v.name for v in wanted]:
        ap.error(f"--variants must include the reference {REFERENCE}")
    backbones = a.backbones.split(",")
    if not set(backbones) <= {"mobilenet_v2", "resnet18"}:
        ap.error("--backbones: mobilenet_v2 and/or resnet18")

    log(f"torch {torch.__version__}, device {device}, batches {batches}, {a.warmup} warm-up + {a.runs} runs")
    report: dict = {
        "benchmark": "stpmd STPM pipeline in PyTorch on a GPU (gpu_infer.py)",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "partial": True,
        "batches": batches,
        "settings": {k: v for k, v in vars(a).items()},
        "environment": environment(device),
        "torch_compile": "not run (not required; compile time not predictable enough for a one-shot run)",
        "backbones": [],
    }
    log(f"environment: {json.dumps(report['environment'])}")

    manifest = json.load(open(os.path.join(a.data, "manifest.json")))
    need = max(batches)
    files = [os.path.join(a.data, f["file"]) for f in manifest["frames"]][:need]
    if len(files) < need:
        raise SystemExit(f"need {need} frames, {a.data} has {len(files)}")
    frames_np = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    host_frames = torch.from_numpy(frames_np)
    maps_host = torch.empty((need, a.size, a.size), dtype=torch.float32)
    scores_host = torch.empty((need,), dtype=torch.float32)
    if device.type == "cuda":
        host_frames = host_frames.pin_memory()
        maps_host, scores_host = maps_host.pin_memory(), scores_host.pin_memory()
    uint8_resize = probe_uint8_resize(device)
    report["input"] = (
        f"{len(files)} bottle test PNGs ({frames_np.shape[2]}×{frames_np.shape[1]}, good and defective kinds "
        f"alternately, as inference.ts), decoded once; model input {a.size}×{a.size}"
    )
    report["method"] = (
        f"One process; per variant and batch size {a.warmup} warm-up + {a.runs} timed runs, median; "
        f"torch.cuda.synchronize() before each clock reading; cudnn.benchmark on."
    )
    report["frames"] = [f["file"] for f in manifest["frames"][:need]]
    report["host_buffers"] = {
        "frames_pinned": bool(host_frames.is_pinned()),
        "outputs_pinned": bool(maps_host.is_pinned()),
        "frames_mib": mib(host_frames.numel()),
    }
    report["resize"] = (
        "uint8 antialiased bilinear (as torch_infer's CPU path)"
        if uint8_resize
        else "no uint8 kernel on this device: float32 antialiased bilinear, rounded and clamped to 0..255"
    )
    report["timed_region"] = (
        "pinned uint8 frames → device (async copy), device pipeline, maps + scores → pinned host buffers (async), "
        "synchronize. CUDA graph variant: the two copies are outside the graph (around graph.replay()), "
        "still inside the timed region."
    )
    log(
        f"{len(files)} frames loaded ({mib(host_frames.numel()):.0f} MiB, pinned "
        f"{report['host_buffers']['frames_pinned']}); resize: {report['resize']}"
    )
    ctx = {
        "args": a,
        "device": device,
        "batches": batches,
        "host_frames": host_frames,
        "maps_host": maps_host,
        "scores_host": scores_host,
        "uint8_resize": uint8_resize,
    }
    out_dir = a.out
    loaded: list[dict] = []
    try:
        n = a.peak_n or (8192 if device.type == "cuda" else 512)
        log(f"peak matmuls n = {n}")
        report["peak_start"] = matmul_peaks(device, n, a.peak_samples, a.peak_reps, a.cpu_all_variants)
        report["peak_used"] = {
            k: report["peak_start"][k]["median_tflops"]
            for k in ("fp32", "tf32", "fp16")
            if "median_tflops" in report["peak_start"].get(k, {})
        }
        write_outputs(out_dir, report, final=False)

        for name in backbones:
            try:
                bb = load_backbone(name, a.data, manifest, a.size)
            except Exception as e:  # noqa: BLE001
                log(f"{name}: FAILED to build: {e}")
                report["backbones"].append(
                    {
                        "backbone": name,
                        "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc()[-4000:],
                        "variants": [],
                    }
                )
                continue
            bb["variants"] = []
            loaded.append(bb)
            report["backbones"].append(public(bb))
            stpmd_flops = bb.get("conv_flops_per_frame_stpmd")
            log(
                f"{name}: conv FLOPs teacher+student {bb['conv_flops_per_frame'] / 1e9:.3f} GFLOP/frame"
                + (f" (stpmd's ONNX count: {stpmd_flops / 1e9:.3f})" if stpmd_flops else "")
            )

        # eager variants of every backbone first, CUDA graphs last: a failed capture cannot spoil the others
        order = [(bb, v) for bb in loaded for v in wanted if not v.graph] + [
            (bb, v) for bb in loaded for v in wanted if v.graph
        ]
        for bb, v in order:
            if elapsed() > a.budget_s:
                rec = {
                    "name": v.name,
                    "label": v.label,
                    "precision": v.precision,
                    "status": "skipped",
                    "reason": f"time budget of {a.budget_s} s spent",
                    "results": [],
                }
                log(f"{bb['backbone']} {v.name}: skipped, time budget spent")
            else:
                try:
                    with torch.inference_mode():
                        rec = run_variant(ctx, bb, v)
                except Exception as e:  # noqa: BLE001
                    log(f"{bb['backbone']} {v.name}: FAILED {type(e).__name__}: {e}")
                    rec = {
                        "name": v.name,
                        "label": v.label,
                        "precision": v.precision,
                        "status": "failed",
                        "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc()[-4000:],
                        "results": [],
                    }
                    try:
                        sync(device)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    except Exception as e2:  # noqa: BLE001
                        rec["sync_after_error"] = f"{type(e2).__name__}: {e2}"
            set_tf32(False)
            if rec["results"] and all("median_ms" not in r for r in rec["results"]) and rec["status"] == "partial":
                rec["status"] = "failed"
                rec["error"] = rec["results"][0].get("error", "every batch size failed")
            bb["variants"].append(rec)
            if v.name == REFERENCE:
                try:
                    bb["cpu_check"] = cpu_check(bb, ctx)
                    cc = bb["cpu_check"]
                    if "map_rel_l2" in cc:
                        log(
                            f"{bb['backbone']}: torch_infer on the CPU, {cc['frames']} frames: scores "
                            f"{cc['cpu_scores']} vs {cc['device_scores']} here, map rel L2 {cc['map_rel_l2']:.2e}"
                        )
                except Exception as e:  # noqa: BLE001
                    bb["cpu_check"] = {"error": f"{type(e).__name__}: {e}"}
                    log(f"{bb['backbone']}: CPU check failed: {e}")
            report["backbones"] = [public(b) for b in loaded] + [b for b in report["backbones"] if "error" in b]
            report["elapsed_s"] = elapsed()
            write_outputs(out_dir, report, final=False)

        if elapsed() < a.budget_s:
            log("peak matmuls again (drift check)")
            report["peak_end"] = matmul_peaks(device, n, a.peak_samples, a.peak_reps, a.cpu_all_variants)
            for k in ("fp32", "tf32", "fp16"):
                v_end = report["peak_end"].get(k, {}).get("median_tflops")
                if v_end is not None:
                    report["peak_used"][k] = max(report["peak_used"].get(k, 0.0), v_end)
        report["partial"] = False
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); writing what was measured")
        report["interrupted"] = str(e) or "KeyboardInterrupt"
    finally:
        report["backbones"] = [public(b) for b in loaded] + [b for b in report["backbones"] if "error" in b]
        report["finished_at"] = datetime.now(timezone.utc).isoformat()
        report["elapsed_s"] = elapsed()
        write_outputs(out_dir, report, final=True)
        log(f"wrote {os.path.join(out_dir, 'gpu-inference.json')} and .md")
        sys.stdout.write(markdown(report))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
