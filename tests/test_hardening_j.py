"""Hostile inputs to `inspect` (issue 21): pattern keys, special files, odd folder names, printable output.

Each test builds the input on disk and runs the real CLI or the real function; none is timed.
"""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

from peftdoctor.inspect.pattern_keys import UNKNOWN, PatternKeys


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, **kwargs)


def write_adapter(folder: Path, layers: int, rank_pattern: dict, odd_rank_layer: int = 0) -> Path:
    """A LoRA adapter of `layers` q_proj modules of rank 2, one (odd_rank_layer) of rank 3, and r = 2."""
    folder.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for index in range(layers):
        rank = 3 if index == odd_rank_layer else 2
        for role, shape in (("lora_A", [rank, 1]), ("lora_B", [1, rank])):
            name = f"base_model.model.model.layers.{index}.self_attn.q_proj.{role}.weight"
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * rank]}
            offset += 4 * rank
    blob = json.dumps(header).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\x01" * offset)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
              "rank_pattern": rank_pattern}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


# --- rank_pattern / alpha_pattern keys --------------------------------------------------------------------

def peft_key(patterns, module):
    """peft's own rule (tuners/lora/model.py): the first key with re.match(rf"(.*\\.)?({key})$", module)."""
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", module)), None)


def test_pattern_keys_agree_with_peft_on_plain_and_safe_regex_keys():
    rng = random.Random(0)
    parts = ["model", "layers", "0", "1", "12", "self_attn", "q_proj", "v_proj", "mlp", "up_proj"]
    modules = sorted({".".join(rng.choice(parts) for _ in range(rng.randint(1, 5))) for _ in range(300)})
    keys = [".".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    keys += [r"layers\.\d+\.q_proj", r"(q|v)_proj", r"mlp\.up_proj", r"1[0-9]\.self_attn"]
    rng.shuffle(keys)
    patterns = dict.fromkeys(keys, 1)
    index = PatternKeys(patterns, modules)
    for module in modules:
        assert index.key_for(module) == peft_key(patterns, module), module
    assert sorted(index.unmatched()) == sorted(k for k in patterns if not any(peft_key([k], m) for m in modules))


def test_a_catastrophic_backtracking_key_is_unknown_and_never_tried():
    evil = "(a|aa)+(b|bb)+(c+)+" + "$" * 21  # 40 characters; re.match on 'aaaa...x' backtracks exponentially
    assert len(evil) == 40
    index = PatternKeys({evil: 4, "q_proj": 8}, ["a" * 60 + "x", "layers.0.q_proj"])
    assert index.key_for("a" * 60 + "x") is UNKNOWN  # returned at once: the key is refused before any match
    assert index.key_for("layers.0.q_proj") is UNKNOWN  # the evil key comes first in peft's order
    assert PatternKeys({"q_proj": 8, evil: 4}, []).key_for("layers.0.q_proj") == "q_proj"  # decided before it
    assert index.unmatched() == []  # nothing certain is claimed about an untried key


def test_many_keys_on_many_tensors_through_the_cli(tmp_path):
    """7,143 keys x 40,000 tensors: the per-key regex loop took minutes here, the suffix lookup a few seconds."""
    keys = {f"model.layers.{i}.self_attn.q_proj": 2 for i in range(1, 7143)} | {"not_a_module": 2}
    folder = write_adapter(tmp_path / "big", 20_000, keys)
    result = run_cli("inspect", str(folder), "--format", "json")
    messages = [f["message"] for f in json.loads(result.stdout)["findings"] if f["code"] == "PD604"]
    assert messages == ["module 'model.layers.0.self_attn.q_proj' has rank 3 but r = 2 in adapter_config.json",
                        "rank_pattern key 'not_a_module' matches no adapted module"]


def test_an_evil_key_in_the_config_leaves_the_module_unjudged(tmp_path):
    folder = write_adapter(tmp_path / "evil", 50, {"(a|aa)+(b|bb)+(c+)+$": 3, "layers.1.self_attn.q_proj": 2})
    result = run_cli("inspect", str(folder), "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    assert [f for f in json.loads(result.stdout)["findings"] if f["code"] in ("PD604", "PD002")] == []
