"""Read and validate a safetensors header by hand: no tensor is loaded.

The file is 8 bytes of little-endian header length, a JSON header mapping
tensor names to dtype, shape and data offsets, then the raw data. A damaged
or hostile file must give a clear problem list, never an exception, so every
field is checked before it is trusted.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from peftdoctor import regular_file

# Bits per element of every dtype string safetensors writes.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16,
    "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
# safetensors itself refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it; `start`/`end` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass
class Header:
    """A parsed header: the tensors that are safe to use and the problems found."""

    path: str
    tensors: list[TensorInfo] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    file_size: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header of `path`; problems are listed, never raised."""
    path = os.fspath(path)
    header = Header(path=path)
    try:
        with regular_file.open_regular(path) as stream:
            header.file_size = os.fstat(stream.fileno()).st_size
            prefix = stream.read(8)
            if len(prefix) < 8:
                header.problems.append(f"file is {header.file_size} bytes, too short for a safetensors header")
                return header
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length < 2:
                header.problems.append(f"header length {length} is absurd (file is {header.file_size} bytes)")
                return header
            if 8 + length > header.file_size:
                header.problems.append(
                    f"header length {length} runs past the end of the file ({header.file_size} bytes): truncated"
                )
                return header
            raw = stream.read(length)
    except OSError as exc:
        header.problems.append(f"cannot read: {exc.strerror or exc}")
        return header
    try:
        table = regular_file.parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        header.problems.append(f"header is not valid JSON: {exc}")
        return header
    if not isinstance(table, dict):
        header.problems.append("header is not a JSON object")
        return header
    _validate_entries(header, table, data_start=8 + length)
    return header


def _validate_entries(header: Header, table: dict, data_start: int) -> None:
    data_size = header.file_size - data_start
    metadata = table.pop("__metadata__", None)
    if metadata is not None:
        if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()):
            header.metadata = metadata
        else:
            header.problems.append("__metadata__ must map strings to strings")
    spans: list[tuple[int, int, str]] = []
    for name, entry in table.items():
        problem = _entry_problem(name, entry)
        if problem:
            header.problems.append(problem)
            continue
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        info = TensorInfo(name, entry["dtype"], shape, data_start + begin, data_start + end)
        bits = info.numel * DTYPE_BITS[info.dtype]
        if bits % 8 or bits // 8 != end - begin:
            header.problems.append(
                f"tensor '{name}': {end - begin} bytes of data do not fit dtype {info.dtype} shape {list(shape)}"
            )
            continue
        header.tensors.append(info)
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin < position:
            header.problems.append(f"tensor '{name}' overlaps the tensor before it (offset {begin} < {position})")
        elif begin > position:
            header.problems.append(f"hole of {begin - position} bytes before tensor '{name}'")
        position = max(position, end)
    if position > data_size:
        header.problems.append(
            f"truncated: the header needs {position} bytes of data but the file has {max(data_size, 0)}"
        )
    elif position < data_size and spans:
        header.problems.append(f"{data_size - position} unexpected bytes after the last tensor")
    if header.problems:
        header.tensors = [t for t in header.tensors if t.end <= header.file_size]


def _entry_problem(name: str, entry) -> str:
    if not isinstance(entry, dict):
        return f"tensor '{name}': entry is not an object"
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"tensor '{name}': unknown dtype {dtype!r}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return f"tensor '{name}': shape {shape!r} is not a list of non-negative integers"
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return f"tensor '{name}': data_offsets {offsets!r} are not [begin, end] with begin <= end"
    return ""
