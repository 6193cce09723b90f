"""`deep_check`: load a saved adapter onto its base with transformers + peft and run PD701-PD706.

Importing this module is light; torch, transformers and peft are imported when
`deep_check` runs. Errors that stop the check are `DeepError` (one line, naming
the input); `RuntimeMissing` is the one for a missing `peftdoctor[runtime]`.
"""

from __future__ import annotations

import time
from pathlib import Path

from peftdoctor.finding import Finding, Severity
from peftdoctor.runtime.errors import BaseNotFound, DeepError, RuntimeMissing

__all__ = ["deep_check", "DeepError", "RuntimeMissing", "BaseNotFound", "resolve_device"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json")


def resolve_device(requested: str) -> str:
    """The device string for `--device`, asking torch what is there."""
    import torch

    from peftdoctor.runtime.device import pick_device

    mps = getattr(torch.backends, "mps", None)
    try:
        return pick_device(requested, cuda_count=torch.cuda.device_count(),
                           mps_available=bool(mps and mps.is_available()))
    except ValueError as exc:
        raise DeepError(str(exc)) from None


class _Steps:
    """A rich progress line on `console`, or nothing."""

    def __init__(self, console, label: str):
        self.console, self.label, self.progress, self.task = console, label, None, None

    def __enter__(self):
        if self.console is not None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label)
        return self

    def step(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.label}: {text}")

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def _tokenizer_len(adapter_dir: Path) -> int | None:
    if not any((adapter_dir / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(str(adapter_dir), local_files_only=True))
    except Exception:  # an unreadable tokenizer is the header checks' business
        return None


def _head_labels(shapes: dict, adapter_config: dict) -> dict:
    """num_labels from a saved classification head, so the base is built with the same head."""
    if adapter_config.get("task_type") not in ("SEQ_CLS", "TOKEN_CLS"):
        return {}
    for key, shape in shapes.items():
        if len(shape) == 2 and (key.endswith("score.weight") or key.endswith("classifier.weight")
                                or key.endswith("classifier.out_proj.weight")):
            return {"num_labels": shape[0]}
    return {}


def deep_check(adapter_dir: Path, base: str | None, *, device: str = "auto", dtype: str = "auto",
               device_map=None, merge_check: bool = True, console=None,
               timings: dict | None = None) -> list[Finding]:
    """Load `adapter_dir` onto `base` (offline) and return the PD7xx findings.

    `timings`, when given, receives seconds per phase: import, load, forward, merge.
    """
    from peftdoctor.runtime import loading
    from peftdoctor.runtime.device import pick_dtype

    adapter_dir = Path(adapter_dir)
    where = str(adapter_dir)
    timings = {} if timings is None else timings
    start = time.perf_counter()
    loading.require_runtime()
    import torch

    from peftdoctor.runtime import checks

    timings["import"] = time.perf_counter() - start

    adapter_config = loading.read_json(adapter_dir / "adapter_config.json")
    base_folder = loading.resolve_base(base, adapter_config, adapter_dir)
    base_config = loading.read_json(base_folder / "config.json")
    try:
        dtype_name = pick_dtype(dtype, base_config)
    except ValueError as exc:
        raise DeepError(str(exc)) from None
    device_name = "cpu" if device_map else resolve_device(device)
    shapes = loading.adapter_shapes(loading.adapter_weights_file(adapter_dir))
    quantized = bool(base_config.get("quantization_config"))

    findings: list[Finding] = []
    with _Steps(console, f"deep inspect {adapter_dir.name}") as steps, torch.inference_mode(False):
        start = time.perf_counter()
        steps.step(f"loading base {base_folder.name} ({dtype_name}, {device_map or device_name})")
        cls = loading.model_class(adapter_config, base_config)
        model, base_missing = loading.load_base(base_folder, cls, dtype=dtype_name, device=device_name,
                                                device_map=device_map, extra=_head_labels(shapes, adapter_config))
        steps.step("checking embeddings")
        tokenizer_len = _tokenizer_len(adapter_dir)
        resize, embed = checks.plan_embeddings(model, shapes, adapter_config, tokenizer_len, where)
        findings += embed
        if resize is not None:
            model.resize_token_embeddings(resize)
        embedding = checks.token_embedding(model)
        rows = embedding.weight.shape[0] if embedding is not None else 2
        steps.step("loading adapter")
        loaded = loading.load_adapter(model, adapter_dir, trainable=True)
        timings["load"] = time.perf_counter() - start
        findings += checks.head_findings(base_missing, shapes, where)
        if loaded.model is None:
            findings.append(checks._finding("PD701", f"the adapter does not load onto this base: {loaded.error}",
                                            where, hint="check --base: it must be the model the adapter was "
                                            "trained on"))
            findings += checks.nesting_findings(None, shapes, where)
            return findings
        peft_model = loaded.model
        findings += checks.key_findings(loaded, shapes, where)
        findings += checks.target_findings(peft_model, adapter_config, where)
        findings += checks.nesting_findings(peft_model, shapes, where)
        if loaded.trainable:
            findings += checks.trainable_findings(peft_model, where)
        steps.step("running forward passes")
        embedding = checks.token_embedding(peft_model)
        input_device = embedding.weight.device if embedding is not None else next(peft_model.parameters()).device
        try:
            findings += checks.forward_findings(peft_model, dtype=dtype_name, quantized=quantized, rows=rows,
                                                device=input_device, merge_check=merge_check, where=where,
                                                timings=timings, not_loaded=bool(loaded.missing_keys))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # a model our batch does not fit
            findings.append(checks._finding(
                "PD702", f"forward passes skipped, the model did not run on a token batch: "
                f"{' '.join(str(exc).split())[:200]}", where, Severity.WARNING))
    return findings
