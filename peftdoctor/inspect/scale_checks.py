"""PD619: the LoRA scale peft applies per module, when it is not lora_alpha / r (rsLoRA, rank/alpha patterns).

peft scales each module's update by alpha_m / r_m (alpha_m / sqrt(r_m) with
use_rslora), where rank_pattern / alpha_pattern override r and lora_alpha per
module. A loader that reads only r, lora_alpha (and use_rslora) applies one scale
to every module; vLLM's PEFTHelper is such a loader.
"""

from __future__ import annotations

import math
from collections import Counter

from peftdoctor.finding import Finding
from peftdoctor.inspect.pattern_keys import UNKNOWN, PatternKeys
from peftdoctor.inspect.findings import finding


def _number(value) -> bool:
    return type(value) in (int, float) and value > 0


def _scale(alpha: float, rank: float, rslora: bool) -> float:
    return alpha / (math.sqrt(rank) if rslora else rank)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def effective_scales(adapter) -> Counter | None:
    """(alpha_m, r_m) -> number of LoRA modules, as peft resolves the patterns; None when the config is unusable
    or disagrees with the saved ranks."""
    config = adapter.config
    rank, alpha = config.get("r"), config.get("lora_alpha")
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    if not (_number(rank) and _number(alpha) and isinstance(rank_pattern, dict) and isinstance(alpha_pattern, dict)):
        return None
    groups: Counter = Counter()
    saved_ranks = {module: tensor.shape[0] for module, role, tensor in adapter.lora_tensors("lora_A")
                   if len(tensor.shape) == 2}
    modules = sorted({module for module, _, _ in adapter.lora_tensors()})
    rank_keys, alpha_keys = PatternKeys(rank_pattern, modules), PatternKeys(alpha_pattern, modules)
    for module in modules:
        rank_key, alpha_key = rank_keys.key_for(module), alpha_keys.key_for(module)
        if rank_key is UNKNOWN or alpha_key is UNKNOWN:
            return None  # a key that cannot be matched safely: the scales cannot be told
        module_rank = rank_pattern[rank_key] if rank_key is not None else rank
        module_alpha = alpha_pattern[alpha_key] if alpha_key is not None else alpha
        if not (_number(module_rank) and _number(module_alpha)) or saved_ranks.get(module, module_rank) != module_rank:
            return None  # a config the weights contradict says nothing about the scales (PD604 reports it)
        groups[(module_alpha, module_rank)] += 1
    return groups


def check_scales(adapter) -> list[Finding]:
    """PD619 (info): rsLoRA or rank/alpha patterns, with the scales peft applies and what a plain loader applies."""
    config = adapter.config
    rslora = config.get("use_rslora") is True
    patterned = bool(config.get("rank_pattern")) or bool(config.get("alpha_pattern"))
    if adapter.peft_type != "LORA" or not (rslora or patterned):
        return []
    groups = effective_scales(adapter)
    if not groups:
        return []
    rank, alpha = config["r"], config["lora_alpha"]
    formula = "lora_alpha / sqrt(r)" if rslora else "lora_alpha / r"
    listed = ", ".join(f"{_fmt(_scale(a, r, rslora))} (alpha {_fmt(a)}, r {_fmt(r)}) on {n} module{'s' * (n > 1)}"
                       for (a, r), n in sorted(groups.items(), key=lambda item: -item[1]))
    notes = []
    uniform = _scale(alpha, rank, rslora)
    wrong = sum(n for (a, r), n in groups.items() if not math.isclose(_scale(a, r, rslora), uniform))
    if wrong:
        notes.append(f"vLLM reads only r, lora_alpha and use_rslora and applies {_fmt(uniform)} to every module, so "
                     f"{wrong} of {sum(groups.values())} modules are served with another scale than trained "
                     "(rank_pattern / alpha_pattern ignored)")
    if rslora:
        notes.append(f"a loader that does not read use_rslora applies lora_alpha / r = {_fmt(alpha / rank)} instead "
                     f"of lora_alpha / sqrt(r) = {_fmt(uniform)}")
    if not notes:
        return []  # patterns that repeat r and lora_alpha: every loader applies the same scale
    parts = [f"peft scales the LoRA update by {formula} per module: {listed}", *notes]
    return [finding(
        "PD619", "; ".join(parts), str(adapter.folder / "adapter_config.json"),
        hint="Check what your serving engine reads before deploying; merging the adapter (merge_and_unload) "
             "bakes the scales in and needs no LoRA support at serving time.",
        scales={f"{_fmt(a)}/{_fmt(r)}": n for (a, r), n in groups.items()})]
