"""A small project whose findings depend on its trl pin, for the tests that a changed pin is seen
(by the result cache and by the run record)."""

from __future__ import annotations

import textwrap
from pathlib import Path

SFT_ON_A_PEFT_MODEL = textwrap.dedent("""\
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained("m"), LoraConfig())
    trainer = SFTTrainer(model=model, train_dataset=None, peft_config=LoraConfig())
    trainer.train()
""")


def sft_project(parent: Path, trl_version: str) -> Path:
    """`parent/sft`: a script that hands SFTTrainer a PeftModel and a peft_config (what trl does with the
    pair depends on its version), with `trl==trl_version` in its requirements.txt."""
    folder = parent / "sft"
    folder.mkdir()
    pin_trl(folder, trl_version)
    (folder / "train.py").write_text(SFT_ON_A_PEFT_MODEL)
    return folder


def pin_trl(folder: Path, trl_version: str) -> None:
    (folder / "requirements.txt").write_text(f"trl=={trl_version}\n")
