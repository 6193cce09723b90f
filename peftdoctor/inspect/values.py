"""Look at tensor values one at a time through a memory map (numpy, never torch).

Floats are viewed as unsigned integers and tested with bit masks, so bf16 and
fp8 need no special support and nothing is converted. A tensor is read in chunks
of CHUNK_BYTES, and the pages of each chunk are handed back to the kernel once
it is tested (madvise DONTNEED; the map is read-only and file-backed, so nothing
is lost), so memory stays at a few chunks whatever the tensor's size; `all_zero`
stops at the first chunk that is not zero.
"""

from __future__ import annotations

import mmap
from contextlib import contextmanager

from peftdoctor import regular_file
from peftdoctor.inspect.safetensors_header import TensorInfo

# dtype -> (unsigned view, exponent mask, mask without the sign bit)
_FLOAT_BITS = {
    "F16": ("<u2", 0x7C00, 0x7FFF),
    "BF16": ("<u2", 0x7F80, 0x7FFF),
    "F32": ("<u4", 0x7F800000, 0x7FFFFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x7FFFFFFFFFFFFFFF),
    "F8_E5M2": ("u1", 0x7C, 0x7F),
}


def numpy_available() -> bool:
    from importlib.util import find_spec

    return find_spec("numpy") is not None


CHUNK_BYTES = 4 << 20


class ValueReader:
    """Memory-maps one safetensors file; each call reads one tensor, a chunk at a time."""

    def __init__(self, mapped: mmap.mmap):
        self._map = mapped

    def _chunks(self, tensor: TensorInfo, view: str):
        """numpy views of consecutive pieces of `tensor` (as `view` elements), each released after use."""
        import numpy as np

        itemsize = np.dtype(view).itemsize
        per_chunk = max(CHUNK_BYTES // itemsize, 1)
        count = tensor.nbytes // itemsize
        for first in range(0, count, per_chunk):
            offset = tensor.start + first * itemsize
            size = min(per_chunk, count - first)
            yield np.frombuffer(self._map, dtype=view, count=size, offset=offset)
            self._release(offset, offset + size * itemsize)

    def _release(self, begin: int, end: int) -> None:
        """Drop the whole pages of [begin, end) from this process (read again from the file if needed)."""
        if not hasattr(self._map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = begin - begin % mmap.PAGESIZE
        last = end - end % mmap.PAGESIZE
        if last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    def all_zero(self, tensor: TensorInfo) -> bool:
        """True when every element is +0 or -0 (peft's lora_B initialisation)."""
        if tensor.numel == 0:
            return False
        if tensor.dtype not in _FLOAT_BITS:
            return not any(chunk.any() for chunk in self._chunks(tensor, "u1"))
        view, _, magnitude = _FLOAT_BITS[tensor.dtype]
        return not any((chunk & magnitude).any() for chunk in self._chunks(tensor, view))

    def count_non_finite(self, tensor: TensorInfo) -> int:
        """How many elements are NaN or Inf (0 for integer dtypes)."""
        if tensor.numel == 0:
            return 0
        if tensor.dtype == "F8_E4M3":  # no Inf; NaN is S.1111.111
            return sum(int(((chunk & 0x7F) == 0x7F).sum()) for chunk in self._chunks(tensor, "u1"))
        if tensor.dtype not in _FLOAT_BITS:
            return 0
        view, exponent, _ = _FLOAT_BITS[tensor.dtype]
        return sum(int(((chunk & exponent) == exponent).sum()) for chunk in self._chunks(tensor, view))


@contextmanager
def open_values(path: str):
    """A ValueReader over `path`, or None when the file cannot be mapped."""
    try:
        stream = regular_file.open_regular(path)
    except OSError:
        yield None
        return
    with stream:
        try:
            mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            yield None
            return
        try:
            yield ValueReader(mapped)
        finally:
            try:
                mapped.close()
            except BufferError:  # a numpy view is still alive; the map closes with it
                pass
