#!/usr/bin/env python3
"""Zeroes the cubins of a CUDA library's .nv_fatbin that are not built for the given SM architectures.

    python3 benchmarks/prune-fatbin.py IN.so OUT.so 90[,100]

Why: ONNX Runtime's CUDA provider (230 MB) carries machine code for sm_75–sm_120 in 289 fatbin containers; a
GPU uses the entry of its own architecture. Zeroing the others' payloads in place (every header, size and offset
kept, so the ELF and each container stay valid) leaves the library loadable on that GPU and makes those bytes
compress to nothing: measured, 166 MB of cubins of which sm_90 is 32 MB; xz of the pruned library 38 MB. It prints
what it kept and zeroed per architecture. A GPU of another architecture finds no code for itself in the result.
"""
import re
import struct
import subprocess
import sys
from collections import Counter

FATBIN_MAGIC = 0xBA55ED50


def fatbin_section(path: str) -> tuple[int, int]:
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+\.nv_fatbin\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m:
            return int(m.group(1), 16), int(m.group(2), 16)
    sys.exit(f"prune-fatbin: {path} has no .nv_fatbin section")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    src, dst, archs = sys.argv[1], sys.argv[2], {int(a) for a in sys.argv[3].split(",")}
    data = bytearray(open(src, "rb").read())
    start, size = fatbin_section(src)
    kept, zeroed = Counter(), Counter()
    pos, end = start, start + size
    while pos < end:
        magic, _version, header, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # containers are 8-byte aligned
            pos += 8
            continue
        entry, stop = pos + header, pos + header + body
        while entry < stop:
            _kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            begin = entry + entry_header
            if arch in archs:
                kept[arch] += payload
            else:
                data[begin : begin + payload] = bytes(payload)
                zeroed[arch] += payload
            entry = begin + payload
        pos = stop
    if not kept:
        sys.exit(f"prune-fatbin: {src} has no cubins for sm_{sorted(archs)}; found sm_{sorted(zeroed)}")
    open(dst, "wb").write(data)
    mb = lambda c: ", ".join(f"sm_{a} {n / 1e6:.1f} MB" for a, n in sorted(c.items()))  # noqa: E731
    print(f"prune-fatbin: kept {mb(kept)}; zeroed {mb(zeroed)}")


if __name__ == "__main__":
    main()
