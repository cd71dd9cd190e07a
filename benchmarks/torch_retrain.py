#!/usr/bin/env python3
"""PyTorch reference for benchmarks/retrain.ts: the same STPM distillation loop as `stpmd retrain`, timed per epoch.

MobileNetV2 features[0:14] teacher (the shared coral weights, TF-style padding, BatchNorm folded, frozen) and a
student of the same architecture with BatchNorm, torchvision initialisation; 80/20 train/validation split, batch
32, images resized to 256x256, teacher features of the training images computed once (L2-normalised) and cached;
SGD lr 0.4, momentum 0.9, weight decay 1e-4; loss = sum over levels of the mean over batch and positions of
1/2 ||t_hat - s_hat||^2. Each epoch is followed by scoring the held-out images, as stpmd does to pick its best
epoch; both parts are timed separately. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import glob
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
from torch_infer import peak_rss_mib  # noqa: E402
from torch_nets import MobileNetV2Pyramid, fold_batchnorm, load_mobilenet_v2_teacher  # noqa: E402


def load_images(files: list[str], size: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
    return (x - 0.5) / 0.5  # the coral teacher's mean = std = 0.5


def val_scores(teacher, student, x: torch.Tensor, size: int) -> list[float]:
    student.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], 8):
            xb = x[start : start + 8]
            product = None
            for t, s in zip(teacher(xb), student(xb)):
                d = F.normalize(t, dim=1) - F.normalize(s, dim=1)
                m = F.interpolate(0.5 * (d * d).sum(1, keepdim=True), size=(size, size), mode="bilinear")
                product = m if product is None else product * m
            scores += product.amax(dim=(1, 2, 3)).tolist()
    student.train()
    return scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", required=True, help="folder of normal training images")
    ap.add_argument("--weights", required=True, help="mobilenet_v2_imagenet_coral.safetensors")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (quick runs)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    files = sorted(f for ext in ("png", "jpg", "jpeg") for f in glob.glob(os.path.join(a.frames, f"*.{ext}")))
    if a.limit:
        files = files[: a.limit]
    order = np.random.default_rng(0).permutation(len(files))
    n_val = max(1, round(len(files) * 0.2))
    val_files = [files[i] for i in order[:n_val]]
    train_files = [files[i] for i in order[n_val:]]
    x_train = load_images(train_files, a.size)
    x_val = load_images(val_files, a.size)

    teacher = fold_batchnorm(load_mobilenet_v2_teacher(a.weights)).eval()
    with torch.inference_mode():
        cached = [[], [], []]
        for start in range(0, x_train.shape[0], 8):
            for level, f in enumerate(teacher(x_train[start : start + 8])):
                cached[level].append(F.normalize(f, dim=1))
        cached = [torch.cat(c) for c in cached]
    cache_s = time.perf_counter() - started

    student = MobileNetV2Pyramid().train()
    opt = torch.optim.SGD(student.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4)
    epochs = []
    gen = torch.Generator().manual_seed(0)
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(x_train.shape[0], generator=gen)
        losses = []
        for start in range(0, len(perm), a.batch_size):
            idx = perm[start : start + a.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples, stpmd skips such a batch too
                continue
            feats = student(x_train[idx])
            loss = sum(
                0.5 * ((cached[level][idx] - F.normalize(s, dim=1)) ** 2).sum(1).mean() for level, s in enumerate(feats)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach().item())
        t1 = time.perf_counter()
        scores = val_scores(teacher, student, x_val, a.size)
        t2 = time.perf_counter()
        epochs.append(
            {
                "epoch": epoch,
                "train_s": t1 - t0,
                "validation_s": t2 - t1,
                "epoch_s": t2 - t0,
                "loss": statistics.mean(losses),
                "val_mean_score": statistics.mean(scores),
            }
        )
        print(json.dumps(epochs[-1]), file=sys.stderr)
    print(
        json.dumps(
            {
                "engine": f"torch {torch.__version__} eager (autograd), {torch.get_num_threads()} threads",
                "train_images": len(train_files),
                "val_images": len(val_files),
                "load_and_cache_s": cache_s,
                "epochs": epochs,
                "median_epoch_s": statistics.median(e["epoch_s"] for e in epochs),
                "median_train_s": statistics.median(e["train_s"] for e in epochs),
                "median_validation_s": statistics.median(e["validation_s"] for e in epochs),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


if __name__ == "__main__":
    main()
