"""`--fix` and `--output` write like a careful editor (peftdoctor.safe_write).

The tests run as root in CI: "cannot write" is decided from the mode bits and owner, not from a failed
open, so a 0444 file is refused by root too.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

import peftdoctor.fix as fix_module
from peftdoctor.cli import cli
from peftdoctor.safe_write import Refused, may_write, read_snapshot, replace_file

RESUME = '''from transformers import AutoModelForCausalLM, Trainer
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("base")
model = PeftModel.from_pretrained(
    base,
    "out",  # the adapter
)
Trainer(model=model).train()
'''
FIXED = RESUME.replace('    "out",  # the adapter\n', '    "out",  # the adapter\n    is_trainable=True,\n')


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(RESUME)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def assert_refused(result, name, words):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("peftdoctor: error: ") and name in lines[0], lines
    assert words in lines[0], lines


def no_temp_files(folder):
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# --- --fix --------------------------------------------------------------------

def test_read_only_file_is_refused_even_for_root(project):
    script = project / "train.py"
    os.chmod(script, 0o444)
    assert not may_write(script.stat())  # the rule from the mode bits, whoever runs it
    result = invoke("check", "--fix", "train.py")
    assert_refused(result, "train.py", "read-only (mode 0444)")
    assert script.read_text() == RESUME
    assert stat.S_IMODE(script.stat().st_mode) == 0o444
    assert no_temp_files(project)


def test_refusal_comes_before_any_write(project):
    other = project / "a_other.py"
    other.write_text(RESUME)
    os.chmod(project / "train.py", 0o444)
    result = invoke("check", "--fix", ".")
    assert result.exit_code == 2
    assert other.read_text() == RESUME  # sorted first, but nothing is written when one file is refused


def test_mode_is_kept(project):
    script = project / "train.py"
    os.chmod(script, 0o640)
    result = invoke("check", "--fix", "train.py")
    assert result.exit_code == 0, result.output
    assert script.read_text() == FIXED
    assert stat.S_IMODE(script.stat().st_mode) == 0o640
    assert no_temp_files(project)


@pytest.mark.parametrize("walk", [False, True])
def test_symlink_target_is_fixed_and_link_kept(tmp_path, monkeypatch, walk):
    monkeypatch.chdir(tmp_path)
    real_folder = tmp_path / "real"
    real_folder.mkdir()
    target = real_folder / "train.py"
    target.write_text(RESUME)
    checked = tmp_path / "checked"
    checked.mkdir()
    link = checked / "link.py"
    link.symlink_to(target)
    result = invoke("check", "--fix", "checked" if walk else "checked/link.py")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == FIXED
    assert no_temp_files(checked) and no_temp_files(real_folder)
    # a second --fix changes nothing
    mtime = target.stat().st_mtime_ns
    assert invoke("check", "--fix", "checked").exit_code == 0
    assert target.stat().st_mtime_ns == mtime


def test_link_and_target_both_checked_fix_once(project):
    (project / "link.py").symlink_to(project / "train.py")
    result = invoke("check", "--fix", ".")
    assert result.exit_code == 0, result.output
    assert (project / "train.py").read_text() == FIXED and (project / "link.py").is_symlink()


def test_concurrent_change_is_not_overwritten(project, monkeypatch):
    script = project / "train.py"
    edited = RESUME.replace("# the adapter", "# edited meanwhile")
    real_apply = fix_module.apply_edits

    def apply_while_someone_edits(source, edits):
        script.write_text(edited)  # another editor saves between our read and our write
        return real_apply(source, edits)

    monkeypatch.setattr(fix_module, "apply_edits", apply_while_someone_edits)
    result = invoke("check", "--fix", "train.py")
    assert_refused(result, "train.py", "changed since it was read")
    assert script.read_text() == edited
    assert no_temp_files(project)


def test_same_size_same_mtime_change_is_seen(tmp_path):
    path = tmp_path / "f.py"
    path.write_bytes(b"x = 1\n")
    _, snapshot = read_snapshot(path)
    st = path.stat()
    path.write_bytes(b"x = 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Refused, match="changed since it was read"):
        replace_file(path, lambda stream: stream.write(b"x = 3\n"), snapshot)
    assert path.read_bytes() == b"x = 2\n"


def test_unchanged_files_untouched_and_second_fix_is_noop(project):
    clean = project / "clean.py"
    clean.write_text("from peft import LoraConfig\n\ncfg = LoraConfig(r=8)\n")
    os.chmod(clean, 0o444)  # read-only but needs no fix: no error
    before = clean.stat().st_mtime_ns
    assert invoke("check", "--fix", ".").exit_code == 0
    mtime = (project / "train.py").stat().st_mtime_ns
    assert invoke("check", "--fix", ".").exit_code == 0
    assert (project / "train.py").stat().st_mtime_ns == mtime
    assert clean.stat().st_mtime_ns == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file of another user")
def test_other_users_file_keeps_its_owner_as_root(project):
    script = project / "train.py"
    os.chown(script, 12345, 12345)
    os.chmod(script, 0o664)
    assert invoke("check", "--fix", "train.py").exit_code == 0
    st = script.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12345, 12345, 0o664)


# --- --output -----------------------------------------------------------------

def test_output_fifo_is_refused(project):
    fifo = project / "report.fifo"
    os.mkfifo(fifo)
    result = invoke("check", "--output", str(fifo), "train.py")
    assert_refused(result, "report.fifo", "a FIFO, not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_output_dev_null_is_refused(project):
    result = invoke("check", "--output", os.devnull, "train.py")
    assert_refused(result, os.devnull, "not a regular file")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.mark.parametrize("spelling", ["train.py", "./train.py", "link.py"])
def test_output_naming_a_checked_script_is_refused(project, spelling):
    (project / "link.py").symlink_to(project / "train.py")
    result = invoke("check", "--fix", "--output", spelling, "train.py")
    assert_refused(result, spelling, "one of the checked files")
    assert (project / "train.py").read_text() == RESUME  # refused before --fix ran


def test_output_naming_a_walked_script_is_refused(project):
    result = invoke("check", "--output", "train.py", ".")
    assert_refused(result, "train.py", "one of the checked files")
    assert (project / "train.py").read_text() == RESUME


def test_output_symlink_writes_target_and_keeps_link(project):
    target = project / "reports" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    os.chmod(target, 0o640)
    link = project / "report.json"
    link.symlink_to(target)
    result = invoke("check", "--format", "json", "--output", "report.json", "train.py")
    assert result.exit_code == 1, result.output
    assert link.is_symlink()
    assert json.loads(target.read_text())["findings"][0]["code"] == "PD103"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_output_read_only_is_refused(project):
    report = project / "report.txt"
    report.write_text("old")
    os.chmod(report, 0o444)
    result = invoke("check", "--output", "report.txt", "train.py")
    assert_refused(result, "report.txt", "read-only")
    assert report.read_text() == "old"


def test_new_output_file_is_ordinary(project):
    result = invoke("check", "--output", "report.txt", "train.py")
    assert result.exit_code == 1
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((project / "report.txt").stat().st_mode) == 0o666 & ~umask
    assert "PD103" in (project / "report.txt").read_text()
    assert no_temp_files(project)


# --- the rule for a process that is not root (decided from stat, so it can be tested as root) ---------

def fake_stat(mode, uid, gid):
    return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))


def test_write_rule_for_a_normal_user(monkeypatch):
    from peftdoctor.safe_write import check_replaceable

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    monkeypatch.setattr(os, "getgroups", lambda: [1000, 50])
    assert may_write(fake_stat(0o644, 1000, 1000))
    assert not may_write(fake_stat(0o444, 1000, 1000))
    assert not may_write(fake_stat(0o464, 1000, 1000))  # the owner class decides, as the kernel does
    assert may_write(fake_stat(0o464, 2000, 50))
    assert not may_write(fake_stat(0o644, 2000, 50))
    assert may_write(fake_stat(0o646, 2000, 2000))
    check_replaceable(fake_stat(0o644, 1000, 50))
    with pytest.raises(Refused, match="owned by another user"):
        check_replaceable(fake_stat(0o666, 2000, 2000))  # a rename would make it the runner's


def test_failure_mid_write_leaves_old_content_and_no_temp_file(tmp_path):
    path = tmp_path / "f.py"
    path.write_bytes(b"old\n")

    def crash(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_file(path, crash)
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.py"]
