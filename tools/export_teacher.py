#!/usr/bin/env python3
"""Export an STPM feature-pyramid teacher (torchvision ResNet) to ONNX for stpmd.

The exported graph has one input, ``input`` (float32 N x 3 x H x W, dynamic batch/height/width), and three outputs,
``feat_s4``, ``feat_s8`` and ``feat_s16``: the layer1, layer2 and layer3 outputs (strides 4, 8 and 16). stpmd's
TypeScript training engine rebuilds the graph op by op, so BatchNorm is folded into the convolutions before export
and the result is verified to contain only Conv, Relu, MaxPool and Add (Clip and Pad tolerated).

Nothing is ever downloaded: pass --weights with a torchvision state_dict file fetched on a machine with internet,
or --random for a randomly initialised teacher (tests only).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import sys
import warnings
from array import array
from collections import Counter
from typing import NoReturn

PROG = "export_teacher"

ARCHES = ("resnet18", "wide_resnet50_2")
# The file names torchvision itself uses for the ImageNet weights; only shown in --help.
WEIGHT_FILES = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "wide_resnet50_2": "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
}
OUTPUT_NAMES = ("feat_s4", "feat_s8", "feat_s16")
# Top-level ResNet modules the teacher graph uses; the state_dict must provide all of their keys.
PYRAMID_MODULES = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3"})
ALLOWED_OPS = frozenset({"Conv", "Relu", "MaxPool", "Add", "Clip", "Pad"})
# ImageNet statistics the torchvision weights were trained with; stpmd normalises x/255 with them.
INPUT_MEAN = "0.485,0.456,0.406"
INPUT_STD = "0.229,0.224,0.225"
# The TS engine only understands IR up to 8; opset 17 (and 18) are defined for IR 8, newer torch writes IR 9+.
MAX_IR_VERSION = 8
MIN_OPSET, MAX_OPSET = 11, 18
EXPORT_SIZE = 64  # side of the dummy input used for tracing; any multiple of 16 works, small keeps export fast


class UsageError(Exception):
    """A problem with the command line or its files: reported in one line, exit status 2."""


class ExportError(Exception):
    """The export ran but the result is not what stpmd needs: reported in one line, exit status 1."""


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints the whole usage block on errors; stpmd's tools print one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(message, 2)


def build_parser() -> argparse.ArgumentParser:
    weights_help = "\n".join(f"  {arch}: {url}" for arch, url in WEIGHT_FILES.items())
    parser = OneLineArgumentParser(
        prog="export_teacher.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "ImageNet weights (download them on a machine with internet, e.g. with curl -O, and copy the .pth\n"
            "file here; this script never downloads anything):\n"
            f"{weights_help}\n"
            "(torchvision's IMAGENET1K_V1 files, the ones STPM-style papers use; the V2 files load as well.)\n\n"
            "Needs PyTorch and torchvision, e.g. Debian's python3-torch and python3-torchvision\n"
            "(run it with /usr/bin/python3 then).\n\n"
            "Examples:\n"
            "  /usr/bin/python3 tools/export_teacher.py --arch resnet18 --weights resnet18-f37072fd.pth \\\n"
            "      --out teacher-resnet18.onnx\n"
            "  /usr/bin/python3 tools/export_teacher.py --arch resnet18 --random --out /tmp/t.onnx --check"
        ),
    )
    parser.add_argument("--arch", required=True, choices=ARCHES, help="backbone architecture")
    parser.add_argument("--out", required=True, metavar="FILE.onnx", help="ONNX file to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights", metavar="PATH.pth", help="torchvision state_dict file for --arch (see below for where to get it)"
    )
    source.add_argument("--random", action="store_true", help="random initialisation, for tests (no weights file)")
    parser.add_argument(
        "--opset", type=int, default=17, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default 17, what stpmd expects)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=(
            "also run the original (unfolded) PyTorch model on a seeded random input and write the input and the "
            "outputs as raw little-endian float32 files next to the ONNX file, listed in FILE.check.json"
        ),
    )
    parser.add_argument(
        "--check-size",
        type=int,
        default=64,
        metavar="PIXELS",
        help="height and width of the --check input, a multiple of 16 (default 64)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random and the --check input (default 0)")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    if not (MIN_OPSET <= args.opset <= MAX_OPSET):
        raise UsageError(f"--opset {args.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (stpmd expects 17)")
    if args.check_size <= 0 or args.check_size % 16 != 0:
        raise UsageError(f"--check-size {args.check_size} must be a positive multiple of 16")
    if args.weights is not None:
        if not os.path.exists(args.weights):
            raise UsageError(f"weights file {args.weights} does not exist")
        if not os.path.isfile(args.weights):
            raise UsageError(f"weights file {args.weights} is not a regular file")
    if not args.out.endswith(".onnx"):
        raise UsageError(f"--out {args.out} must end in .onnx")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out {args.out}: directory {out_dir} does not exist")


def fail(message: str, status: int) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(status)


# --------------------------------------------------------------------------------------------------------------
# Model construction (torch is imported lazily so that --help and argument errors need no torch)
# --------------------------------------------------------------------------------------------------------------


def build_backbone(torchvision, arch: str):
    constructor = getattr(torchvision.models, arch)
    # weights=None never downloads; torchvision < 0.13 only knows pretrained=False, which does not either.
    try:
        return constructor(weights=None)
    except TypeError:
        return constructor(pretrained=False)


def randomise_batchnorm(torch, model, seed: int) -> None:
    """Fresh BatchNorm layers are identities (mean 0, var 1, weight 1, bias 0), which would make the folding
    untestable; give them plausible non-trivial statistics so a --check really exercises it."""
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def read_state_dict(torch, path: str) -> dict:
    load_kwargs = {"map_location": "cpu"}
    # weights_only (torch >= 1.13) refuses to run pickled code from a file of unknown origin.
    if "weights_only" in inspect.signature(torch.load).parameters:
        load_kwargs["weights_only"] = True
    try:
        state = torch.load(path, **load_kwargs)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        # torch's weights_only refusal is a paragraph of advice; its last clause names the actual problem.
        reason = one_line(err, 10_000).split("WeightsUnpickler error:")[-1].strip()
        raise UsageError(f"weights file {path} is not a readable PyTorch state_dict ({reason[:160]})") from err
    # Checkpoints saved by training scripts often wrap the state_dict; accept the common shapes.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_weights(torch, model, arch: str, path: str) -> None:
    """Load a torchvision state_dict. Keys of layer4 and fc may be absent (backbone-only files are fine: the
    teacher graph stops at layer3); anything else missing, unknown or mis-shaped means a file for another arch."""
    state = read_state_dict(torch, path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k.split(".")[0] in PYRAMID_MODULES]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise UsageError(f"weights file {path} does not fit --arch {arch}: {'; '.join(detail)}")
    mismatched = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise UsageError(
            f"weights file {path} does not fit --arch {arch}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(expected[k].shape)}"
        )
    model.load_state_dict(state, strict=False)


def make_pyramid(torch, backbone):
    """Wrap the stem and layer1..3 of a torchvision ResNet; layer4 and the classifier are left out of the graph."""

    class FeaturePyramid(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
            self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            s4 = self.layer1(x)
            s8 = self.layer2(s4)
            s16 = self.layer3(s8)
            return s4, s8, s16

    return FeaturePyramid(backbone)


def fold_batchnorm(torch, module) -> int:
    """Fold every BatchNorm2d into the Conv2d that feeds it, in place, and return how many were folded.

    torchvision's ResNets pair them by name (convN/bnN in blocks and the stem, downsample[0]/[1] in shortcuts).
    The exporter's own eval-mode folding differs between torch versions, so it is not relied upon."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, torch.nn.Sequential):
            names = list(children)
            pairs = [(a, b) for a, b in zip(names, names[1:])]
        else:
            pairs = [(f"conv{n[2:]}", n) for n in children if n.startswith("bn")]
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, torch.nn.Identity())
                folded += 1
    leftover = [n for n, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if leftover:
        raise ExportError(f"could not fold BatchNorm layers into a Conv: {', '.join(leftover[:5])}")
    return folded


# --------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------


def export_onnx(torch, model, path: str, opset: int) -> None:
    dummy = torch.zeros(1, 3, EXPORT_SIZE, EXPORT_SIZE)
    dynamic_axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    for name in OUTPUT_NAMES:
        dynamic_axes[name] = {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    kwargs = {
        "input_names": ["input"],
        "output_names": list(OUTPUT_NAMES),
        "dynamic_axes": dynamic_axes,
        "opset_version": opset,
        "do_constant_folding": True,
        "training": torch.onnx.TrainingMode.EVAL,
        "export_params": True,
    }
    # torch >= 2.9 defaults to the dynamo exporter, whose graphs and dynamic-shape handling differ; stay on the
    # TorchScript exporter that torch 1.13 has too, so every version yields the same op set.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # Newer torch warns that the TorchScript exporter is deprecated; the summary line is the useful output.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (dummy,), path, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported as one line; the exporter's errors are long
            raise ExportError(f"torch.onnx.export failed ({type(err).__name__}: {one_line(err)})") from err


# --------------------------------------------------------------------------------------------------------------
# Minimal protobuf handling: the `onnx` package may be absent, and only a few top-level fields are needed
# --------------------------------------------------------------------------------------------------------------

WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5
# ModelProto / GraphProto / NodeProto / OperatorSetIdProto / ValueInfoProto field numbers from onnx.proto.
MODEL_IR_VERSION, MODEL_OPSET_IMPORT, MODEL_GRAPH, MODEL_METADATA_PROPS = 1, 8, 7, 14
GRAPH_NODE, GRAPH_INPUT, GRAPH_OUTPUT = 1, 11, 12
NODE_OP_TYPE, NODE_DOMAIN = 4, 7
OPSET_DOMAIN, OPSET_VERSION = 1, 2
VALUE_INFO_NAME = 1
ENTRY_KEY, ENTRY_VALUE = 1, 2


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ExportError("truncated varint in the exported ONNX file")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def iter_fields(buf: bytes):
    """Yield (field_number, wire_type, value, raw_bytes_of_whole_field) for one protobuf message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == WIRE_FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == WIRE_FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == WIRE_LEN:
            length, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ExportError(f"unexpected protobuf wire type {wire} in the exported ONNX file")
        if pos > len(buf):
            raise ExportError("truncated field in the exported ONNX file")
        yield field, wire, value, buf[start:pos]


def len_field(field: int, payload: bytes) -> bytes:
    return encode_varint((field << 3) | WIRE_LEN) + encode_varint(len(payload)) + payload


def string_entry(key: str, value: str) -> bytes:
    entry = len_field(ENTRY_KEY, key.encode()) + len_field(ENTRY_VALUE, value.encode())
    return len_field(MODEL_METADATA_PROPS, entry)


def rewrite_model(buf: bytes, metadata: dict[str, str]) -> bytes:
    """Return the ModelProto with ir_version capped at MAX_IR_VERSION and `metadata` as metadata_props (replacing
    entries with the same keys). Fields may appear in any order in protobuf, so the rest is copied untouched."""
    parts = [encode_varint((MODEL_IR_VERSION << 3) | WIRE_VARINT)]
    ir_version = None
    rest = []
    for field, _wire, value, raw in iter_fields(buf):
        if field == MODEL_IR_VERSION:
            ir_version = value
        elif field == MODEL_METADATA_PROPS and entry_key(value) in metadata:
            continue
        else:
            rest.append(raw)
    if ir_version is None:
        raise ExportError("the exported ONNX file has no ir_version")
    parts.append(encode_varint(min(ir_version, MAX_IR_VERSION)))
    parts.extend(rest)
    parts.extend(string_entry(k, v) for k, v in metadata.items())
    return b"".join(parts)


def entry_key(entry: bytes) -> str:
    for field, _wire, value, _raw in iter_fields(entry):
        if field == ENTRY_KEY:
            return value.decode()
    return ""


def describe_model(buf: bytes) -> dict:
    """The facts the checks need: ir_version, default-domain opset, op types, graph input/output names."""
    info = {"ir_version": None, "opset": None, "ops": Counter(), "inputs": [], "outputs": [], "metadata": []}
    for field, _wire, value, _raw in iter_fields(buf):
        if field == MODEL_IR_VERSION:
            info["ir_version"] = value
        elif field == MODEL_OPSET_IMPORT:
            opset = {f: v for f, _w, v, _r in iter_fields(value)}
            if opset.get(OPSET_DOMAIN, b"") in (b"", b"ai.onnx"):
                info["opset"] = opset.get(OPSET_VERSION)
        elif field == MODEL_METADATA_PROPS:
            info["metadata"].append(entry_key(value))
        elif field == MODEL_GRAPH:
            describe_graph(value, info)
    return info


def describe_graph(graph: bytes, info: dict) -> None:
    for field, _wire, value, _raw in iter_fields(graph):
        if field == GRAPH_NODE:
            node = {f: v for f, _w, v, _r in iter_fields(value) if f in (NODE_OP_TYPE, NODE_DOMAIN)}
            domain = node.get(NODE_DOMAIN, b"").decode()
            op = node.get(NODE_OP_TYPE, b"").decode()
            info["ops"][f"{domain}::{op}" if domain not in ("", "ai.onnx") else op] += 1
        elif field in (GRAPH_INPUT, GRAPH_OUTPUT):
            name = next((v.decode() for f, _w, v, _r in iter_fields(value) if f == VALUE_INFO_NAME), "")
            info["inputs" if field == GRAPH_INPUT else "outputs"].append(name)


def verify_model(info: dict, path: str, opset: int) -> None:
    bad_ops = sorted(op for op in info["ops"] if op not in ALLOWED_OPS)
    if bad_ops:
        raise ExportError(
            f"{path} contains ops stpmd's training engine cannot rebuild: {', '.join(bad_ops)} "
            f"(allowed: {', '.join(sorted(ALLOWED_OPS))})"
        )
    # Initializers may be listed as graph inputs by old exporters' IR; only real inputs matter here.
    if "input" not in info["inputs"]:
        raise ExportError(f"{path} has no graph input named 'input'")
    if info["outputs"] != list(OUTPUT_NAMES):
        raise ExportError(f"{path} has outputs {info['outputs']}, expected {list(OUTPUT_NAMES)}")
    if info["opset"] != opset:
        raise ExportError(f"{path} has opset {info['opset']}, expected {opset}")
    if info["ir_version"] is None or info["ir_version"] > MAX_IR_VERSION:
        raise ExportError(f"{path} has IR version {info['ir_version']}, expected at most {MAX_IR_VERSION}")


def optional_onnx_check(path: str) -> str:
    """Run the official checker when the `onnx` package happens to be installed; it is not required."""
    try:
        import onnx  # noqa: PLC0415 - optional dependency
    except ImportError:
        return "onnx checker not installed"
    try:
        onnx.checker.check_model(onnx.load(path))
    except Exception as err:  # noqa: BLE001 - any checker failure is an invalid export
        raise ExportError(f"{path} fails onnx.checker: {one_line(err)}") from err
    return "onnx checker passed"


# --------------------------------------------------------------------------------------------------------------
# --check: reference outputs from the original PyTorch model
# --------------------------------------------------------------------------------------------------------------


def write_float32_le(path: str, tensor) -> None:
    values = array("f", tensor.detach().to("cpu").float().contiguous().reshape(-1).tolist())
    if sys.byteorder != "little":
        values.byteswap()
    with open(path, "wb") as f:
        values.tofile(f)


def write_check_files(torch, reference, out: str, size: int, seed: int) -> str:
    """Write the input and the outputs of the original (unfolded) model, so a consumer can compare the ONNX
    graph against PyTorch itself rather than against the same folded weights."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, size, size, generator=generator)
    with torch.no_grad():
        outputs = reference(x)
    stem = out[: -len(".onnx")]
    manifest = {"seed": seed, "dtype": "float32", "byteorder": "little", "input": {}, "outputs": {}}

    def record(name: str, tensor) -> dict:
        file = f"{stem}.check-{name}.f32"
        write_float32_le(file, tensor)
        return {"file": os.path.basename(file), "shape": list(tensor.shape)}

    manifest["input"] = record("input", x)
    for name, tensor in zip(OUTPUT_NAMES, outputs):
        manifest["outputs"][name] = record(name, tensor)
    manifest_path = f"{stem}.check.json"
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest_path


# --------------------------------------------------------------------------------------------------------------


def one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def import_torch():
    try:
        import torch  # noqa: PLC0415 - imported lazily: slow, and not needed for --help
        import torchvision  # noqa: PLC0415
    except ImportError as err:
        raise ExportError(
            f"cannot import PyTorch/torchvision ({one_line(err)}); install Debian's python3-torch and "
            "python3-torchvision and run this script with /usr/bin/python3"
        ) from err
    return torch, torchvision


def run(args: argparse.Namespace) -> str:
    validate_args(args)
    torch, torchvision = import_torch()
    torch.manual_seed(args.seed)
    backbone = build_backbone(torchvision, args.arch)
    if args.weights is not None:
        load_weights(torch, backbone, args.arch, args.weights)
        source = os.path.basename(args.weights)
    else:
        randomise_batchnorm(torch, backbone, args.seed)
        source = "random"
    backbone.eval()

    reference = make_pyramid(torch, backbone).eval()
    # Fold a copy: the --check reference must stay the unfolded model.
    folded_model = copy.deepcopy(reference)
    folded = fold_batchnorm(torch, folded_model)

    out = args.out
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        export_onnx(torch, folded_model, tmp, args.opset)
        with open(tmp, "rb") as f:
            exported = f.read()
        metadata = {
            "arch": args.arch,
            "input_mean": INPUT_MEAN,
            "input_std": INPUT_STD,
            "padding": "symmetric",
            "source": source,
            "input": (
                "float32 NCHW RGB image, (x/255 - input_mean)/input_std per channel; H and W multiples of 16; "
                "outputs feat_s4/feat_s8/feat_s16 = layer1/layer2/layer3 at strides 4/8/16"
            ),
        }
        model_bytes = rewrite_model(exported, metadata)
        info = describe_model(model_bytes)
        verify_model(info, out, args.opset)
        with open(tmp, "wb") as f:
            f.write(model_bytes)
        checker = optional_onnx_check(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

    check_note = ""
    if args.check:
        check_note = f"; check files in {write_check_files(torch, reference, out, args.check_size, args.seed)}"
    ops = ", ".join(f"{op}x{n}" for op, n in sorted(info["ops"].items()))
    return (
        f"{PROG}: wrote {out} ({args.arch}, source {source}, opset {info['opset']}, IR {info['ir_version']}, "
        f"{folded} BatchNorm folded, ops {ops}, {len(model_bytes) / 1e6:.1f} MB, torch {torch.__version__}; "
        f"{checker}){check_note}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except UsageError as err:
        fail(str(err), 2)
    except ExportError as err:
        fail(str(err), 1)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
