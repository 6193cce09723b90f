"""PD623: a diffusers-style LoRA file (no adapter_config.json) in peft's key scheme, from headers only.

The files are real artefacts of fixtures/make_adapters.py (a tiny diffusers UNet with `add_adapter`); the
runtime tests load each one with real diffusers to show what the finding says: the good file loads, a
PeftModel's file loads nothing with only a logged warning, adapter-named keys never reach the adapter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.inspect.discover import InputError
from peftdoctor.inspect.run import inspect_paths

ROOT = Path(__file__).resolve().parent.parent
LORAS = ROOT / "fixtures" / "diffusers-lora"
WEIGHTS = "pytorch_lora_weights.safetensors"


def inspect(*paths) -> list:
    return inspect_paths([str(p) for p in paths], config=Config(), show_summary=False).findings


def test_the_diffusers_file_is_clean_as_a_folder_and_as_a_file():
    assert inspect(LORAS / "good") == []
    assert inspect(LORAS / "good" / WEIGHTS) == []


@pytest.mark.parametrize("name, scheme", [("peft-keys", "base_model.model."), ("default-keys", ".lora_A.default.")])
def test_peft_keys_in_a_diffusers_file_are_named(name, scheme):
    for path in (LORAS / name, LORAS / name / WEIGHTS):
        [found] = inspect(path)
        assert found.code == "PD623" and found.severity.value == "error" and found.extra["scheme"] == "peft"
        assert found.path == str(LORAS / name / WEIGHTS) and scheme in found.message and "64 of 64" in found.message


def test_peft_keys_say_what_diffusers_does_with_them():
    [wrapped] = inspect(LORAS / "peft-keys")
    assert "loads nothing" in wrapped.message and "prefix='unet'" in wrapped.message
    [named] = inspect(LORAS / "default-keys")
    assert "never loaded" in named.message and "NaN" in named.message


def test_a_folder_walk_finds_diffusers_files():
    found = inspect(LORAS)
    assert sorted(Path(f.path).parent.name for f in found) == ["default-keys", "peft-keys"]


def test_a_folder_of_lora_weights_under_another_name(tmp_path):
    """A folder without adapter_config.json whose .safetensors hold LoRA weights is read as a LoRA folder."""
    (tmp_path / "my_lora.safetensors").write_bytes((LORAS / "peft-keys" / WEIGHTS).read_bytes())
    assert [f.code for f in inspect(tmp_path)] == ["PD623"]


def test_peft_adapters_and_non_lora_files_are_left_to_their_own_checks(tmp_path):
    assert inspect(ROOT / "fixtures" / "adapters" / "good-llama") == []
    assert [f.code for f in inspect(ROOT / "fixtures" / "adapters" / "kohya-keys")] == ["PD615"]
    with pytest.raises(InputError, match="not an adapter folder"):
        inspect(ROOT / "fixtures" / "bases" / "tiny-llama" / "model.safetensors")
    assert "PD623" not in {f.code for f in inspect(ROOT / "fixtures" / "bases" / "tiny-llama")}  # a model folder


def test_a_kohya_file_given_by_itself_is_clean(tmp_path):
    """kohya's own scheme is what a lone .safetensors LoRA is expected to hold."""
    kohya = tmp_path / "style_lora.safetensors"
    kohya.write_bytes((ROOT / "fixtures" / "adapters" / "kohya-keys" / "adapter_model.safetensors").read_bytes())
    assert inspect(kohya) == []


def test_a_damaged_lora_file_is_pd602(tmp_path):
    broken = tmp_path / "lora.safetensors"
    broken.write_bytes((LORAS / "good" / WEIGHTS).read_bytes()[:100])
    assert [f.code for f in inspect(broken)] == ["PD602"]


def test_header_inspect_of_a_lora_file_imports_no_torch():
    code = ("import sys; from peftdoctor.config import Config; from peftdoctor.inspect.run import inspect_paths; "
            f"found = inspect_paths([{str(LORAS)!r}], config=Config(), show_summary=False).findings; "
            "assert len(found) == 2, found; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'diffusers') if m in sys.modules]; "
            "assert not heavy, heavy")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr


# ------------------------------------------------------------------ what diffusers really does with the files
@pytest.fixture(scope="module")
def diffusers_env():
    pytest.importorskip("torch")
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"diffusers cannot be imported: {exc}")
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_diffusers

    return tiny_diffusers


def loaded(tiny, name: str, caplog):
    """pipe.load_lora_weights(folder) on a fresh tiny pipeline: its UNet and what diffusers logged."""
    pipe = tiny.tiny_pipeline()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe.load_lora_weights(str(LORAS / name))
    return pipe.unet, caplog.text


def test_diffusers_loads_the_good_file(diffusers_env, caplog):
    tiny = diffusers_env
    unet, _ = loaded(tiny, "good", caplog)
    assert list(unet.peft_config) == ["default_0"]
    assert (tiny.unet_output(unet) - tiny.unet_output(tiny.tiny_unet())).abs().max() > 0.05  # the LoRA acts


def test_diffusers_loads_nothing_of_a_peft_model_file(diffusers_env, caplog):
    tiny = diffusers_env
    unet, log = loaded(tiny, "peft-keys", caplog)
    assert getattr(unet, "peft_config", {}) == {}  # no adapter, no exception
    assert "No LoRA keys associated to UNet2DConditionModel found with the prefix='unet'" in log
    assert (tiny.unet_output(unet) - tiny.unet_output(tiny.tiny_unet())).abs().max() == 0  # just the base
    with pytest.raises(Exception, match="base_model.model") as raised:
        tiny.tiny_unet().load_lora_adapter(str(LORAS / "peft-keys"), prefix=None, weight_name=WEIGHTS)
    assert type(raised.value).__name__ == "NoMatchingPeftModuleError"  # without the prefix filter: it raises


def test_adapter_named_keys_never_reach_the_adapter(diffusers_env, caplog):
    tiny = diffusers_env
    good_unet, _ = loaded(tiny, "good", caplog)
    unet, log = loaded(tiny, "default-keys", caplog)  # the same trained weights, saved from state_dict()
    assert list(unet.peft_config) == ["default_0"]  # an adapter is made...
    assert "unexpected keys" in log and ".lora_A.default.weight" in log  # ...but no saved weight fits it
    wanted, got = tiny.unet_output(good_unet), tiny.unet_output(unet)
    assert not bool(got.isfinite().all()) or (got - wanted).abs().max() > 0.05  # NaN or not the trained LoRA
