"""[tool.peftdoctor] configuration: discovery, validation, selection, CLI overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftdoctor.cli import cli
from peftdoctor.config import Config, ConfigError, find_config_file, load_config
from peftdoctor.finding import Severity


def write_pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_full_table_is_read(tmp_path):
    path = write_pyproject(tmp_path, """
[project]
name = "x"

[tool.peftdoctor]
select = ["PD1", "PD201"]
ignore = ["PD103"]
extend-select = ["PD3"]
exclude = ["legacy/*", "notebooks"]
peft-version = "0.13"
transformers-version = "4.46"
torch-version = 2.4
trl-version = "0.12"

[tool.peftdoctor.per-file-ignores]
"tests/*.py" = ["PD101"]

[tool.peftdoctor.severity]
PD201 = "warning"
PD2 = "info"
""")
    config = load_config(path)
    assert config.select == ["PD1", "PD201"]
    assert config.ignore == ["PD103"]
    assert config.extend_select == ["PD3"]
    assert config.per_file_ignores == {"tests/*.py": ["PD101"]}
    assert config.exclude == ["legacy/*", "notebooks"]
    assert config.versions == {"peft": "0.13", "transformers": "4.46", "torch": "2.4", "trl": "0.12"}
    assert config.source == path and config.root == tmp_path
    # selection: select, then extend-select, minus ignore
    assert config.is_enabled("PD101")
    assert not config.is_enabled("PD103")
    assert config.is_enabled("PD201")
    assert not config.is_enabled("PD202")
    assert config.is_enabled("PD302")
    assert not config.is_enabled("PD601")
    # per-file-ignores are relative to the config's folder
    assert not config.is_enabled("PD101", str(tmp_path / "tests" / "test_train.py"))
    assert config.is_enabled("PD101", str(tmp_path / "train.py"))
    assert config.is_enabled("PD102", str(tmp_path / "tests" / "test_train.py"))
    # the most specific severity override wins
    assert config.severity_of("PD201", Severity.ERROR) == Severity.WARNING
    assert config.severity_of("PD202", Severity.ERROR) == Severity.INFO
    assert config.severity_of("PD101", Severity.ERROR) == Severity.ERROR
    # exclude: a folder name or a glob relative to the root
    assert config.is_excluded(tmp_path / "legacy" / "old.py")
    assert config.is_excluded(tmp_path / "notebooks")
    assert not config.is_excluded(tmp_path / "train.py")


def test_defaults_enable_everything():
    config = Config()
    assert config.is_enabled("PD101", "any/where.py")
    assert config.severity_of("PD201", Severity.WARNING) == Severity.WARNING
    assert not config.is_excluded(Path("train.py"))


@pytest.mark.parametrize(
    "body, needle",
    [
        ("[tool.peftdoctor]\nselct = ['PD1']\n", "unknown key 'selct'"),
        ("[tool.peftdoctor]\nselect = 'PD1'\nfoo = 1\n", "unknown key 'foo'"),
        ("[tool.peftdoctor]\nselect = [1]\n", "'select' must be a list of rule codes"),
        ("[tool.peftdoctor]\nignore = ['E501']\n", "'E501'"),
        ("[tool.peftdoctor]\nper-file-ignores = ['x']\n", "'per-file-ignores' must be a table"),
        ("[tool.peftdoctor]\nexclude = 'x'\n", "'exclude' must be a list of globs"),
        ("[tool.peftdoctor.severity]\nPD101 = 'fatal'\n", "must be error, warning or info, not 'fatal'"),
        ("[tool.peftdoctor.severity]\nPD-101 = 'error'\n", "'PD-101'"),
        ("[tool.peftdoctor]\npeft-version = ['0.13']\n", "'peft-version' must be a version string"),
        ("[tool.peftdoctor\nselect = []\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_file_and_the_problem(tmp_path, body, needle):
    path = write_pyproject(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(find_config_file(tmp_path) or path)
    message = str(info.value)
    assert str(path) in message and needle in message
    assert "\n" not in message


def test_walks_up_to_the_nearest_table(tmp_path):
    write_pyproject(tmp_path, "[tool.peftdoctor]\nignore = ['PD2']\n")
    inner = tmp_path / "pkg" / "sub"
    inner.mkdir(parents=True)
    # a pyproject.toml without our table is passed over
    write_pyproject(tmp_path / "pkg", "[project]\nname = 'pkg'\n")
    script = inner / "train.py"
    script.write_text("x = 1\n")
    assert find_config_file(script) == tmp_path / "pyproject.toml"
    assert find_config_file(inner) == tmp_path / "pyproject.toml"
    write_pyproject(inner, "[tool.peftdoctor]\n")
    assert find_config_file(script) == inner / "pyproject.toml"


def test_peftdoctor_toml_top_level(tmp_path):
    path = tmp_path / "peftdoctor.toml"
    path.write_text("ignore = ['PD3']\n")
    assert load_config(path).ignore == ["PD3"]
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


# --- through the CLI ---------------------------------------------------------


def run_cli(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)


def test_cli_unknown_key_is_one_line_exit_2(tmp_path):
    path = write_pyproject(tmp_path, "[tool.peftdoctor]\nselec = ['PD1']\n")
    (tmp_path / "train.py").write_text("x = 1\n")
    result = run_cli(["check", "train.py"], tmp_path)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("peftdoctor: error: ")
    assert "unknown key 'selec'" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.output


def test_cli_explicit_config_and_bad_cli_code(tmp_path):
    (tmp_path / "train.py").write_text("x = 1\n")
    other = tmp_path / "conf" / "peftdoctor.toml"
    other.parent.mkdir()
    other.write_text("nonsense = true\n")
    result = run_cli(["check", "--config", str(other), "train.py"], tmp_path)
    assert result.exit_code == 2 and "unknown key 'nonsense'" in result.output
    result = run_cli(["check", "--config", str(tmp_path / "nope.toml"), "train.py"], tmp_path)
    assert result.exit_code == 2 and "config file not found" in result.output
    result = run_cli(["check", "--select", "PD1,F401", "train.py"], tmp_path)
    assert result.exit_code == 2 and "'F401' is not a rule code" in result.output


def test_cli_flags_override_the_file(tmp_path):
    from peftdoctor.cli import check_configs, overrides_of

    def resolve_config(path, select, ignore, extend_select):
        return check_configs(None, overrides_of(select, ignore, extend_select)).for_path(path)

    write_pyproject(tmp_path, "[tool.peftdoctor]\nselect = ['PD1']\nignore = ['PD103']\n")
    (tmp_path / "train.py").write_text("x = 1\n")
    config = resolve_config(tmp_path / "train.py", ("PD2",), ("PD202",), ("PD3",))
    assert config.select == ["PD2"]
    assert config.ignore == ["PD103", "PD202"]
    assert config.extend_select == ["PD3"]
    assert not config.is_enabled("PD101")
    assert config.is_enabled("PD201") and not config.is_enabled("PD202")
    # and without flags, the file decides
    config = resolve_config(tmp_path / "train.py", (), (), ())
    assert config.is_enabled("PD101") and not config.is_enabled("PD201")


WRAPPED = (
    "from peft import LoraConfig, PeftModel, get_peft_model\n"
    "model = get_peft_model(base, LoraConfig(r=8))\n"
    'model = PeftModel.from_pretrained(model, "out")\n'
)


def test_config_end_to_end_with_a_real_rule(tmp_path):
    """per-file-ignores, exclude and severity change what `check` reports and its exit code."""
    for name in ("train.py", "scripts/ok_here.py", "legacy/old.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(WRAPPED)
    result = run_cli(["check", "."], tmp_path)
    assert result.exit_code == 1 and result.output.count("PD101") == 3

    write_pyproject(tmp_path, """
[tool.peftdoctor]
exclude = ["legacy"]
[tool.peftdoctor.per-file-ignores]
"scripts/*.py" = ["PD1"]
""")
    result = run_cli(["check", "."], tmp_path)
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in result.output.splitlines() if "PD101" in line] == ["train.py"]

    # the walk-up works from a subfolder too, and severity info means exit 0
    write_pyproject(tmp_path, '[tool.peftdoctor]\nexclude = ["legacy"]\nseverity = {PD101 = "info"}\n')
    result = run_cli(["check", "--format", "json", "."], tmp_path)
    import json

    data = json.loads(result.output)
    assert result.exit_code == 0
    assert {f["severity"] for f in data["findings"]} == {"info"} and len(data["findings"]) == 2
    result = run_cli(["check", "--ignore", "PD101", "."], tmp_path)
    assert result.exit_code == 0 and "PD101" not in result.output
    result = run_cli(["check", "--select", "PD2", "."], tmp_path)
    assert result.exit_code == 0 and "No findings in 2 files." in result.output
