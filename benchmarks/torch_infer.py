#!/usr/bin/env python3
"""PyTorch eager contender of benchmarks/inference.ts: the whole STPM scoring pipeline from decoded uint8 camera
frames to anomaly maps and image scores, timed like stpmd's own contenders. Prints one JSON object on stdout.

Pipeline per batch: uint8 NHWC frames -> antialiased bilinear resize to size x size (F.interpolate on uint8,
torch's fast path) -> /255, (x - mean) / std -> teacher and student -> per level L2 normalisation over channels,
1/2 ||t - s||^2 -> bilinear upsample (align_corners=False) -> product over levels -> max per image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_nets import build, load_conv_tensors  # noqa: E402


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stpm_scores(teacher, student, frames: torch.Tensor, size: int, mean, std, channels_last: bool):
    # frames: B x H x W x 3 uint8; permute gives an NCHW view stored channels-last, which the uint8 resize wants
    x = frames.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.float().div_(255).sub_(mean).div_(std)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    product = None
    for t, s in zip(teacher(x), student(x)):
        d = F.normalize(t, dim=1) - F.normalize(s, dim=1)
        dist = 0.5 * (d * d).sum(dim=1, keepdim=True)
        m = F.interpolate(dist, size=(size, size), mode="bilinear", align_corners=False)
        product = m if product is None else product * m
    maps = product[:, 0]
    return maps, maps.amax(dim=(1, 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, choices=("mobilenet_v2", "resnet18"))
    ap.add_argument("--weights", help="teacher safetensors (mobilenet_v2); random weights without it")
    ap.add_argument("--teacher-convs", help="conv weights of the ONNX teacher (.safetensors, node order)")
    ap.add_argument("--student-convs", help="conv weights of the ONNX student (.safetensors, node order)")
    ap.add_argument("--layout", default="nchw", choices=("nchw", "channels_last"))
    ap.add_argument("--frames", nargs="+", required=True, help="camera-size PNGs, decoded once up front")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    frames_np = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in a.frames])
    frames = torch.from_numpy(frames_np)
    rss_frames = peak_rss_mib()
    teacher, student, mean, std = build(a.arch, a.weights, seed=0)
    if a.teacher_convs:
        load_conv_tensors(teacher, a.teacher_convs)
    if a.student_convs:
        load_conv_tensors(student, a.student_convs)
    channels_last = a.layout == "channels_last"
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
        student = student.to(memory_format=torch.channels_last)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    results = []
    with torch.inference_mode():
        for batch in (int(b) for b in a.batches.split(",")):
            chunk = frames[:batch]
            if chunk.shape[0] < batch:
                raise SystemExit(f"need {batch} frames, have {chunk.shape[0]}")
            times = []
            for i in range(a.warmup + a.runs):
                t0 = time.perf_counter()
                maps, scores = stpm_scores(teacher, student, chunk, a.size, mean_t, std_t, channels_last)
                maps.numpy()  # results handed over as numpy, as an application would
                dt = time.perf_counter() - t0
                if i >= a.warmup:
                    times.append(dt * 1000)
            med = statistics.median(times)
            results.append(
                {
                    "batch": batch,
                    "runs_ms": [round(t, 3) for t in times],
                    "median_ms": med,
                    "ms_per_frame": med / batch,
                    "frames_per_s": 1000 * batch / med,
                }
            )
    print(
        json.dumps(
            {
                "engine": f"torch {torch.__version__} eager",
                "threads": torch.get_num_threads(),
                "layout": a.layout,
                "batchnorm": "folded into conv (as in the ONNX graphs)",
                "results": results,
                "peak_rss_mib": peak_rss_mib(),
                "rss_after_frames_mib": rss_frames,
                "check_score0": float(scores[0]),
            }
        )
    )


if __name__ == "__main__":
    main()
