"""Header-level inspect: LoRA on tied embeddings (PD617) and base-changing inits saved unconverted (PD618).

The adapters are real peft artefacts from fixtures/make_adapters.py; no torch is imported here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.finding import Severity
from peftdoctor.inspect.base_checks import read_base
from peftdoctor.inspect.embedding_checks import base_ties
from peftdoctor.inspect.run import inspect_paths

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "fixtures" / "adapters"
BASES = ROOT / "fixtures" / "bases"


def inspect(*paths):
    return inspect_paths([str(p) for p in paths], config=Config(), show_summary=False).findings


def codes(*paths):
    return [f.code for f in inspect(*paths)]


def copy_of(name: str, tmp_path: Path, base: Path | None = None, **changes) -> Path:
    target = tmp_path / name
    shutil.copytree(ADAPTERS / name, target)
    config = json.loads((target / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base or ROOT / config["base_model_name_or_path"])
    config.update(changes)
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def base_copy(name: str, tmp_path: Path, **config_changes) -> Path:
    """A copy of a fixture base with config.json edited; a value of None removes the key."""
    target = tmp_path / f"base-{name}"
    shutil.copytree(BASES / name, target)
    config = json.loads((target / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


# PD617 -------------------------------------------------------------------------------------------

def test_pd617_lora_on_the_lm_head_of_a_tying_base():
    [found] = inspect(ADAPTERS / "lm-head-tied")
    assert found.code == "PD617" and found.severity == Severity.WARNING
    assert found.extra["modules"] == ["lm_head"] and "'tiny-gpt2'" in found.message
    assert found.path.endswith("adapter_config.json")


def test_pd617_untied_base_and_ensure_weight_tying_are_silent(tmp_path):
    untied = base_copy("tiny-gpt2", tmp_path, tie_word_embeddings=False)
    assert codes(copy_of("lm-head-tied", tmp_path / "a", base=untied)) == []
    assert codes(copy_of("lm-head-tied", tmp_path / "b", ensure_weight_tying=True)) == []


def test_pd617_tying_read_from_the_weights_when_the_config_does_not_say(tmp_path):
    # gpt2 stores no lm_head.weight (it is wte's); the tiny llama stores its own lm_head.weight
    assert base_ties(read_base(base_copy("tiny-gpt2", tmp_path, tie_word_embeddings=None)))
    assert not base_ties(read_base(base_copy("tiny-llama", tmp_path, tie_word_embeddings=None)))
    assert codes(copy_of("lm-head-tied", tmp_path, base=tmp_path / "base-tiny-gpt2")) == ["PD617"]


def test_pd617_adapters_off_the_embeddings_are_silent():
    for name in ("good-llama", "trained-gpt2", "good-bert-cls"):
        assert "PD617" not in codes(ADAPTERS / name), name


# PD618 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, method", [("pissa-unconverted", "PiSSA"), ("olora-unconverted", "OLoRA")])
def test_pd618_unconverted_pissa_and_olora(name, method):
    [found] = inspect(ADAPTERS / name)
    assert found.code == "PD618" and found.severity == Severity.WARNING
    assert found.extra["method"] == method and "plain LoRA" in found.message


def test_pd618_converted_adapter_is_clean():
    config = json.loads((ADAPTERS / "pissa-converted" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 8  # peft's conversion: rank 2r
    assert codes(ADAPTERS / "pissa-converted") == []


@pytest.mark.parametrize("value, method", [
    ("pissa_niter_4", "PiSSA"), ("corda", "CorDA"), ("lora_ga", "LoRA-GA"), ("OLoRA", "OLoRA"),
    ("gaussian", None), ("eva", None), ("loftq", None), ("orthogonal", None), (False, None),
])
def test_pd618_which_inits_change_the_base(tmp_path, value, method):
    found = inspect(copy_of("good-llama", tmp_path, init_lora_weights=value))
    assert [f.extra["method"] for f in found if f.code == "PD618"] == ([method] if method else [])
    if value == "pissa_niter_4":
        assert "randomized SVD" in found[0].message


def test_cli_reports_pd617_and_pd618_with_exit_1():
    for name, code in (("lm-head-tied", "PD617"), ("pissa-unconverted", "PD618")):
        run = subprocess.run([sys.executable, "-m", "peftdoctor", "inspect", f"fixtures/adapters/{name}",
                              "--format", "json"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "NO_COLOR": "1"})
        assert run.returncode == 1, run.stderr
        assert [f["code"] for f in json.loads(run.stdout)["findings"]] == [code]


# PD619 -------------------------------------------------------------------------------------------

def test_pd619_rslora_with_patterns_gives_the_scales():
    [found] = inspect(ADAPTERS / "rslora-patterns")
    assert found.code == "PD619" and found.severity == Severity.INFO
    # q_proj: alpha 8 / sqrt(8); v_proj: alpha 32 / sqrt(4); the uniform scale 8 / sqrt(4) = 4 fits neither
    assert found.extra["scales"] == {"8/8": 2, "32/4": 2}
    assert "2.828" in found.message and "16 (alpha 32, r 4)" in found.message and "4 of 4 modules" in found.message


@pytest.mark.parametrize("changes, expected", [
    ({"use_rslora": True}, "lora_alpha / r = 2 instead of lora_alpha / sqrt(r) = 4"),
    ({"alpha_pattern": {"v_proj": 8}}, None),  # a pattern equal to the defaults: every loader agrees
    ({"rank_pattern": {"layers.0.self_attn.q_proj": 4}, "alpha_pattern": {"q_proj": 16}}, "2 of 4 modules"),
    ({}, None),
])
def test_pd619_which_configs_are_reported(tmp_path, changes, expected):
    found = [f for f in inspect(copy_of("good-llama", tmp_path, **changes)) if f.code == "PD619"]
    assert len(found) == (1 if expected else 0)
    if expected:
        assert expected in found[0].message


# PD620 -------------------------------------------------------------------------------------------

def test_pd620_rows_padded_past_len_tokenizer():
    [found] = inspect(ADAPTERS / "embedding-rows-padded")
    assert found.code == "PD620" and found.severity == Severity.WARNING
    assert found.extra == {"rows": 136, "vocab_size": 128} and "'model.embed_tokens'" in found.message


def test_pd620_tokenizer_with_ids_past_the_saved_rows():
    [found] = inspect(ADAPTERS / "embedding-rows-short")
    assert found.code == "PD620" and found.severity == Severity.ERROR
    assert found.extra == {"rows": 130, "tokens": 138} and "ids 130..137" in found.message


def test_pd620_matching_rows_and_no_saved_rows_are_left_to_pd610():
    assert codes(ADAPTERS / "resized-tokenizer-saved") == []  # 130 rows, 130 ids
    assert codes(ADAPTERS / "resized-tokenizer") == ["PD610"]  # no rows saved at all


def test_pd620_without_a_tokenizer_the_rows_must_match_the_base(tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(ADAPTERS / "embedding-rows-padded", folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(ROOT / config["base_model_name_or_path"])
    (folder / "adapter_config.json").write_text(json.dumps(config))
    [found] = inspect(folder)
    assert found.code == "PD620" and "no tokenizer saved beside the adapter" in found.message


# deep inspect does not repeat what a header check said -----------------------------------------

@pytest.mark.parametrize("name, header, repeated", [
    ("targets-unmatched", "PD613", lambda f: f.code == "PD701" and "unmatched" in f.extra),
    ("embedding-rows-short", "PD620", lambda f: f.code == "PD705"),
    ("seq-cls-no-head", "PD609", lambda f: f.code == "PD701" and "random" in f.extra),
])
def test_deep_inspect_leaves_out_what_a_header_check_said(name, header, repeated):
    pytest.importorskip("peft")
    from peftdoctor.runtime.deep import deep_check

    assert any(repeated(f) for f in deep_check(ADAPTERS / name, None, device="cpu", merge_check=False))
    found = inspect_paths([str(ADAPTERS / name)], config=Config(), deep=True, device="cpu",
                          merge_check=False, show_summary=False).findings
    assert header in [f.code for f in found]
    assert not [f for f in found if repeated(f)], [f"{f.code} {f.message}" for f in found]


def test_deep_findings_stay_when_no_header_check_said_them():
    from peftdoctor.finding import Finding
    from peftdoctor.inspect.run import drop_repeats

    deep = [Finding(code="PD701", message="m", path="p", line=0, column=0, extra={"unmatched": ["x"]})]
    assert drop_repeats([], deep) == deep
    assert drop_repeats([Finding(code="PD613", message="m", path="p", line=0, column=0)], deep) == []
