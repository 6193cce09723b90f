"""Header-level inspect against the local base (PD613-PD615), on real peft artefacts from fixtures/make_adapters.py.

No torch here: the base's module names come from its safetensors header or index.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.finding import Severity
from peftdoctor.inspect.base_checks import read_base, regex_matches_any, regex_unbounded
from peftdoctor.inspect.run import inspect_paths
from peftdoctor.inspect.safetensors_header import read_header

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "fixtures" / "adapters"
BASES = ROOT / "fixtures" / "bases"


def inspect(*paths, base=None):
    return inspect_paths([str(p) for p in paths], config=Config(), base=base, show_summary=False).findings


def copy_of(name: str, tmp_path: Path, **changes) -> Path:
    target = tmp_path / name
    shutil.copytree(ADAPTERS / name, target)
    config = json.loads((target / "adapter_config.json").read_text())
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = str(ROOT / config["base_model_name_or_path"])
    config.update(changes)
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def only(findings, code):
    assert [f.code for f in findings] == [code], [f"{f.code} {f.message}" for f in findings]
    return findings[0]


# PD613 -------------------------------------------------------------------------------------------

def test_pd613_unmatched_targets_and_modules_to_save_are_named():
    found = only(inspect(ADAPTERS / "targets-unmatched"), "PD613")
    assert found.severity == Severity.WARNING
    assert found.extra["target_modules"] == ["c_attn", "qkv_proj"]
    assert found.extra["modules_to_save"] == ["scores"]  # and PD609 does not repeat it
    assert "'tiny-llama'" in found.message


def test_pd613_no_target_matches_is_an_error(tmp_path):
    folder = copy_of("good-llama", tmp_path, target_modules=["c_attn", "c_proj"])
    found = only(inspect(folder), "PD613")
    assert found.severity == Severity.ERROR and "another model" in found.message


@pytest.mark.parametrize("pattern, code", [
    (r".*\.(q|v)_proj", None),
    (r"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)", None),
    ("all-linear", None),
    (r".*\.qkv_proj", "PD613"),
    ("(", "PD613"),  # not a regex at all: peft raises re.error
    ("(a+)+$", None),  # not bounded: not checked
])
def test_pd613_regex_targets(tmp_path, pattern, code):
    folder = copy_of("good-llama", tmp_path, target_modules=pattern)
    assert [f.code for f in inspect(folder)] == ([code] if code else [])


def test_pd613_regex_work_is_bounded():
    for pattern in ("(a+)+$", "(a|aa)*b", r"(\w+\.)*x", ".*.*.*x", r"(x)\1", "a" * 2000):
        assert regex_unbounded(pattern), pattern
    for pattern in (r".*\.(q|v)_proj", r"model\.layers\.[0-9]+\.mlp\.(up|down)_proj", ".*a.*b"):
        assert regex_unbounded(pattern) == "", pattern
    names = ["a" * 200 + "!"] * 3
    assert regex_matches_any("(a+)+$", names) is None  # refused, not run: it would backtrack for ages
    assert regex_matches_any(".*a.*b", names * 10) is False


def _sharded_copy(source: Path, target: Path, drop=(), **config_changes) -> Path:
    """A base folder with only config.json and model.safetensors.index.json (names, no shard read)."""
    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    keys = [t.name for t in read_header(source / "model.safetensors").tensors if t.name not in drop]
    index = {"metadata": {}, "weight_map": {k: f"model-0000{i % 2 + 1}-of-00002.safetensors"
                                            for i, k in enumerate(keys)}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


def test_pd613_sharded_base_index(tmp_path):
    base = _sharded_copy(BASES / "tiny-llama", tmp_path / "sharded-llama")
    assert "model.layers.1.self_attn.q_proj" in read_base(base).modules
    found = only(inspect(ADAPTERS / "targets-unmatched", base=str(base)), "PD613")
    assert found.extra["target_modules"] == ["c_attn", "qkv_proj"]


def test_pd613_tied_lm_head_is_not_reported(tmp_path):
    base = _sharded_copy(BASES / "tiny-llama", tmp_path / "tied", drop={"lm_head.weight"}, tie_word_embeddings=True)
    folder = copy_of("good-llama", tmp_path, target_modules=["q_proj", "lm_head"])
    assert inspect(folder, base=str(base)) == []
    untied = _sharded_copy(BASES / "tiny-llama", tmp_path / "untied", drop={"lm_head.weight"})
    assert only(inspect(folder, base=str(untied)), "PD613").extra["target_modules"] == ["lm_head"]


def test_pd613_needs_the_base():
    # the same adapter without a local base: PD609 (modules_to_save not saved) says what it can
    from peftdoctor.inspect.run import inspect_adapter

    folder = ADAPTERS / "targets-unmatched"
    found, _ = inspect_adapter(folder, config=Config(), base=str(folder / "nowhere"))
    assert [f.code for f in found] == ["PD609"]


# PD614 -------------------------------------------------------------------------------------------

def test_pd614_head_never_trained_base_has_head_is_a_warning():
    found = only(inspect(ADAPTERS / "bert-cls-no-task-type"), "PD614")
    assert found.severity == Severity.WARNING and "BertForSequenceClassification" in found.message


def test_pd614_head_never_trained_nor_in_base_is_an_error():
    found = only(inspect(ADAPTERS / "bert-cls-no-task-type-no-head"), "PD614")
    assert found.severity == Severity.ERROR and "random on every load" in found.message


def test_pd614_base_not_local_is_a_warning(tmp_path):
    folder = copy_of("bert-cls-no-task-type-no-head", tmp_path, base_model_name_or_path="org/not-here")
    findings = [f for f in inspect(folder) if f.code != "PD612"]
    assert only(findings, "PD614").severity == Severity.WARNING


def test_pd614_task_type_set_is_clean():
    # good-bert-cls: task_type SEQ_CLS trained and saved its classifier
    assert inspect(ADAPTERS / "good-bert-cls") == []


def test_pd614_head_in_modules_to_save_is_clean(tmp_path):
    folder = copy_of("good-bert-cls", tmp_path, task_type=None, modules_to_save=["classifier"],
                     auto_mapping={"base_model_class": "BertForSequenceClassification",
                                   "parent_library": "transformers.models.bert.modeling_bert"})
    assert inspect(folder) == []


# PD615 -------------------------------------------------------------------------------------------

def test_pd615_kohya_keys():
    found = only(inspect(ADAPTERS / "kohya-keys"), "PD615")
    assert found.extra["scheme"] == "kohya" and "load 0 of the keys" in found.message


def _rename_keys(path: Path, rename) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    table = json.loads(data[8:8 + length])
    renamed = {("__metadata__" if k == "__metadata__" else rename(k)): v for k, v in table.items()}
    raw = json.dumps(renamed).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])


def test_pd615_diffusers_keys(tmp_path):
    folder = copy_of("good-llama", tmp_path)
    _rename_keys(folder / "adapter_model.safetensors", lambda k: "unet." + k[len("base_model.model."):])
    assert only(inspect(folder), "PD615").extra["scheme"] == "diffusers"


def test_pd615_not_for_peft_keys():
    for name in ("good-llama", "trained-gpt2", "good-bert-cls", "multi-adapter"):
        assert not [f for f in inspect(ADAPTERS / name) if f.code == "PD615"]


def test_pd613_layers_to_transform_and_exclude_modules():
    found = only(inspect(ADAPTERS / "layers-unmatched"), "PD613")
    assert found.severity == Severity.WARNING
    assert found.extra["layers"] == [2, 3] and found.extra["exclude_modules"] == ["mlp.gate"]
    assert found.extra["target_modules"] == []


def test_pd613_layers_all_missing_is_an_error(tmp_path):
    folder = copy_of("good-llama", tmp_path, layers_to_transform=[7], layers_pattern="layers")
    found = only(inspect(folder), "PD613")
    assert found.severity == Severity.ERROR and found.extra["target_modules"] == ["q_proj", "v_proj"]


def test_pd613_layers_pattern_that_cannot_be_bounded_is_not_checked(tmp_path):
    folder = copy_of("good-llama", tmp_path, layers_to_transform=[7], layers_pattern="(l+)+ayers")
    assert inspect(folder) == []


# PD616 -------------------------------------------------------------------------------------------

def test_pd616_adapter_of_another_model_size():
    found = only(inspect(ADAPTERS / "other-base-size"), "PD616")
    assert len(found.extra["modules"]) == 4 and "32 -> 32" in found.message and "16 -> 16" in found.message


def test_pd616_sharded_base_reads_the_shard_headers(tmp_path):
    from safetensors.numpy import load_file, save_file

    base = tmp_path / "sharded"
    base.mkdir()
    shutil.copy(BASES / "tiny-llama" / "config.json", base)
    tensors = load_file(str(BASES / "tiny-llama" / "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for shard in range(2):
        file = f"model-0000{shard + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in names[shard::2]}, str(base / file))
        weight_map.update({n: file for n in names[shard::2]})
    (base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    folder = copy_of("other-base-size", tmp_path, base_model_name_or_path=str(base))
    assert only(inspect(folder), "PD616").extra["modules"]
    good = copy_of("good-llama", tmp_path, base_model_name_or_path=str(base))
    assert inspect(good) == []


def test_pd616_fan_in_fan_out_gpt2_is_clean():
    assert inspect(ADAPTERS / "trained-gpt2") == []
