"""Hostile inputs to `inspect` (issue 21): pattern keys, special files, odd folder names, printable output.

Each test builds the input on disk and runs the real CLI or the real function; none is timed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from peftdoctor.inspect.pattern_keys import UNKNOWN, PatternKeys


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, **kwargs)


def write_adapter(folder: Path, layers: int, rank_pattern: dict, odd_rank_layer: int = 0) -> Path:
    """A LoRA adapter of `layers` q_proj modules of rank 2, one (odd_rank_layer) of rank 3, and r = 2."""
    folder.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for index in range(layers):
        rank = 3 if index == odd_rank_layer else 2
        for role, shape in (("lora_A", [rank, 1]), ("lora_B", [1, rank])):
            name = f"base_model.model.model.layers.{index}.self_attn.q_proj.{role}.weight"
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * rank]}
            offset += 4 * rank
    blob = json.dumps(header).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\x01" * offset)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
              "rank_pattern": rank_pattern}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


# --- rank_pattern / alpha_pattern keys --------------------------------------------------------------------

def peft_key(patterns, module):
    """peft's own rule (tuners/lora/model.py): the first key with re.match(rf"(.*\\.)?({key})$", module)."""
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", module)), None)


def test_pattern_keys_agree_with_peft_on_plain_and_safe_regex_keys():
    rng = random.Random(0)
    parts = ["model", "layers", "0", "1", "12", "self_attn", "q_proj", "v_proj", "mlp", "up_proj"]
    modules = sorted({".".join(rng.choice(parts) for _ in range(rng.randint(1, 5))) for _ in range(300)})
    keys = [".".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(60)]
    keys += [r"layers\.\d+\.q_proj", r"(q|v)_proj", r"mlp\.up_proj", r"1[0-9]\.self_attn"]
    rng.shuffle(keys)
    patterns = dict.fromkeys(keys, 1)
    index = PatternKeys(patterns, modules)
    for module in modules:
        assert index.key_for(module) == peft_key(patterns, module), module
    assert sorted(index.unmatched()) == sorted(k for k in patterns if not any(peft_key([k], m) for m in modules))


def test_a_catastrophic_backtracking_key_is_unknown_and_never_tried():
    evil = "(a|aa)+(b|bb)+(c+)+" + "$" * 21  # 40 characters; re.match on 'aaaa...x' backtracks exponentially
    assert len(evil) == 40
    index = PatternKeys({evil: 4, "q_proj": 8}, ["a" * 60 + "x", "layers.0.q_proj"])
    assert index.key_for("a" * 60 + "x") is UNKNOWN  # returned at once: the key is refused before any match
    assert index.key_for("layers.0.q_proj") is UNKNOWN  # the evil key comes first in peft's order
    assert PatternKeys({"q_proj": 8, evil: 4}, []).key_for("layers.0.q_proj") == "q_proj"  # decided before it
    assert index.unmatched() == []  # nothing certain is claimed about an untried key


def test_many_keys_on_many_tensors_through_the_cli(tmp_path):
    """7,143 keys x 40,000 tensors: the per-key regex loop took minutes here, the suffix lookup a few seconds."""
    keys = {f"model.layers.{i}.self_attn.q_proj": 2 for i in range(1, 7143)} | {"not_a_module": 2}
    folder = write_adapter(tmp_path / "big", 20_000, keys)
    result = run_cli("inspect", str(folder), "--format", "json")
    messages = [f["message"] for f in json.loads(result.stdout)["findings"] if f["code"] == "PD604"]
    assert messages == ["module 'model.layers.0.self_attn.q_proj' has rank 3 but r = 2 in adapter_config.json",
                        "rank_pattern key 'not_a_module' matches no adapted module"]


def test_an_evil_key_in_the_config_leaves_the_module_unjudged(tmp_path):
    folder = write_adapter(tmp_path / "evil", 50, {"(a|aa)+(b|bb)+(c+)+$": 3, "layers.1.self_attn.q_proj": 2})
    result = run_cli("inspect", str(folder), "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    assert [f for f in json.loads(result.stdout)["findings"] if f["code"] in ("PD604", "PD002")] == []


# --- special files: a FIFO, device or socket is reported, never opened blocking ----------------------------

GOOD = Path(__file__).resolve().parent.parent / "fixtures" / "adapters" / "good-llama"


def copy_good(folder: Path, skip: str = "") -> Path:
    folder.mkdir(parents=True)
    for file in GOOD.iterdir():
        if file.name != skip:
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_a_fifo_config_or_weights_is_one_clear_finding(tmp_path):
    """Before: `inspect` blocked forever in open() on the FIFO (the test would hang, not fail)."""
    config_fifo = copy_good(tmp_path / "config", skip="adapter_config.json")
    os.mkfifo(config_fifo / "adapter_config.json")
    weights_fifo = copy_good(tmp_path / "weights", skip="adapter_model.safetensors")
    os.mkfifo(weights_fifo / "adapter_model.safetensors")
    for args, code, where in (((str(config_fifo),), "PD600", config_fifo),
                              ((str(config_fifo / "adapter_config.json"),), "PD600", config_fifo),
                              ((str(weights_fifo),), "PD602", weights_fifo / "adapter_model.safetensors")):
        result = run_cli("inspect", *args, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{where}: {code} " in result.stdout and "is a FIFO, not a regular file" in result.stdout


def test_a_device_or_socket_named_like_an_adapter_file_is_refused(tmp_path):
    folder = copy_good(tmp_path / "dev", skip="adapter_model.safetensors")
    (folder / "adapter_model.safetensors").symlink_to("/dev/zero")  # endless if it were read
    result = run_cli("inspect", str(folder), timeout=60)
    assert "PD602 cannot read: is a character device, not a regular file" in result.stdout
    sock_folder = tmp_path / "sock"
    sock_folder.mkdir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_folder / "adapter_config.json"))
        result = run_cli("inspect", str(sock_folder), timeout=60)
    finally:
        server.close()
    assert "PD600 cannot read" in result.stdout and "is a socket, not a regular file" in result.stdout


def test_check_refuses_a_fifo_script_by_name_and_in_a_folder(tmp_path):
    os.mkfifo(tmp_path / "train.py")
    for target in (tmp_path / "train.py", tmp_path):
        result = run_cli("check", str(target), timeout=60)
        assert result.returncode == 2, result.stdout
        assert result.stderr.strip() == f"peftdoctor: error: {tmp_path / 'train.py'}: cannot read: is a FIFO, " \
                                        "not a regular file"


def test_a_fifo_pyproject_is_a_config_error_not_a_hang(tmp_path):
    (tmp_path / "train.py").write_text("import peft\n")
    os.mkfifo(tmp_path / "pyproject.toml")
    result = run_cli("check", str(tmp_path / "train.py"), "--config", str(tmp_path / "pyproject.toml"), timeout=60)
    assert result.returncode == 2 and "is a FIFO, not a regular file" in result.stderr, result.stderr


# --- checkpoint folders and homes ---------------------------------------------------------------------------

def test_checkpoints_named_with_non_ascii_digits_are_sorted_without_a_crash(tmp_path):
    """Before: int('③') raised ValueError in the natural sort, a traceback for the whole run."""
    for name in ("checkpoint-²", "checkpoint-③", "checkpoint-٣", "checkpoint-10", "checkpoint-" + "9" * 200):
        copy_good(tmp_path / name)
    result = run_cli("inspect", str(tmp_path), "--format", "json", timeout=120)
    assert result.returncode == 0, result.stderr
    order = [Path(adapter["path"]).name for adapter in json.loads(result.stdout)["adapters"]]
    # '٣' is the Arabic-Indic digit three: a decimal int() reads, so it sorts as step 3 before 10
    assert order == ["checkpoint-٣", "checkpoint-10", "checkpoint-" + "9" * 200, "checkpoint-²", "checkpoint-③"]


def test_no_home_directory_means_no_hf_cache_not_an_error(monkeypatch, tmp_path):
    """No HOME and no passwd entry (a bare container): Path.expanduser raises RuntimeError; the base is just not
    found in a cache."""
    import pwd

    from peftdoctor.inspect.base_model import resolve_base

    monkeypatch.delenv("HOME", raising=False)
    for variable in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)

    def no_entry(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    try:
        Path("~/x").expanduser()
    except RuntimeError:
        pass
    else:
        raise AssertionError("expanduser should fail without a home directory")
    assert resolve_base("meta-llama/Llama-3.2-1B", tmp_path) is None
    assert resolve_base("~/models/base", tmp_path) is None


# --- printable output: lone surrogates and non-UTF-8 names in every format ----------------------------------

FORMATS = ("text", "json", "github", "sarif", "junit")


def hostile_tree(root: Path) -> tuple[Path, Path]:
    """An adapter in a folder named with bytes that are not UTF-8, whose config and header hold lone surrogates,
    and a script under such a name."""
    raw = os.fsencode(root)
    adapter = Path(os.fsdecode(raw + b"/ad\xff\xfe"))
    copy_good(adapter)
    config = json.loads((GOOD / "adapter_config.json").read_text())
    config |= {"target_modules": ["q_proj", "v_proj", "\ud800x"], "base_model_name_or_path": "b\udcff\u00e9\x01"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))  # json escapes them as \ud800
    data = (GOOD / "adapter_model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["base_model.model.model.layers.0.self_attn.k\ud800_proj.lora_A.weight"] = \
        header["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    blob = json.dumps(header).encode()
    (adapter / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + length:])
    script = Path(os.fsdecode(raw + b"/s\xff/tr\xe9\xff.py"))
    script.parent.mkdir()
    script.write_bytes(sorted((GOOD.parent.parent / "scripts" / "PD103").glob("bad_*.py"))[0].read_bytes())
    return adapter, script


def test_every_format_prints_hostile_strings_on_any_stdout_encoding(tmp_path):
    """Before: UnicodeEncodeError tracebacks in text, github and junit (utf-8 and ascii stdout alike)."""
    adapter, script = hostile_tree(tmp_path)
    for encoding in ("utf-8", "ascii"):
        env = {**os.environ, "PYTHONIOENCODING": encoding}
        for fmt in FORMATS:
            for args in (("inspect", str(adapter)), ("check", str(script))):
                result = run_cli(*args, "--format", fmt, env=env, timeout=120)
                assert result.returncode == 1 and "Traceback" not in result.stderr, (encoding, fmt, result.stderr)
                assert "PD0" not in result.stdout, (encoding, fmt, result.stdout)  # no internal error either
                if fmt in ("json", "sarif"):
                    json.loads(result.stdout)
                if fmt == "junit":
                    from xml.dom.minidom import parseString

                    parseString(result.stdout.encode())
                if fmt == "text" and args[0] == "inspect":
                    assert "ad\\udcff\\udcfe" in result.stdout  # the name's bytes, shown as escapes


def test_a_report_file_holds_hostile_strings_too(tmp_path):
    adapter, _ = hostile_tree(tmp_path)
    for fmt in FORMATS:
        report = tmp_path / f"report.{fmt}"
        result = run_cli("inspect", str(adapter), "--format", fmt, "--output", str(report), timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (fmt, result.stderr)
        report.read_text(encoding="utf-8")  # valid UTF-8 on disk


# --- --fix on deeply nested but valid code ------------------------------------------------------------------

DEEP_TAILS = {"chain": "x = a" + ".f()" * 199, "list": "x = " + "[" * 199 + "]" * 199,
              "lambdas": "x = " + "lambda: " * 999 + "0"}


def test_fix_refuses_deeply_nested_code_with_one_line_and_leaves_it_untouched(tmp_path):
    """Before: RecursionError traceback from libcst's code generator (check itself reads these files).

    Only the top-level statement holding the fix is rewritten, so deep code elsewhere no longer blocks the
    fix; deep code inside that statement (here the class) still does."""
    fixable = sorted((GOOD.parent.parent / "scripts" / "PD103").glob("bad_*.py"))[0].read_text()
    for name, tail in DEEP_TAILS.items():
        inside = fixable.replace("    def train_task", f"    {tail}\n\n    def train_task", 1)
        assert inside != fixable
        script = tmp_path / f"{name}.py"
        script.write_text(inside)
        compile(script.read_text(), name, "exec")  # valid Python
        result = run_cli("check", "--fix", str(script), timeout=120)
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert result.stderr.splitlines() == [f"peftdoctor: warning: {script}: fix skipped: the code is nested too "
                                              "deeply for libcst to rewrite it; apply the fix by hand"]
        assert result.returncode == 1 and "PD103" in result.stdout
        assert script.read_text() == inside
        apart = tmp_path / f"{name}_apart.py"
        apart.write_text(fixable + tail + "\n")
        result = run_cli("check", "--fix", str(apart), timeout=120)
        assert "fix skipped" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
        fixed = apart.read_text()
        assert "is_trainable=True" in fixed and fixed.endswith("\n" + tail + "\n")


@contextlib.contextmanager
def as_unprivileged_user():
    """Permissions only bind a user who is not root: as root, act as `nobody` for the block (effective uid)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_unreadable_folders_and_configs_are_one_clear_finding_each():
    """Before: PermissionError traceback from Path.is_file in the folder walk (a checkpoint folder of mode 000)."""
    from peftdoctor.config import Config
    from peftdoctor.inspect.discover import InputError
    from peftdoctor.inspect.run import inspect_paths

    root = Path(tempfile.mkdtemp(prefix="pd-perm-"))  # not under pytest's 0700 folder: `nobody` must enter it
    try:
        os.chmod(root, 0o755)
        # The base too: `nobody` cannot read the checkout's own fixtures when it lies in a 0700 folder.
        base = shutil.copytree(GOOD.parent.parent / "bases" / "tiny-llama", root / "base")
        for name in ("checkpoint-1", "checkpoint-2", "checkpoint-3"):
            config = copy_good(root / name) / "adapter_config.json"
            config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(base)}))
        for item in (root, *root.rglob("*")):
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
        inspect_paths([root / "checkpoint-1"], config=Config(), show_summary=False)  # imports done as ourselves
        os.chmod(root / "checkpoint-2", 0)
        os.chmod(root / "checkpoint-3" / "adapter_config.json", 0)
        with as_unprivileged_user():
            findings = inspect_paths([root], config=Config(), show_summary=False).findings
            try:
                inspect_paths([root / "checkpoint-2" / "adapter_config.json"], config=Config(), show_summary=False)
            except InputError as exc:
                refused = str(exc)
    finally:
        os.chmod(root / "checkpoint-2", 0o755)
        shutil.rmtree(root)
    assert [(f.code, Path(f.path).name, f.message) for f in findings if f.code in ("PD600", "PD002")] == [
        ("PD600", name, f"cannot read {root / name / 'adapter_config.json'}: Permission denied")
        for name in ("checkpoint-2", "checkpoint-3")]
    assert refused == f"{root / 'checkpoint-2' / 'adapter_config.json'}: cannot read: Permission denied"
