"""Which library versions a checked project runs on: config, pins, API evidence, current releases."""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_source
from peftdoctor.facts import build_facts
from peftdoctor.facts.api_versions import EVIDENCE, KNOWN_RELEASES, implied_versions, parse_version
from peftdoctor.rules.base import Context
from peftdoctor.rules.pd102_peft_on_peft import IGNORES, MERGES, RAISES, WRAPS, trl_behaviour
from peftdoctor.versions import CURRENT_RELEASES, clear_caches, project_version


@pytest.fixture(autouse=True)
def fresh():
    clear_caches()
    yield
    clear_caches()


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def project(tmp_path: Path, files: dict[str, str], script: str = "train.py") -> str:
    """A project rooted at tmp_path/proj (it has a .git), with `files`; returns the script's path."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    write(root, files)
    path = root / script
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("import peft\n", encoding="utf-8")
    return str(path)


def version_of(library: str, script: str) -> tuple[str, str]:
    found = project_version(library, script)
    return ".".join(map(str, found.version)), found.text


def facts_of(source: str, path: str = "train.py"):
    source = textwrap.dedent(source)
    return build_facts(cst.parse_module(source), path, source)


# ------------------------------------------------------------------ pin forms
def test_requirements_exact_pin_with_markers_extras_and_comments(tmp_path):
    script = project(tmp_path, {"requirements.txt": """\
        # training
        torch==2.2.2 ; python_version >= "3.9"
        transformers[torch]==4.40.2  # pinned for the tokenizer fix
        trl==0.8.6 ; python_version >= "3.9" and python_full_version <= "3.12.0"
        peft>=0.10,<0.12
        """})
    assert version_of("trl", script) == ("0.8.6", "trl 0.8.6, pinned in requirements.txt")
    assert version_of("transformers", script)[0] == "4.40.2"
    assert version_of("torch", script)[0] == "2.2.2"
    # a range: the newest known release inside it, and the text says so
    assert version_of("peft", script) == (
        "0.11.1", "peft 0.11.1, the newest release allowed by peft>=0.10,<0.12 in requirements.txt")


def test_requirements_include_and_compatible_release(tmp_path):
    script = project(tmp_path, {
        "requirements.txt": "-r requirements/base.txt\naccelerate\n",
        "requirements/base.txt": "peft~=0.13.1\ntrl === 0.9.6\n",
    })
    assert version_of("peft", script)[0] == "0.13.2"  # ~=0.13.1: >=0.13.1, <0.14
    assert version_of("trl", script)[0] == "0.9.6"


@pytest.mark.parametrize("line", ["peft-foo==0.4.0", "mypeft==0.4.0", "peft_utils==0.4.0", "trl-extra==0.1",
                                  "peft @ git+https://github.com/huggingface/peft", "peft", "# peft==0.4.0"])
def test_other_packages_and_unversioned_lines_are_not_pins(tmp_path, line):
    script = project(tmp_path, {"requirements.txt": f"{line}\n"})
    assert project_version("peft", script).kind == "current"
    assert project_version("trl", script).kind == "current"


def test_pyproject_pep621_dependencies_optional_and_groups(tmp_path):
    script = project(tmp_path, {"pyproject.toml": """\
        [project]
        name = "x"
        dependencies = ["torch>=2.1", "transformers==4.46.3"]

        [project.optional-dependencies]
        train = ["peft>=0.12,<0.14", "bitsandbytes"]

        [dependency-groups]
        rl = ["trl~=0.11.0"]
        """})
    assert version_of("transformers", script)[0] == "4.46.3"
    assert version_of("peft", script) == (
        "0.13.2", "peft 0.13.2, the newest release allowed by peft>=0.12,<0.14 in pyproject.toml")
    assert version_of("trl", script)[0] == "0.11.4"
    assert project_version("torch", script).kind == "current"  # torch>=2.1 fixes nothing


@pytest.mark.parametrize("value, expected", [
    ('"0.13.2"', "0.13.2"),
    ('"^0.13"', "0.13.2"),
    ('"~0.13.1"', "0.13.2"),
    ('"==0.12.0"', "0.12.0"),
    ('">=0.12,<0.14"', "0.13.2"),
    ('{version = ">=0.12,<0.14", extras = ["x"]}', "0.13.2"),
    ('[{version = "0.10.0", python = "<3.9"}, {version = "0.11.1", python = ">=3.9"}]', "0.10.0"),
    ('"0.13.*"', "0.13.2"),
    ('"^1.2"', None),  # no known peft 1.x release: kept as written (>= 1.2, newer than the current release)
])
def test_poetry_dependency_forms(tmp_path, value, expected):
    script = project(tmp_path, {"pyproject.toml": f"""\
        [tool.poetry]
        name = "x"

        [tool.poetry.dependencies]
        python = "^3.10"
        peft = {value}
        """})
    found = project_version("peft", script)
    assert found.kind == "pin"
    assert ".".join(map(str, found.version)) == (expected or "1.2")
    assert "pyproject.toml" in found.text


def test_poetry_star_and_git_are_not_pins_and_groups_are_read(tmp_path):
    script = project(tmp_path, {"pyproject.toml": """\
        [tool.poetry.dependencies]
        peft = "*"
        transformers = {git = "https://github.com/huggingface/transformers"}

        [tool.poetry.group.train.dependencies]
        trl = "~0.8.6"
        """})
    assert project_version("peft", script).kind == "current"
    assert project_version("transformers", script).kind == "current"
    assert version_of("trl", script) == ("0.8.6", "trl 0.8.6, the newest release allowed by trl ~0.8.6 in pyproject.toml")


def test_setup_py_and_setup_cfg(tmp_path):
    script = project(tmp_path, {
        "setup.py": """\
            from setuptools import setup
            REQUIRED = ["torch>=2.0", "peft==0.10.0"]
            setup(name="x", install_requires=REQUIRED, extras_require={"rl": ["trl>=0.7,<0.9"]})
            """,
        "setup.cfg": """\
            [options]
            install_requires =
                transformers==4.36.2
                accelerate>=0.25
            """,
    })
    assert version_of("peft", script) == ("0.10.0", "peft 0.10.0, pinned in setup.py")
    assert version_of("trl", script)[0] == "0.8.6"
    assert version_of("transformers", script) == ("4.36.2", "transformers 4.36.2, pinned in setup.cfg")


def test_conda_environment_file(tmp_path):
    script = project(tmp_path, {"environment.yml": """\
        name: lora
        channels: [pytorch, conda-forge]
        dependencies:
          - python=3.10
          - pytorch::pytorch=2.1.2=py3.10_cuda11.8_cudnn8.7.0_0
          - conda-forge::transformers=4.40
          - peft=0.13.2
          - pip
          - pip:
              - trl==0.8.6
              - peft-extra==9.9
        """})
    assert version_of("peft", script) == ("0.13.2", "peft 0.13.2, pinned in environment.yml")
    assert version_of("torch", script)[0] == "2.1.2"  # conda's pytorch, with a build string
    assert version_of("transformers", script)[0] == "4.40.2"  # conda's =4.40 means 4.40.*
    assert version_of("trl", script) == ("0.8.6", "trl 0.8.6, pinned in environment.yml")


# ------------------------------------------------------------ which file wins
def test_nearest_pin_wins_over_farther_ones(tmp_path):
    script = project(tmp_path, {
        "requirements.txt": "trl==0.8.6\npeft==0.10.0\n",
        "stage2/requirements.txt": "trl==0.21.0\n",
    }, script="stage2/train.py")
    assert version_of("trl", script) == ("0.21.0", "trl 0.21.0, pinned in stage2/requirements.txt")
    assert version_of("peft", script)[0] == "0.10.0"  # stage2 pins no peft: the root's pin
    other = str(Path(script).parent.parent / "train.py")
    assert version_of("trl", other)[0] == "0.8.6"  # stage2's pin is not the root script's


def test_a_loose_pin_nearby_does_not_hide_an_exact_one_farther_up(tmp_path):
    script = project(tmp_path, {
        "requirements.txt": "trl==0.8.6\n",
        "sub/requirements.txt": "trl>=0.7\n",
    }, script="sub/train.py")
    assert version_of("trl", script)[0] == "0.8.6"


def test_requirements_in_folders_without_code_count_for_the_whole_project(tmp_path):
    script = project(tmp_path, {
        "pyproject.toml": "[project]\nname = 'x'\ndependencies = ['peft>=0.10']\n",
        "requirements/train.txt": "trl==0.11.4\n",
        "docker/train/requirements.txt": "transformers==4.44.2\n",
        "other_tool/requirements.txt": "peft==0.5.0\n",  # next to other code: that code's pins only
        "other_tool/run.py": "print('x')\n",
    }, script="src/pkg/train.py")
    assert version_of("trl", script) == ("0.11.4", "trl 0.11.4, pinned in requirements/train.txt")
    assert version_of("transformers", script) == (
        "4.44.2", "transformers 4.44.2, pinned in docker/train/requirements.txt")
    assert project_version("peft", script).kind == "current"
    assert version_of("peft", str(Path(script).parents[2] / "other_tool" / "run.py"))[0] == "0.5.0"


def test_of_two_project_wide_pins_the_nearer_wins(tmp_path):
    script = project(tmp_path, {
        "envs/environment.yml": "dependencies:\n  - pip:\n    - trl==0.9.6\n",
        "train/deps/requirements.txt": "trl==0.12.2\n",
    }, script="train/finetune.py")
    assert version_of("trl", script)[0] == "0.12.2"  # one step down from train/ beats up-and-down to envs/


def test_pins_above_a_nested_project_root_up_to_the_checkout_are_read(tmp_path):
    script = project(tmp_path, {
        "requirements.txt": "trl==0.8.6\n",
        "sub_project/pyproject.toml": "[project]\nname = 'sub'\n",
    }, script="sub_project/train.py")
    assert version_of("trl", script)[0] == "0.8.6"


def test_files_are_reread_after_clear_caches(tmp_path):
    script = project(tmp_path, {"requirements.txt": "trl==0.8.6\n"})
    assert version_of("trl", script)[0] == "0.8.6"
    (Path(script).parent / "requirements.txt").write_text("trl==0.21.0\n", encoding="utf-8")
    clear_caches()
    assert version_of("trl", script)[0] == "0.21.0"


# ------------------------------------------------------- evidence from the API
OLD_SFT = """\
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments
    from trl import SFTTrainer

    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained("m"), config)
    trainer = SFTTrainer(
        model=model,
        train_dataset=data,
        peft_config=config,
        tokenizer=tokenizer,
        max_seq_length=512,
        args=TrainingArguments(output_dir="o", evaluation_strategy="steps"),
    )
"""


def test_old_trl_and_transformers_api_implies_ranges():
    implied = implied_versions(facts_of(OLD_SFT))
    trl = implied["trl"]
    assert (trl.low, trl.high) == (None, (0, 13))  # max_seq_length= (< 0.13) is tighter than tokenizer= (< 0.16)
    assert trl.range_text == "trl < 0.13"
    assert trl.evidence_text == "SFTTrainer(max_seq_length=...) at line 12"
    assert trl.representative() == (0, 12, 2)
    transformers = implied["transformers"]
    assert (transformers.low, transformers.high) == (None, (4, 51))
    assert transformers.evidence_text == "TrainingArguments(evaluation_strategy=...) at line 13"
    assert "peft" not in implied


def test_tokenizer_alone_implies_trl_below_0_16():
    implied = implied_versions(facts_of("""\
        from trl import SFTTrainer
        trainer = SFTTrainer(model=model, tokenizer=tok, train_dataset=data)
    """))
    assert implied["trl"].high == (0, 16) and implied["trl"].representative() == (0, 15, 2)


def test_new_api_implies_lower_bounds():
    implied = implied_versions(facts_of("""\
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
        from trl import SFTConfig, SFTTrainer

        model = AutoModelForCausalLM.from_pretrained("m", dtype=torch.bfloat16)
        config = LoraConfig(r=8, trainable_token_indices=[5, 6], use_dora=True)
        args = SFTConfig(output_dir="o", max_length=512, eval_strategy="no")
        trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=config)
    """))
    assert implied["peft"].low == (0, 15) and implied["peft"].high is None
    assert implied["peft"].evidence_text == "LoraConfig(trainable_token_indices=...) at line 7"
    assert implied["transformers"].low == (4, 56)  # dtype= beats eval_strategy= (4.41)
    assert implied["trl"].low == (0, 16)  # SFTConfig(max_length=) beats processing_class= (0.12) and SFTConfig (0.9)
    assert implied["trl"].representative() == parse_version(CURRENT_RELEASES["trl"])


def test_conflicting_evidence_is_ignored():
    implied = implied_versions(facts_of("""\
        from trl import SFTConfig, SFTTrainer
        trainer = SFTTrainer(model=m, tokenizer=tok, args=SFTConfig(output_dir="o", max_length=128))
    """))
    assert "trl" not in implied  # tokenizer= (< 0.16) and max_length= (>= 0.16) cannot both hold


def test_import_forms_are_followed():
    implied = implied_versions(facts_of("""\
        import trl
        from trl.trainer.sft_trainer import SFTTrainer as T
        a = T(model=m, dataset_text_field="text")
        b = trl.SFTTrainer(model=m, packing=True)
    """))
    assert implied["trl"].high == (0, 13)


def test_every_evidence_row_is_well_formed():
    for row in EVIDENCE:
        assert row.library in CURRENT_RELEASES and row.why and row.calls
        assert row.low is not None or row.high is not None
        if row.low is not None and row.high is not None:
            assert row.low < row.high


def test_known_releases_end_at_the_current_release():
    for library, current in CURRENT_RELEASES.items():
        releases = [parse_version(v) for v in KNOWN_RELEASES[library]]
        assert releases == sorted(releases), library
        assert KNOWN_RELEASES[library][-1] == current, library


# -------------------------------------------------------------- the order
def test_order_config_then_pin_then_implied_then_current(tmp_path):
    facts_path = project(tmp_path, {})
    facts = facts_of(OLD_SFT, facts_path)
    ctx = Context(Config())
    found = ctx.version("trl", facts)
    assert found.kind == "implied" and found.version == (0, 12, 2)
    assert found.text == ("trl < 0.13, implied by SFTTrainer(max_seq_length=...) at line 12: assumed 0.12.2, "
                          "the newest release in that range")
    assert ctx.version("trl", facts_path).kind == "current"  # the old form (a path) has no API evidence
    assert ctx.version("trl", facts_path).text == f"trl {CURRENT_RELEASES['trl']}, the current release"

    (Path(facts_path).parent / "requirements.txt").write_text("trl==0.21.0\n", encoding="utf-8")
    clear_caches()
    pinned = ctx.version("trl", facts)
    assert pinned.kind == "pin" and pinned.version == (0, 21, 0)  # a pin outside the implied range still wins

    configured = Context(Config(versions={"trl": "0.7.11"})).version("trl", facts)
    assert configured.kind == "config" and configured.text == "trl 0.7.11, set in config"


def test_a_loose_pin_narrows_the_implied_range_and_wins_a_conflict(tmp_path):
    script = project(tmp_path, {"requirements.txt": "trl>=0.9,!=0.12.2\n"})
    found = Context().version("trl", facts_of(OLD_SFT, script))
    assert found.kind == "implied" and found.version == (0, 11, 4)  # < 0.13, and not 0.12.2
    (Path(script).parent / "requirements.txt").write_text("trl>=0.14\n", encoding="utf-8")
    clear_caches()
    found = Context().version("trl", facts_of(OLD_SFT, script))
    assert found.kind == "current"  # the script's API says < 0.13, the pin >= 0.14: the evidence is dropped


# ------------------------------------------- PD102 follows the TRL version
@pytest.mark.parametrize("trainer, version, expected", [
    ("SFTTrainer", "0.4.7", IGNORES), ("SFTTrainer", "0.8.6", IGNORES), ("SFTTrainer", "0.19.1", IGNORES),
    ("SFTTrainer", "0.20.0", WRAPS), ("SFTTrainer", "0.21.0", WRAPS), ("SFTTrainer", "0.22.0", MERGES),
    ("SFTTrainer", "0.26.2", MERGES), ("SFTTrainer", "0.27.0", RAISES), ("SFTTrainer", "1.16.0", RAISES),
    ("DPOTrainer", "0.7.2", WRAPS), ("DPOTrainer", "0.7.3", MERGES), ("DPOTrainer", "0.26.2", MERGES),
    ("DPOTrainer", "0.27.0", RAISES), ("RewardTrainer", "0.7.1", WRAPS), ("RewardTrainer", "0.7.2", IGNORES),
    ("RewardTrainer", "0.21.0", IGNORES), ("RewardTrainer", "0.22.0", MERGES), ("GRPOTrainer", "0.21.0", WRAPS),
    ("GRPOTrainer", "0.22.0", MERGES), ("GRPOTrainer", "0.27.0", RAISES), ("ORPOTrainer", "0.26.2", MERGES),
    ("KTOTrainer", "0.27.0", RAISES), ("PPOTrainer", "0.11.4", None), ("OnlineDPOTrainer", "0.21.0", None),
])
def test_trl_behaviour_table(trainer, version, expected):
    assert trl_behaviour(trainer, parse_version(version)) == expected


SFT_ON_PEFT_MODEL = """\
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained("m"), config)
    trainer = SFTTrainer(model=model, train_dataset=data, peft_config=config{extra})
"""


@pytest.mark.parametrize("pin, extra, expected", [
    ("trl==0.8.6\n", "", None),
    ("trl==0.21.0\n", "", ("error", "calls get_peft_model on it again", "trl 0.21.0, pinned in requirements.txt")),
    ("trl>=0.22,<0.25\n", "", ("warning", "merges the first adapter", "trl 0.24.0, the newest release allowed")),
    ("", "", ("warning", "raises ValueError", "the current release")),
    ("", ", tokenizer=tok, max_seq_length=512", None),
    ("trl==0.21.0\n", ", tokenizer=tok", ("error", "calls get_peft_model on it again", "pinned in requirements.txt")),
])
def test_pd102_trainer_case_follows_the_trl_version(tmp_path, pin, extra, expected):
    script = project(tmp_path, {"requirements.txt": pin} if pin else {})
    source = textwrap.dedent(SFT_ON_PEFT_MODEL).replace("{extra}", extra)
    found = [f for f in check_source(source, script, Config()).findings if f.code == "PD102"]
    if expected is None:
        assert found == []
        return
    severity, what, versions = expected
    assert len(found) == 1 and found[0].line == 7
    assert found[0].severity.value == severity
    assert what in found[0].message and versions in found[0].versions
