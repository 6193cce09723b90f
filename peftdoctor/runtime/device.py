"""Pure choices of device and dtype, testable without a GPU."""

from __future__ import annotations

DTYPES = ("float32", "float16", "bfloat16")


def pick_device(requested: str, *, cuda_count: int, mps_available: bool) -> str:
    """`auto` means the first GPU (cuda, then mps), else the cpu."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if cuda_count > 0:
            return "cuda:0"
        return "mps" if mps_available else "cpu"
    if requested == "cuda":
        requested = "cuda:0"
    if requested.startswith("cuda:"):
        index = requested.split(":", 1)[1]
        if not index.isdigit():
            raise ValueError(f"bad device '{requested}' (use auto, cpu, cuda, cuda:N or mps)")
        if int(index) >= cuda_count:
            raise ValueError(f"device '{requested}' asked for but {cuda_count} CUDA device(s) are visible")
        return requested
    if requested == "mps":
        if not mps_available:
            raise ValueError("device 'mps' asked for but MPS is not available")
        return "mps"
    if requested == "cpu":
        return "cpu"
    raise ValueError(f"bad device '{requested}' (use auto, cpu, cuda, cuda:N or mps)")


def pick_dtype(requested: str, base_config: dict) -> str:
    """`auto` means the dtype recorded in the base's config.json, else float32."""
    requested = (requested or "auto").strip().lower()
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"bad dtype '{requested}' (use auto, {', '.join(DTYPES)})")
        return requested
    recorded = base_config.get("dtype") or base_config.get("torch_dtype")
    text_config = base_config.get("text_config")
    if not recorded and isinstance(text_config, dict):
        recorded = text_config.get("dtype") or text_config.get("torch_dtype")
    if isinstance(recorded, str) and recorded.replace("torch.", "") in DTYPES:
        return recorded.replace("torch.", "")
    return "float32"


# Relative tolerance of merged-vs-unmerged outputs and of restored weights, by
# compute dtype. fp16 keeps 11 mantissa bits, bf16 only 8.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def tolerance_for(dtype: str) -> float:
    return TOLERANCE.get(dtype, 5e-2)
