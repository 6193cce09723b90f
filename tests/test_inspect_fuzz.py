"""Damaged adapters never crash `inspect`: corrupted headers, truncations, malformed configs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.inspect.run import inspect_paths

GOOD = Path(__file__).resolve().parent.parent / "fixtures" / "adapters" / "good-llama"
CONFIG_VALUES = [
    ("r", "8"), ("r", None), ("r", -1), ("r", 1e9), ("target_modules", 5), ("target_modules", [1, 2]),
    ("target_modules", None), ("peft_type", 3), ("peft_type", "NOPE"), ("task_type", ["x"]),
    ("modules_to_save", "classifier"), ("modules_to_save", 7), ("rank_pattern", [1]), ("alpha_pattern", {"q": "x"}),
    ("base_model_name_or_path", 5), ("peft_version", "abc"), ("peft_version", 1), ("lora_alpha", "x"),
    ("layers_to_transform", "x"), ("trainable_token_indices", 5),
]
CONFIG_TEXTS = ["[]", "null", "1", '"x"', "{" * 5000 + "}" * 5000, "", "\x00\x01"]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    rng = random.Random(0)
    weights = (GOOD / "adapter_model.safetensors").read_bytes()
    config = json.loads((GOOD / "adapter_config.json").read_text())
    root = tmp_path_factory.mktemp("damaged")
    cases = []
    for _ in range(40):
        flipped = bytearray(weights)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(0, min(len(flipped), 600))] = rng.randrange(256)
        cases.append((bytes(flipped), json.dumps(config)))
    cases += [(weights[:cut], json.dumps(config)) for cut in (0, 3, 8, 9, 50, 200, len(weights) - 1)]
    cases += [(weights, json.dumps({**config, key: value})) for key, value in CONFIG_VALUES]
    cases += [(weights, text) for text in CONFIG_TEXTS]
    for index, (weight_bytes, config_text) in enumerate(cases):
        folder = root / f"case{index:03d}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(weight_bytes)
        (folder / "adapter_config.json").write_text(config_text)
    return root


def test_every_damaged_adapter_is_reported_without_an_internal_error(damaged):
    for folder in sorted(damaged.iterdir()):
        findings = inspect_paths([folder], config=Config(), show_summary=False).findings
        assert "PD002" not in {f.code for f in findings}, (folder.name, [f.message for f in findings])


def test_cli_over_all_damaged_adapters_has_no_traceback(damaged):
    result = subprocess.run([sys.executable, "-m", "peftdoctor", "inspect", str(damaged)], capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "PD602" in result.stdout and "PD600" in result.stdout
