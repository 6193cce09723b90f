"""What one adapter holds: the short table printed before the findings, and the same facts for JSON."""

from __future__ import annotations

from collections import Counter

from peftdoctor.inspect.checks import Adapter


def summary_rows(adapter: Adapter) -> list[tuple[str, str]]:
    config = adapter.config
    targets = sorted({module.rsplit(".", 1)[-1] for module, _, _ in adapter.lora_tensors()})
    dtypes = Counter(t.dtype for t in adapter.tensors)
    rows = [
        ("peft type", f"{config.get('peft_type')}" + (f" ({config['task_type']})" if config.get("task_type") else "")),
        ("base model", str(config.get("base_model_name_or_path") or "-")),
    ]
    if "r" in config:
        rows.append(("r / alpha", f"{config.get('r')} / {config.get('lora_alpha', '-')}"))
    rows += [
        ("target modules", ", ".join(targets) if targets else "-"),
        ("tensors", f"{len(adapter.tensors)}"),
        ("parameters", f"{sum(t.numel for t in adapter.tensors):,}"),
        ("dtypes", ", ".join(f"{d} x{n}" for d, n in dtypes.most_common()) or "-"),
        ("bytes", _size(sum(t.nbytes for t in adapter.tensors))),
    ]
    return rows


def summary_data(adapter: Adapter) -> dict:
    """The table's facts as numbers and lists (the `adapters` entries of `inspect --format json`)."""
    config = adapter.config
    dtypes = Counter(t.dtype for t in adapter.tensors)
    return {
        "path": str(adapter.folder),
        "weights": str(adapter.weights),
        "peft_type": config.get("peft_type"),
        "task_type": config.get("task_type"),
        "base_model": config.get("base_model_name_or_path"),
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module, _, _ in adapter.lora_tensors()}),
        "tensors": len(adapter.tensors),
        "parameters": sum(t.numel for t in adapter.tensors),
        "dtypes": dict(dtypes.most_common()),
        "bytes": sum(t.nbytes for t in adapter.tensors),
    }


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def print_summary(adapter: Adapter, console) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=escape(str(adapter.weights)), title_justify="left", show_header=False, box=None,
                  padding=(0, 2, 0, 0))
    table.add_column(style="dim")
    table.add_column()
    for label, value in summary_rows(adapter):
        table.add_row(Text(label), Text(value))
    console.print(table)
    console.print()
