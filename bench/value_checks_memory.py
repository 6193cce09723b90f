"""Peak memory and time of inspect's value checks (PD605 all-zero, PD606 NaN/Inf) on one 1 GB tensor.

For each of F32, U8 and F8_E4M3 a safetensors file holding one tensor of about 1 GB is written to a temporary
folder (every element zero but the last, so the all-zero test must read it all), then a fresh interpreter
opens it with peftdoctor's ValueReader, runs both checks, and reports its peak RSS (including the mapped file
pages it touched) and the time of the checks. The file is deleted after each dtype.

    python bench/value_checks_memory.py [--gib 1.0]

The peftdoctor measured is the one Python imports: PYTHONPATH=/another/checkout gives that checkout's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, time
from peftdoctor.inspect.safetensors_header import read_header
from peftdoctor.inspect.values import open_values
header = read_header(sys.argv[1])
assert header.ok, header.problems
(tensor,) = header.tensors
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with open_values(sys.argv[1]) as reader:
    zero = reader.all_zero(tensor)
    bad = reader.count_non_finite(tensor)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{peak / 1024:.0f} {before / 1024:.0f} {seconds:.2f} {zero} {bad}")
"""

# dtype -> (bytes per element, the last element's bytes: not zero, and NaN where the dtype has one)
DTYPES = {"F32": (4, struct.pack("<I", 0x7FC00000)), "U8": (1, b"\x01"), "F8_E4M3": (1, b"\x7f")}


def write_tensor(path: Path, dtype: str, nbytes: int) -> None:
    size, last = DTYPES[dtype]
    count = nbytes // size
    header = json.dumps({"t": {"dtype": dtype, "shape": [count], "data_offsets": [0, count * size]}}).encode()
    block = b"\0" * (16 << 20)
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(header)) + header)
        left = count * size - size
        while left:  # real zero bytes, not a sparse hole: the pages must come from the file
            left -= stream.write(block[:min(left, len(block))])
        stream.write(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="tensor size in GiB")
    args = parser.parse_args()
    nbytes = int(args.gib * (1 << 30))
    print(f"{'dtype':<9} {'peak RSS':>9} {'before checks':>14} {'checks':>8}  result")
    with tempfile.TemporaryDirectory(prefix="pd-values-") as folder:
        for dtype in DTYPES:
            path = Path(folder) / f"{dtype}.safetensors"
            write_tensor(path, dtype, nbytes)
            try:
                # cwd: the folder, so `-c` does not import a peftdoctor from the working directory
                out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                                     cwd=folder, check=True).stdout.split()
            finally:
                os.unlink(path)
            peak, before, seconds, zero, bad = out
            print(f"{dtype:<9} {peak:>6} MB {before:>11} MB {seconds:>6} s  all zero {zero}, {bad} NaN/Inf")


if __name__ == "__main__":
    main()
