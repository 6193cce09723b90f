"""`inspect` of a model folder (config.json + weights, no adapter_config.json): PD621 and PD622.

The folders are real merges made by peft in fixtures/make_adapters.py; no torch is imported here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from light_helpers import cli_in_fresh_process

from peftdoctor.config import Config
from peftdoctor.finding import Severity
from peftdoctor.inspect.run import inspect_paths

ROOT = Path(__file__).resolve().parent.parent
MERGED = ROOT / "fixtures" / "merged"
BF16_BASE = ROOT / "fixtures" / "bases" / "tiny-llama-bf16"


def inspect(folder, base=None):
    return inspect_paths([str(folder)], config=Config(), base=str(base) if base else None,
                         show_summary=False).findings


def copy_of(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(MERGED / name, target)
    return target


def test_pd621_lora_layers_saved_unmerged():
    [found] = inspect(MERGED / "lora-layers")
    assert found.code == "PD621" and found.severity == Severity.ERROR
    assert found.path == str(MERGED / "lora-layers") and found.extra["tensors"] == 12
    assert "'model.layers.0.self_attn.q_proj.weight'" in found.message and "randomly" in found.message


def test_pd622_float32_merge_of_a_bf16_base():
    [found] = inspect(MERGED / "float32", base=BF16_BASE)
    assert found.code == "PD622" and found.severity == Severity.WARNING
    assert found.extra == {"stored": "float32", "expected": "bfloat16"} and "2x the size" in found.message
    # without --base the folder's own config.json says float32 too: nothing to compare with
    assert inspect(MERGED / "float32") == []


def test_pd622_weights_wider_than_their_own_config(tmp_path):
    folder = copy_of("float32", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    [found] = inspect(folder)
    assert found.code == "PD622" and "its own config.json is bfloat16" in found.message


def test_pd622_good_merge_is_clean():
    assert inspect(MERGED / "good", base=BF16_BASE) == []
    assert inspect(MERGED / "good") == []


def test_pd622_no_tokenizer(tmp_path):
    folder = copy_of("good", tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    [found] = inspect(folder)
    assert found.code == "PD622" and "no tokenizer files" in found.message


def test_pd622_chat_template_of_the_base_missing(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(BF16_BASE, base)
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    folder = copy_of("good", tmp_path)
    [found] = inspect(folder, base=base)
    assert found.code == "PD622" and "chat template" in found.message
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert inspect(folder, base=base) == []


def test_model_folder_cli_with_base_imports_no_torch():
    done, heavy = cli_in_fresh_process(['inspect', str(MERGED / 'float32'), '--base', str(BF16_BASE)])
    assert heavy == [], done.stderr[-2000:]
    assert "PD622" in done.stdout


def test_model_folder_without_readable_weights_is_one_line(tmp_path):
    folder = copy_of("good", tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00" * 4)
    run = subprocess.run([sys.executable, "-m", "peftdoctor", "inspect", str(folder)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert "PD600" in run.stdout and "no readable safetensors weights" in run.stdout
