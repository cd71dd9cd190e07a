"""PyTorch versions of stpmd's two teacher backbones, for the speed comparisons in this folder.

Written out by hand in torchvision's module layout (so torchvision state_dict keys load with strict=True) because
the benchmark venv has no torchvision build matching its torch wheel:

* MobileNetV2 ``features[0:14]`` with TensorFlow "SAME" padding on the stride-2 3x3 convolutions (0 top/left,
  1 bottom/right), taps after features.3 / .6 / .13 -- the shared ``mobilenet_v2_coral_pyramid.onnx``.
* ResNet-18 conv1 .. layer3, taps after layer1 / layer2 / layer3 -- ``tools/export_teacher.py --arch resnet18``.
"""

from __future__ import annotations

import struct
import json

import torch
import torch.nn.functional as F
from torch import nn

# (expansion t, output channels c, repeats n, first stride s) of torchvision's MobileNetV2, up to features.13
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
MOBILENET_V2_TAPS = (3, 6, 13)


class TfSameConv2d(nn.Conv2d):
    """A stride-2 3x3 convolution padded like TensorFlow's SAME on even inputs: nothing top/left, 1 bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn_act(inp: int, out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    if kernel == 3 and stride == 2:
        conv: nn.Conv2d = TfSameConv2d(inp, out, 3, 2, 0, groups=groups, bias=False)
    else:
        conv = nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(inp, hidden, 1, 1))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Pyramid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn_act(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        self.features = nn.Sequential(*blocks)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in MOBILENET_V2_TAPS:
                feats.append(x)
        return feats


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inp != out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class ResNet18Pyramid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s4 = self.layer1(x)
        s8 = self.layer2(s4)
        return [s4, s8, self.layer3(s8)]


def init_like_torchvision(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads a .safetensors file (8-byte header length, JSON header, raw little-endian data) without the package."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    dtypes = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64, "I32": torch.int32}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = bytearray(data[start:end])
        t = torch.frombuffer(buf, dtype=dtypes[info["dtype"]]) if buf else torch.empty(0, dtype=dtypes[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, header.get("__metadata__", {})


def load_mobilenet_v2_teacher(path: str) -> MobileNetV2Pyramid:
    state, _ = read_safetensors(path)
    model = MobileNetV2Pyramid()
    wanted = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < 14}
    model.load_state_dict(wanted, strict=True)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Folds every eval-mode BatchNorm into the convolution before it, as the ONNX teachers have it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in model.modules():
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                setattr(module, name_a, fuse_conv_bn_eval(a, b))
                setattr(module, name_b, nn.Identity())
    return model


def load_conv_tensors(model: nn.Module, path: str) -> None:
    """Loads conv{k}.weight / conv{k}.bias (an ONNX graph's convolutions in node order, written by
    benchmarks/common.ts) into a BatchNorm-folded model, whose convolutions come in the same order."""
    tensors, _ = read_safetensors(path)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != sum(1 for k in tensors if k.endswith(".weight")):
        raise ValueError(f"{path}: {len(convs)} convolutions in the model, different count in the file")
    with torch.no_grad():
        for k, conv in enumerate(convs):
            w = tensors[f"conv{k}.weight"]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{path}: conv{k} is {tuple(w.shape)}, the model has {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            if conv.bias is not None:
                conv.bias.copy_(tensors[f"conv{k}.bias"])


def build(arch: str, teacher_weights: str | None, seed: int) -> tuple[nn.Module, nn.Module, tuple, tuple]:
    """(teacher, student, mean, std) in eval mode with BatchNorm folded."""
    torch.manual_seed(seed)
    if arch == "mobilenet_v2":
        teacher = load_mobilenet_v2_teacher(teacher_weights) if teacher_weights else MobileNetV2Pyramid()
        student = MobileNetV2Pyramid()
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    elif arch == "resnet18":
        teacher, student = ResNet18Pyramid(), ResNet18Pyramid()
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    else:
        raise ValueError(f"unknown arch {arch}")
    return fold_batchnorm(teacher), fold_batchnorm(student), mean, std
