"""The pytest plugin, run through pytest itself (pytester)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

WRAPPED = textwrap.dedent('''\
    from peft import LoraConfig, PeftModel, get_peft_model
    model = get_peft_model(base, LoraConfig(r=8))
    model = PeftModel.from_pretrained(model, "out")
''')
CLEAN = "from peft import LoraConfig\ncfg = LoraConfig(r=8)\n"


def test_importing_the_plugin_is_light():
    code = (
        "import sys, peftdoctor.pytest_plugin\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'libcst', 'peftdoctor.engine', 'rich')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_the_flag_it_does_nothing(pytester):
    pytester.makepyfile(train=WRAPPED)
    pytester.makepyfile(test_light=textwrap.dedent("""\
        import sys

        def test_nothing_heavy_loaded():
            loaded = [m for m in ("peftdoctor.engine", "libcst", "torch") if m in sys.modules]
            assert not loaded, loaded
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["collected 1 item"])
    assert "peftdoctor:" not in result.stdout.str()


def test_flag_collects_one_item_per_file_and_fails_with_findings(pytester):
    pytester.makepyfile(train=WRAPPED, clean=CLEAN, test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest("--peftdoctor", "-v")
    # train.py, clean.py and test_ok.py each give an item; test_ok.py also its test
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*train.py::peftdoctor FAILED*",
        "*train.py:3:9: PD101 the model passed to PeftModel.from_pretrained is already a PeftModel*",
        "*hint: *",
    ])
    assert "clean.py::peftdoctor PASSED" in result.stdout.str()
    # the marker selects only our items
    result = pytester.runpytest("--peftdoctor", "-m", "peftdoctor")
    result.assert_outcomes(passed=2, failed=1)


def test_results_are_cached_by_content(pytester):
    pytester.makepyfile(train=WRAPPED, clean=CLEAN)
    first = pytester.runpytest("--peftdoctor")
    first.assert_outcomes(passed=1, failed=1)
    first.stdout.fnmatch_lines(["peftdoctor: 2 file(s) checked, 0 unchanged file(s) from cache"])
    second = pytester.runpytest("--peftdoctor")
    second.assert_outcomes(passed=1, failed=1)  # the cached result still fails
    second.stdout.fnmatch_lines(["peftdoctor: 0 file(s) checked, 2 unchanged file(s) from cache"])
    second.stdout.fnmatch_lines(["*PD101*"])
    # fixing the file changes its content: it is checked again, and now passes
    (pytester.path / "train.py").write_text(WRAPPED.replace("PeftModel.from_pretrained(model", "PeftModel.from_pretrained(base"))
    third = pytester.runpytest("--peftdoctor")
    third.assert_outcomes(passed=2)
    third.stdout.fnmatch_lines(["peftdoctor: 1 file(s) checked, 1 unchanged file(s) from cache"])
    fourth = pytester.runpytest("--peftdoctor", "--cache-clear")
    fourth.stdout.fnmatch_lines(["peftdoctor: 2 file(s) checked, 0 unchanged file(s) from cache"])


def test_settings_change_invalidates_the_cache(pytester):
    pytester.makepyfile(train=WRAPPED)
    pytester.runpytest("--peftdoctor").assert_outcomes(failed=1)
    pytester.makefile(".toml", pyproject='[tool.peftdoctor]\nignore = ["PD101"]\n')
    result = pytester.runpytest("--peftdoctor")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["peftdoctor: 1 file(s) checked, 0 unchanged file(s) from cache"])


def test_config_exclude_and_bad_config(pytester):
    pytester.makepyfile(train=WRAPPED)
    (pytester.path / "legacy").mkdir()
    (pytester.path / "legacy" / "old.py").write_text(WRAPPED)
    pytester.makefile(".toml", pyproject='[tool.peftdoctor]\nexclude = ["legacy"]\n')
    result = pytester.runpytest("--peftdoctor", "-v")
    result.assert_outcomes(failed=1)
    assert "old.py" not in result.stdout.str()
    pytester.makefile(".toml", pyproject='[tool.peftdoctor]\nexclud = ["legacy"]\n')
    result = pytester.runpytest("--peftdoctor")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*unknown key 'exclud' in [[]tool.peftdoctor[]]*"])
    assert "Traceback" not in result.stdout.str()


def test_syntax_error_file_fails_with_pd000(pytester):
    pytester.makepyfile(broken="import peft\ndef f(:\n    pass\n")
    result = pytester.runpytest("--peftdoctor")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*broken.py:2:*PD000 file does not parse*"])


# --- adapter folders -------------------------------------------------------------


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two real adapters saved by peft on a tiny llama: one untrained, one with trained lora_B."""
    import torch
    from peft import LoraConfig, get_peft_model

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from tiny import tiny_llama

    root = tmp_path_factory.mktemp("adapters")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    untrained = get_peft_model(tiny_llama(), config)
    untrained.save_pretrained(root / "untrained")
    trained = get_peft_model(tiny_llama(), config)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    trained.save_pretrained(root / "trained")
    return root


def test_adapter_folders_are_items(pytester, adapters):
    shutil.copytree(adapters / "untrained", pytester.path / "runs" / "untrained")
    shutil.copytree(adapters / "trained", pytester.path / "runs" / "trained")
    result = pytester.runpytest("--peftdoctor", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*runs/trained/adapter_config.json::peftdoctor-inspect PASSED*",
        "*runs/untrained/adapter_config.json::peftdoctor-inspect FAILED*",
        "*PD605*",
    ])


# --- fixtures for users' tests ---------------------------------------------------


def test_fixtures_in_a_users_test(pytester, adapters):
    shutil.copytree(adapters / "untrained", pytester.path / "untrained")
    pytester.makepyfile(train=WRAPPED)
    pytester.makepyfile(test_user=textwrap.dedent('''\
        from pathlib import Path

        def test_check_a_source_string(peftdoctor_check):
            src = "from peft import PeftModel, get_peft_model\\nm = get_peft_model(b, c)\\nm = PeftModel.from_pretrained(m, 'o')\\n"
            assert [f.code for f in peftdoctor_check(src)] == ["PD101"]
            assert peftdoctor_check(src, ignore="PD1") == []
            assert [f.line for f in peftdoctor_check(source=src, path="x.py")] == [3]

        def test_check_a_path(peftdoctor_check):
            found = peftdoctor_check(Path("train.py"))
            assert [(f.code, f.path) for f in found] == [("PD101", "train.py")]
            assert [f.code for f in peftdoctor_check("train.py", select=["PD2"])] == []

        def test_inspect_an_adapter(peftdoctor_inspect):
            assert "PD605" in [f.code for f in peftdoctor_inspect("untrained")]
            assert "PD605" not in [f.code for f in peftdoctor_inspect("untrained", ignore=["PD605"])]
            assert [f.code for f in peftdoctor_inspect("untrained", select="PD605")] == ["PD605"]
    '''))
    result = pytester.runpytest("test_user.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_diagnose_fixture(pytester):
    pytester.makepyfile(test_live=textwrap.dedent('''\
        import sys
        sys.path.insert(0, %r)
        from peft import LoraConfig, PeftModel, get_peft_model
        from tiny import tiny_llama

        def test_nested_model_is_reported(peftdoctor_diagnose):
            cfg = LoraConfig(r=4, target_modules=["q_proj"])
            model = get_peft_model(tiny_llama(), cfg)
            codes = [f.code for f in peftdoctor_diagnose(get_peft_model(model, cfg))]
            assert "PD706" in codes
    ''' % str(__import__("pathlib").Path(__file__).parent)))
    result = pytester.runpytest("test_live.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
