"""`peftdoctor inspect`: find the adapters under the PATHs and run the PD6xx checks on each.

Header-level only: nothing here imports torch, transformers or peft. The deep
checks (PD7xx) are imported lazily, and only when asked for.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from peftdoctor.config import Config
from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect import checks
from peftdoctor.inspect.adapter_config import ConfigUnreadable, check_config, load_adapter_config
from peftdoctor.inspect.base_checks import check_base_shapes, check_targets, check_task_head, known_names, \
    read_base, unmatched_modules_to_save
from peftdoctor.inspect.base_model import base_vocab_size, resolve_base
from peftdoctor.inspect.discover import InputError, find_adapters
from peftdoctor.inspect.embedding_checks import check_embedding_rows, check_tied_embeddings
from peftdoctor.inspect.findings import finding
from peftdoctor.inspect.init_checks import check_unconverted_init
from peftdoctor.inspect.lora_file import inspect_lora_files, lora_files
from peftdoctor.inspect.model_folder import inspect_model_folder, is_model_folder
from peftdoctor.inspect.pickle_scan import PickleUnreadable, is_safe, pickle_globals
from peftdoctor.inspect.safetensors_header import read_header
from peftdoctor.inspect.scale_checks import check_scales
from peftdoctor.inspect.tokenizer_files import token_count
from peftdoctor.inspect.values import numpy_available, open_values

__all__ = ["InputError", "InspectResult", "inspect_paths", "inspect_adapter"]

SAFETENSORS, PICKLE = "adapter_model.safetensors", "adapter_model.bin"


@dataclass
class InspectResult:
    findings: list[Finding] = field(default_factory=list)
    adapters_checked: int = 0
    summaries: list[dict] = field(default_factory=list)  # summary.summary_data of each readable adapter


def inspect_paths(paths, *, config: Config, base: str | None = None, deep: bool = False, device: str = "auto",
                  dtype: str = "auto", device_map=None, merge_check: bool = True,
                  show_summary: bool = True, color: bool | None = None) -> InspectResult:
    """Inspect every adapter under `paths`; InputError for a PATH that does not exist.

    `config`: a Config for every adapter, or a config.NearestConfigs giving each its own.
    `show_summary`: print each adapter's table on stdout (and deep-check progress on stderr), in `color`
    (see reporters.text_format.console_for).
    """
    result = InspectResult()
    console = err_console = None
    if show_summary:
        from peftdoctor.reporters.text_format import console_for

        console = console_for(sys.stdout, color)
        err_console = console_for(sys.stderr, color)
    inspected: dict[Path, checks.Adapter] = {}
    for folder in find_adapters(paths):
        folder_config = config.for_path(folder)  # the adapter's nearest config (see config.NearestConfigs)
        try:
            found, adapter = inspect_adapter(folder, config=folder_config, base=base)
        except PermissionError as exc:  # a folder or file of the adapter this user may not read
            found, adapter = [finding("PD600", f"cannot read {exc.filename or folder}: {exc.strerror}",
                                      str(folder))], None
        except Exception as exc:  # noqa: BLE001 - one odd adapter must not stop the run or print a traceback
            found, adapter = [_internal_error(folder, exc)], None
        result.adapters_checked += 1
        if adapter is not None:
            inspected[folder] = adapter
            from peftdoctor.inspect.summary import print_summary, summary_data

            result.summaries.append(summary_data(adapter))
            if console is not None:
                print_summary(adapter, console)
        if deep and adapter is not None:
            from peftdoctor.runtime.deep import DeepError, deep_check

            local_base = base or (str(adapter.base_dir) if adapter.base_dir else None)
            try:
                found += drop_repeats(found, deep_check(folder, local_base, device=device, dtype=dtype,
                                                        device_map=device_map, merge_check=merge_check,
                                                        console=err_console))
            except DeepError as exc:  # missing runtime extra, base not local, bad --device/--dtype
                raise InputError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - a model we do not handle must not print a traceback
                found.append(_internal_error(folder, exc))
        result.findings += _apply_config(found, folder_config)
    if len(inspected) == 2:
        later = config.for_path(list(inspected)[-1])
        result.findings += _apply_config(_compare_pair(paths, inspected, later), later)
    result.findings.sort(key=Finding.sort_key)
    return result


# Deep findings that a header finding already states (header code -> the deep findings it covers).
DEEP_REPEATS = {
    "PD613": lambda f: f.code == "PD701" and "unmatched" in f.extra,  # targets that match nothing
    "PD614": lambda f: f.code == "PD701" and "random" in f.extra,  # a head random on every load
    "PD609": lambda f: f.code == "PD701" and "random" in f.extra,
    "PD610": lambda f: f.code == "PD705" and "tokenizer" in f.extra,  # token ids without a trained row
    "PD620": lambda f: f.code == "PD705" and ("tokenizer" in f.extra or "saved_rows" in f.extra),
}


def drop_repeats(header: list[Finding], deep: list[Finding]) -> list[Finding]:
    """The deep findings that no header finding of the same adapter already said."""
    covers = [DEEP_REPEATS[item.code] for item in header if item.code in DEEP_REPEATS]
    return [item for item in deep if not any(cover(item) for cover in covers)]


def _compare_pair(paths, inspected: dict, config: Config) -> list[Finding]:
    """PD709 when the two PATHs are two checkpoints of one adapter saved at different steps."""
    if len(paths) != 2:
        return []
    folders = [Path(p).parent if Path(p).is_file() else Path(p) for p in paths]
    first, second = (inspected.get(folder) for folder in folders)
    if first is None or second is None or not config.is_enabled("PD709", str(second.weights)):
        return []
    from peftdoctor.inspect.compare import compare_checkpoints, in_step_order

    pair = in_step_order(first, second)
    return compare_checkpoints(*pair) if pair else []


def _apply_config(found: list[Finding], config: Config) -> list[Finding]:
    return [config.apply_severity(item) for item in found if config.is_enabled(item.code, item.path)]


def inspect_adapter(folder: Path, *, config: Config, base: str | None = None
                    ) -> tuple[list[Finding], checks.Adapter | None]:
    """The header-level findings of one adapter folder, and its parsed index (None if unusable)."""
    if is_model_folder(folder):
        return inspect_model_folder(folder, base), None
    if lora_files(folder):  # a diffusers / kohya-style LoRA file, no adapter_config.json
        return inspect_lora_files(folder), None
    try:
        adapter_config = load_adapter_config(folder)
    except ConfigUnreadable as exc:
        return [finding("PD600", str(exc), str(folder))], None
    config_path = str(folder / "adapter_config.json")
    found = check_config(adapter_config, config_path)
    named_base = base or adapter_config.get("base_model_name_or_path")
    base_dir = resolve_base(named_base, folder)
    if base is None and base_dir is None:
        what = f"base model {named_base!r}" if named_base else "no base_model_name_or_path, so the base model"
        found.append(finding("PD612", f"{what} is not available locally (not a folder, not in the HF cache)",
                             config_path, hint="Deep checks need the base: pass --base FOLDER."))

    safetensors_path, pickle_path = folder / SAFETENSORS, folder / PICKLE
    if safetensors_path.exists():  # not only a regular file: a FIFO there is reported by read_header
        weights = safetensors_path
    elif pickle_path.exists():
        return found + _check_pickle(pickle_path), None
    else:
        found.append(finding("PD602", f"no {SAFETENSORS} or {PICKLE} in {folder}", str(folder),
                             hint="Save the adapter with model.save_pretrained(folder)."))
        return found, None

    header = read_header(weights)
    if not header.ok:
        more = f" (and {len(header.problems) - 1} more problems)" if len(header.problems) > 1 else ""
        found.append(finding("PD602", f"{header.problems[0]}{more}", str(weights),
                             hint="The file is damaged: save the adapter again or copy it again.",
                             problems=header.problems))
        return found, None
    adapter = checks.Adapter(folder=folder, config=adapter_config, weights=weights, tensors=header.tensors,
                             base_dir=base_dir)
    found += _tensor_checks(adapter, config)
    return found, adapter


def _internal_error(folder: Path, exc: Exception) -> Finding:
    return Finding(code="PD002", message=f"peftdoctor could not inspect this adapter ({type(exc).__name__}: {exc})",
                   path=str(folder), line=0, column=0, severity=Severity.WARNING,
                   hint="please report this with the adapter_config.json attached; other adapters were checked")


def _tensor_checks(adapter: checks.Adapter, config: Config) -> list[Finding]:
    weights = str(adapter.weights)
    found = []
    base = read_base(adapter.base_dir)
    foreign = checks.check_foreign_keys(adapter)
    found += foreign
    for check in (checks.check_nested_keys, checks.check_shapes, checks.check_placeholders,
                  checks.check_dtypes):
        found += check(adapter)
    skip = unmatched_modules_to_save(adapter.config, known_names(adapter, base)) if base else ()
    found += checks.check_heads(adapter, skip=skip)
    if not foreign:  # keys of another scheme say nothing about peft's modules
        found += check_targets(adapter, base)
        found += check_base_shapes(adapter, base)
        found += check_tied_embeddings(adapter, base)
    found += check_task_head(adapter, base)
    found += check_unconverted_init(adapter)
    found += check_scales(adapter)
    tokens = token_count(adapter.folder)
    vocab_size = base_vocab_size(adapter.base_dir) if adapter.base_dir is not None else None
    if adapter.base_dir is not None and config.is_enabled("PD610", str(adapter.folder)):
        found += checks.check_new_tokens(adapter, tokens, vocab_size)
    found += check_embedding_rows(adapter, tokens, vocab_size)
    wants_values = [c for c in ("PD605", "PD606") if config.is_enabled(c, weights)]
    if wants_values and numpy_available():
        with open_values(weights) as reader:
            adapter.values = reader
            if "PD605" in wants_values:
                found += checks.check_untrained(adapter)
            if "PD606" in wants_values:
                found += checks.check_non_finite(adapter)
            adapter.values = None
    return found


def _check_pickle(path: Path) -> list[Finding]:
    try:
        imported = pickle_globals(str(path))
    except PickleUnreadable as exc:
        return [finding("PD602", f"cannot read the pickle: {exc}", str(path))]
    unsafe = sorted({f"{module}.{name}" for module, name in imported if not is_safe(module, name)})
    if not unsafe:
        return []
    return [finding("PD611", f"unpickling would import {', '.join(unsafe)}: not needed to rebuild tensors, "
                             "this file can run code when loaded", str(path),
                    hint="Do not load it with torch.load(weights_only=False); convert trusted adapters to "
                         "safetensors (save_pretrained(..., safe_serialization=True)).",
                    globals=unsafe)]
