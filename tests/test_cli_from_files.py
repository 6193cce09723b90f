"""`peftdoctor inspect --from-files`: what the pre-commit hook runs."""

from __future__ import annotations

from click.testing import CliRunner

from peftdoctor.cli import cli, folders_of


def test_folders_of_maps_files_to_folders_once(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "runs" / "b"
    a.mkdir()
    b.mkdir(parents=True)
    files = [a / "adapter_config.json", a / "adapter_model.safetensors", b / "adapter_model.bin", b]
    for f in files[:3]:
        f.write_text("x")
    assert folders_of([str(f) for f in files]) == (str(a), str(b))


def test_inspect_from_files_checks_the_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "adapters" / "broken"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{not json")
    (broken / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    result = CliRunner().invoke(cli, ["inspect", "--from-files", "--format", "json",
                                      "adapters/broken/adapter_config.json",
                                      "adapters/broken/adapter_model.safetensors"])
    assert result.exit_code == 1, result.output
    import json

    data = json.loads(result.output)
    assert data["kind"] == "inspect" and data["files_checked"] == 1
    assert [f["code"] for f in data["findings"]] == ["PD600"]
