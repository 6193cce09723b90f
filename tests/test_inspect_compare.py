"""`peftdoctor inspect CKPT_A CKPT_B`: PD709 names the adapter tensors that did not change between two
checkpoints of one run, read from the files (real Trainer checkpoints, real CLI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from peftdoctor.cli import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints 1 and 2 of a healthy llama run and of a ViT run whose LoRA gets no gradient."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from learning_helpers import Images, llama_peft, reentrant, trainer, vit_lora

    root = tmp_path_factory.mktemp("runs")
    save = dict(save_strategy="steps", save_steps=1)
    trainer(llama_peft(), root / "healthy", steps=2, **save).train()
    trainer(vit_lora(), root / "stuck", data=Images(), steps=2, **save, **reentrant()).train()
    return root


def inspect(*args):
    return CliRunner().invoke(cli, ["inspect", "--format", "json", *map(str, args)])


def pd709(result):
    return [f for f in json.loads(result.output)["findings"] if f["code"] == "PD709"]


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_unchanged_lora_tensors_are_named(runs):
    result = inspect(runs / "stuck/checkpoint-1", runs / "stuck/checkpoint-2")
    assert result.exit_code == 1, result.output
    [found] = pd709(result)
    assert found["severity"] == "error" and found["path"].endswith("checkpoint-2/adapter_model.safetensors")
    assert ("8 of 10 adapter tensors are byte-identical in 'checkpoint-1' (step 1) and 'checkpoint-2' (step 2)"
            in found["message"])
    assert "(vit.layers.0.attention.q_proj: lora_A.weight, lora_B.weight;" in found["message"]
    assert "classifier" not in found["message"]  # 8 of 10: the 2 tensors of the head did train


def test_healthy_checkpoints_all_changed(runs):
    result = inspect(runs / "healthy/checkpoint-1", runs / "healthy/checkpoint-2/adapter_model.safetensors")
    [found] = pd709(result)
    assert found["severity"] == "info" and found["message"].startswith("all 8 adapter tensors changed")


def test_later_checkpoint_first_is_compared_in_step_order(runs):
    [found] = pd709(inspect(runs / "stuck/checkpoint-2", runs / "stuck/checkpoint-1"))
    assert found["path"].endswith("checkpoint-2/adapter_model.safetensors") and "(step 1) and" in found["message"]


def test_only_checkpoints_saved_at_different_steps_are_compared(runs, tmp_path):
    copy = tmp_path / "copy-of-checkpoint-1"
    shutil.copytree(runs / "stuck/checkpoint-1", copy, ignore=shutil.ignore_patterns("*.pt", "*.pth"))
    bare = tmp_path / "best"  # a copy of the adapter alone: nothing says when it was saved
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(runs / "stuck/checkpoint-2" / name, bare / name)
    assert pd709(inspect(runs / "stuck/checkpoint-1", copy)) == []  # same step: two copies
    assert pd709(inspect(runs / "stuck/checkpoint-2", bare)) == []
    assert pd709(inspect(runs / "healthy/checkpoint-1", runs / "stuck/checkpoint-2")) == []  # other tensors
    assert pd709(inspect(runs / "stuck/checkpoint-1", runs / "stuck/checkpoint-1")) == []  # one folder
    assert pd709(inspect(runs / "healthy")) == []  # a whole run: no pair was named
    renamed = tmp_path / "checkpoint-7"  # no trainer_state.json: the folder name gives the step
    shutil.copytree(bare, renamed)
    assert len(pd709(inspect(runs / "stuck/checkpoint-1", renamed))) == 1


def test_a_missing_checkpoint_is_one_line(runs):
    result = CliRunner().invoke(cli, ["inspect", str(runs / "stuck/checkpoint-1"), str(runs / "stuck/nope")])
    assert result.exit_code == 2 and "nope: no such file or directory" in result.output
    assert "Traceback" not in result.output


def test_compare_stays_light(runs):
    code = ("import sys; from click.testing import CliRunner; from peftdoctor.cli import cli; "
            f"r = CliRunner().invoke(cli, ['inspect', {str(runs / 'stuck/checkpoint-1')!r}, "
            f"{str(runs / 'stuck/checkpoint-2')!r}]); assert 'PD709' in r.output, r.output; "
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
