"""Look at tensor values one at a time through a memory map (numpy, never torch).

Floats are viewed as unsigned integers and tested with bit masks, so bf16 and
fp8 need no special support and nothing is converted or copied.
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


class ValueReader:
    """Memory-maps one safetensors file; each call reads one tensor."""

    def __init__(self, mapped: mmap.mmap):
        self._map = mapped

    def _bits(self, tensor: TensorInfo):
        import numpy as np

        view, _, _ = _FLOAT_BITS[tensor.dtype]
        return np.frombuffer(self._map, dtype=view, count=tensor.numel, offset=tensor.start)

    def all_zero(self, tensor: TensorInfo) -> bool:
        """True when every element is +0 or -0 (peft's lora_B initialisation)."""
        if tensor.numel == 0:
            return False
        if tensor.dtype not in _FLOAT_BITS:
            return not any(self._map[tensor.start:tensor.end])
        _, _, magnitude = _FLOAT_BITS[tensor.dtype]
        return not (self._bits(tensor) & magnitude).any()

    def count_non_finite(self, tensor: TensorInfo) -> int:
        """How many elements are NaN or Inf (0 for integer dtypes)."""
        if tensor.numel == 0:
            return 0
        if tensor.dtype == "F8_E4M3":  # no Inf; NaN is S.1111.111
            return int(((self._bits_u8(tensor) & 0x7F) == 0x7F).sum())
        if tensor.dtype not in _FLOAT_BITS:
            return 0
        _, exponent, _ = _FLOAT_BITS[tensor.dtype]
        return int(((self._bits(tensor) & exponent) == exponent).sum())

    def _bits_u8(self, tensor: TensorInfo):
        import numpy as np

        return np.frombuffer(self._map, dtype="u1", count=tensor.numel, offset=tensor.start)


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
