"""`peftdoctor inspect` on real peft artefacts (fixtures/adapters, made by fixtures/make_adapters.py).

Header-level inspect must not need torch: these tests read files only, except
where a test builds a damaged copy of a real adapter byte by byte.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from light_helpers import cli_in_fresh_process

from peftdoctor.config import Config
from peftdoctor.inspect.run import InputError, inspect_paths

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = ROOT / "fixtures" / "adapters"
GOOD = ["good-llama", "trained-gpt2", "good-bert-cls", "resized-tokenizer-saved", "multi-adapter", "run"]


def inspect(*paths, config=None, **kwargs):
    return inspect_paths([str(p) for p in paths], config=config or Config(), show_summary=False, **kwargs)


def codes(result) -> list[str]:
    return sorted({f.code for f in result.findings})


def copy_of(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(ADAPTERS / name, target)
    # The copy lives outside the repo: point it at the tiny base by absolute path.
    config = json.loads((target / "adapter_config.json").read_text())
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = str(ROOT / config["base_model_name_or_path"])
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("name", GOOD)
def test_good_adapters_have_no_findings(name):
    result = inspect(ADAPTERS / name)
    assert result.findings == []
    assert result.adapters_checked >= 1


def test_multi_adapter_and_checkpoint_folders_are_walked():
    assert inspect(ADAPTERS / "multi-adapter").adapters_checked == 2
    assert inspect(ADAPTERS / "run").adapters_checked == 2


@pytest.mark.parametrize("name, code, severity", [
    ("truncated", "PD602", "error"),
    ("bad-header", "PD602", "error"),
    ("double-wrapped", "PD603", "error"),
    ("raw-state-dict", "PD603", "error"),
    ("untrained", "PD605", "error"),
    ("nan", "PD606", "error"),
    ("zero3-empty", "PD607", "error"),
    ("fp16", "PD608", "info"),
    ("mixed-dtype", "PD608", "warning"),
    ("seq-cls-no-head", "PD609", "error"),
    ("resized-tokenizer", "PD610", "error"),
])
def test_bad_adapter_gives_its_code(name, code, severity):
    result = inspect(ADAPTERS / name)
    real = [f for f in result.findings if f.code != "PD612"]
    assert [(f.code, f.severity.value) for f in real] == [(code, severity)]


def test_untrained_checkpoint_is_flagged_once_trained_is_clean(tmp_path):
    # checkpoint-1 of the run did one optimizer step: lora_B moved off zero.
    assert inspect(ADAPTERS / "run" / "checkpoint-1").findings == []
    assert codes(inspect(ADAPTERS / "untrained")) == ["PD605"]


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        inspect(tmp_path / "nope")


def test_pd600_no_config_and_bad_json(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = inspect(empty)
    assert codes(result) == ["PD600"] and "no adapter_config.json" in result.findings[0].message
    broken = copy_of("good-llama", tmp_path)
    (broken / "adapter_config.json").write_text("{not json")
    [item] = inspect(broken).findings
    assert item.code == "PD600" and "adapter_config.json is not valid JSON" in item.message
    edit = copy_of("good-llama", tmp_path / "x")
    config = json.loads((edit / "adapter_config.json").read_text())
    del config["peft_type"]
    (edit / "adapter_config.json").write_text(json.dumps(config))
    assert codes(inspect(edit)) == ["PD600"]


@pytest.mark.parametrize("changes, needle, severity", [
    ({"peft_type": "NOT_A_METHOD"}, "unknown peft_type", "error"),
    ({"r": 0}, "r = 0", "error"),
    ({"target_modules": []}, "target_modules is empty", "error"),
    ({"peft_version": "99.0.0"}, "newer than the installed peft", "warning"),
    ({"use_quantum_lora": True}, "use_quantum_lora", "warning"),
])
def test_pd601_config_problems(tmp_path, changes, needle, severity):
    folder = copy_of("good-llama", tmp_path)
    edit_config(folder, **changes)
    found = [f for f in inspect(folder).findings if f.code == "PD601"]
    assert len(found) == 1 and needle in found[0].message and found[0].severity.value == severity


def test_pd602_missing_weights_and_bad_headers(tmp_path):
    folder = copy_of("good-llama", tmp_path)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    first, second = [k for k in header if k != "__metadata__"][:2]

    def rewrite(table) -> None:
        raw = json.dumps(table).encode()
        weights.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])

    overlapping = json.loads(json.dumps(header))
    overlapping[second]["data_offsets"] = header[first]["data_offsets"]
    rewrite(overlapping)
    [item] = inspect(folder).findings
    assert item.code == "PD602" and "overlaps" in item.message

    odd_dtype = json.loads(json.dumps(header))
    odd_dtype[first]["dtype"] = "F13"
    rewrite(odd_dtype)
    [item] = inspect(folder).findings
    assert item.code == "PD602" and "unknown dtype 'F13'" in item.message

    weights.write_bytes(struct.pack("<Q", 5) + b"{oops")
    [item] = inspect(folder).findings
    assert item.code == "PD602" and "not valid JSON" in item.message

    weights.unlink()
    [item] = inspect(folder).findings
    assert item.code == "PD602" and "no adapter_model.safetensors or adapter_model.bin" in item.message


def test_pd604_rank_disagrees_with_config(tmp_path):
    folder = copy_of("good-llama", tmp_path)
    edit_config(folder, r=8)
    found = inspect(folder).findings
    assert {f.code for f in found} == {"PD604"} and len(found) == 4
    assert "rank 4 but r = 8" in found[0].message
    edit_config(folder, r=4, rank_pattern={"layers.0.self_attn.q_proj": 2})
    [item] = inspect(folder).findings
    assert "rank_pattern['layers.0.self_attn.q_proj'] = 2" in item.message
    edit_config(folder, rank_pattern={}, alpha_pattern={"k_proj": 16})
    [item] = inspect(folder).findings
    assert item.code == "PD604" and "alpha_pattern key 'k_proj' matches no adapted module" in item.message


def write_torch_zip(path: Path, pickle_bytes: bytes) -> None:
    """The layout torch.save writes: archive/data.pkl (+ storages, not needed here)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/version", "3\n")


def test_pd611_malicious_bin_is_reported_without_loading(tmp_path):
    folder = copy_of("good-llama", tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    # Hand-written opcodes: os.system("touch <marker>"); never unpickled by the check.
    command = f"touch {marker}".encode()
    payload = (b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(command)) + command + b"\x85R.")
    write_torch_zip(folder / "adapter_model.bin", payload)
    [item] = inspect(folder).findings
    assert item.code == "PD611" and "os.system" in item.message
    assert "safetensors" in item.hint
    assert not marker.exists()


def test_pd611_plain_torch_globals_are_safe(tmp_path):
    folder = copy_of("good-llama", tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    # STACK_GLOBAL form (protocol 4) with memoized strings, as torch.save writes it.
    parts = [b"\x80\x04", b"\x8c\x0bcollections\x94", b"\x8c\x0bOrderedDict\x94", b"\x93\x94)R\x94",
             b"\x8c\x0ctorch._utils\x94", b"\x8c\x12_rebuild_tensor_v2\x94", b"\x93\x94", b"h\x00h\x01\x93",
             b"0.", ]
    payload = b"".join(parts)
    assert [op.name for op, _, _ in __import__("pickletools").genops(payload)][-1] == "STOP"
    write_torch_zip(folder / "adapter_model.bin", payload)
    assert inspect(folder).findings == []


def test_pd611_real_torch_save_is_safe(tmp_path):
    torch = pytest.importorskip("torch")
    folder = copy_of("good-llama", tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    torch.save({"base_model.model.x.lora_A.weight": torch.ones(2, 3)}, folder / "adapter_model.bin")
    assert inspect(folder).findings == []
    with open(folder / "adapter_model.bin", "wb") as stream:
        pickle.dump({"x": print}, stream, protocol=4)  # legacy (non-zip) pickle naming builtins.print
    [item] = inspect(folder).findings
    assert item.code == "PD611" and "builtins.print" in item.message


def test_pd612_base_not_local_and_hf_cache(tmp_path, monkeypatch):
    folder = copy_of("good-llama", tmp_path)
    edit_config(folder, base_model_name_or_path="some-org/some-model")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    [item] = inspect(folder).findings
    assert item.code == "PD612" and item.severity.value == "info" and "'some-org/some-model'" in item.message
    snapshot = tmp_path / "cache" / "models--some-org--some-model" / "snapshots" / "abc"
    shutil.copytree(ROOT / "fixtures" / "bases" / "tiny-llama", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    assert inspect(folder).findings == []
    # An explicit --base replaces the adapter's own base: no PD612.
    edit_config(folder, base_model_name_or_path="elsewhere/missing")
    assert codes(inspect(folder, base=str(snapshot))) == []


def test_config_ignore_and_severity_apply():
    from peftdoctor.finding import Severity

    assert inspect(ADAPTERS / "nan", config=Config(ignore=["PD606"])).findings == []
    [item] = inspect(ADAPTERS / "nan", config=Config(severity={"PD606": Severity.WARNING})).findings
    assert item.severity == Severity.WARNING


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "peftdoctor", "inspect", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"})


def test_cli_exit_codes_and_summary():
    good = run_cli("fixtures/adapters/good-llama")
    assert good.returncode == 0, good.stderr
    assert "r / alpha" in good.stdout and "q_proj, v_proj" in good.stdout and "No findings in 1 adapter." in good.stdout
    assert run_cli("fixtures/adapters/fp16").returncode == 0  # info only
    bad = run_cli("fixtures/adapters/nan", "--format", "json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["findings"][0]["code"] == "PD606"
    missing = run_cli("fixtures/adapters/does-not-exist")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "peftdoctor: error: fixtures/adapters/does-not-exist: no such file or directory"


def test_header_inspect_never_imports_torch_transformers_peft():
    done, heavy = cli_in_fresh_process(['inspect', str(ADAPTERS)])
    assert heavy == [], done.stderr[-2000:]
    assert "PD606" in done.stdout and "PD611" not in done.stdout  # it really inspected every fixture
