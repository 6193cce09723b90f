"""What the fuzz run (tests/fuzz/run_fuzz.py) found on main, one test per class of input (issue 21).

None is timed; each builds its input and runs the real function or CLI.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.engine import check_paths
from peftdoctor.fix import _LINE_END, _rewrite, apply_edits
from peftdoctor.inspect.run import inspect_paths
from peftdoctor.inspect.safetensors_header import read_header

ROOT = Path(__file__).resolve().parent.parent
GOOD = ROOT / "fixtures" / "adapters" / "good-llama"
SCRIPTS = ROOT / "fixtures" / "scripts"


def run_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peftdoctor", *args], capture_output=True, text=True, timeout=120,
                          **kwargs)


def good_header() -> tuple[dict, bytes]:
    data = (GOOD / "adapter_model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def safetensors(header: dict | bytes, body: bytes) -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


# --- headers: a dtype that is not a string, JSON nested past the recursion limit ----------------------------

@pytest.mark.parametrize("dtype", [["F32"], {"a": 1}, 7, None])
def test_a_dtype_that_is_not_a_string_is_a_header_problem(dtype, tmp_path):
    """Before: TypeError (unhashable type) from `dtype in DTYPE_BITS`: PD002."""
    header, body = good_header()
    name = sorted(k for k in header if k != "__metadata__")[0]
    header[name]["dtype"] = dtype
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(safetensors(header, body))
    assert f"tensor '{name}': unknown dtype {dtype!r}" in read_header(path).problems


def test_json_nested_past_the_recursion_limit_is_malformed_not_an_internal_error(tmp_path):
    """Before: RecursionError from json.loads: PD002 for the header and for adapter_config.json."""
    deep = b"[" * 100_000 + b"]" * 100_000
    _, body = good_header()
    for name, data in (("adapter_model.safetensors", safetensors(deep, body)), ("adapter_config.json", deep)):
        folder = tmp_path / name
        shutil.copytree(GOOD, folder)
        (folder / name).write_bytes(data)
        findings = inspect_paths([folder], config=Config(), show_summary=False).findings
        codes = {f.code for f in findings}
        assert "PD002" not in codes and codes & {"PD600", "PD602"}, [f.message for f in findings]
        assert any("nested too deeply" in f.message for f in findings)


def test_a_base_name_longer_than_the_os_allows_is_just_not_found(tmp_path):
    """Before: OSError ENAMETOOLONG from Path.is_file while looking for the base: PD002."""
    for name in ("a" * 100_000, "../" * 2000 + "base", "~" + "x" * 5000):
        folder = tmp_path / f"n{len(name)}"
        shutil.copytree(GOOD, folder)
        config = json.loads((GOOD / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": name}))
        findings = inspect_paths([folder], config=Config(), show_summary=False).findings
        assert [f.code for f in findings] == ["PD612"], [f.message for f in findings]


# --- --fix rewrites only the statements it edits --------------------------------------------------------------

def fixable_sources() -> list[tuple[str, str, list[dict]]]:
    """(name, source, edits) for every fixture script with a fixable finding."""
    found = []
    for path in sorted(SCRIPTS.rglob("bad_*.py")):
        edits = [f.extra["fix"] for f in check_paths([str(path)], Config()).findings if f.extra.get("fix")]
        if edits:
            found.append((path.name, path.read_text(), edits))
    return found


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_statement_local_fix_changes_only_the_edited_calls(newline):
    """The edit is applied to the top-level statement that holds it; every other line stays byte-identical,
    whatever the decorators or statements sharing a line, and the text is the one a rewrite of the whole
    module gives. (Lone \\r line ends: libcst's code generator moves blank lines, in a statement or a module.)"""
    sources = fixable_sources()
    assert len(sources) >= 8
    for name, source, edits in sources:
        text = source.replace("\n", newline)
        text = "@decorate\n".replace("\n", newline) + text if text.startswith("def ") else text
        text = text.replace(f"import torch{newline}", f"import torch; import os{newline}", 1)
        fixed = apply_edits(text, edits)
        before, after = _LINE_END.split(text), _LINE_END.split(fixed)
        assert len(before) == len(after), name
        changed = {number for number, (old, new) in enumerate(zip(before, after), 1) if old != new}
        assert changed and changed <= {edit["line"] + k for edit in edits for k in range(4)}, (name, changed)
        assert fixed == _rewrite(text, edits), name


def test_a_huge_data_line_elsewhere_does_not_reach_the_rewriter(tmp_path):
    """--fix on a file with a 5,000,000-character line: the line is copied, never parsed by libcst again."""
    fixable = (SCRIPTS / "PD103" / "bad_class_self_model.py").read_text()
    script = tmp_path / "train.py"
    data_line = "TABLE = [" + "1, " * 1_000_000 + "]\n"
    script.write_text(data_line + fixable)
    edits = [f.extra["fix"] for f in check_paths([str(SCRIPTS / "PD103" / "bad_class_self_model.py")],
                                                 Config()).findings]
    moved = [{**edit, "line": edit["line"] + 1} for edit in edits]
    fixed = apply_edits(script.read_text(), moved)
    assert fixed.startswith(data_line) and "is_trainable=True" in fixed[len(data_line):]


# --- reports and --output -------------------------------------------------------------------------------------

def test_sarif_names_a_file_whose_name_is_not_utf8(tmp_path):
    """Before: UnicodeEncodeError from urllib.parse.quote on the surrogate-escaped name (a traceback)."""
    import os

    folder = os.fsencode(tmp_path) + b"/sub\xff"
    os.mkdir(folder)
    with open(folder + b"/tr\xe9.py", "wb") as stream:
        stream.write((SCRIPTS / "PD103" / "bad_class_self_model.py").read_bytes())
    result = run_cli("check", "--format", "sarif", ".", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in json.loads(result.stdout)["runs"][0]["results"]]
    assert uris == ["sub%FF/tr%E9.py"]  # the name's own bytes, percent-encoded


def test_output_naming_a_folder_is_refused_in_one_line(tmp_path):
    """Before: click's four-line usage error."""
    (tmp_path / "train.py").write_text("import peft\n")
    (tmp_path / "report").mkdir()
    result = run_cli("check", "train.py", "--output", "report", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["peftdoctor: error: report: cannot write report: a folder, not a "
                                          "regular file"]


# --- PD605/PD606 values in chunks -----------------------------------------------------------------------------

def test_chunked_value_checks_match_whole_tensor_numpy(tmp_path, monkeypatch):
    """Chunks of a few bytes (an odd tensor offset, a last partial chunk) give what numpy gives on the whole
    tensor at once, for every dtype the checks read."""
    np = pytest.importorskip("numpy")
    from peftdoctor.inspect import values
    from peftdoctor.inspect.safetensors_header import TensorInfo

    rng = np.random.default_rng(0)
    # dtype -> unsigned view, a few NaN/Inf bit patterns
    specials = {"F32": ("<u4", [0x7F800000, 0x7FC00001, 0xFF800000]), "F16": ("<u2", [0x7C00, 0x7E01]),
                "BF16": ("<u2", [0x7F80, 0xFFC1]), "F64": ("<u8", [0x7FF0000000000000]),
                "F8_E5M2": ("u1", [0x7C, 0xFE]), "F8_E4M3": ("u1", [0x7F, 0xFF]), "U8": ("u1", []),
                "I32": ("<u4", [])}

    def reference(dtype, unsigned):
        """(all zero, NaN/Inf count) from the whole tensor at once, as the checks define them."""
        if dtype in values._FLOAT_BITS:
            _, exponent, magnitude = values._FLOAT_BITS[dtype]
            return not (unsigned & magnitude).any(), int(((unsigned & exponent) == exponent).sum())
        count = int(((unsigned & 0x7F) == 0x7F).sum()) if dtype == "F8_E4M3" else 0
        return not unsigned.view("u1").any(), count

    for chunk_bytes in (values.CHUNK_BYTES, 24, 7):
        monkeypatch.setattr(values, "CHUNK_BYTES", chunk_bytes)
        for dtype, (view, odd) in specials.items():
            for fill in ("zero", "negative zero", "random", "special"):
                unsigned = np.zeros(1001, dtype=view)
                if fill == "negative zero":
                    unsigned[500] = 1 << (8 * unsigned.itemsize - 1)
                elif fill != "zero":
                    unsigned = rng.integers(0, 256, 1001 * unsigned.itemsize, dtype=np.uint8).view(view).copy()
                if fill == "special" and odd:
                    unsigned[rng.choice(1001, len(odd), replace=False)] = odd
                path = tmp_path / f"{dtype}-{fill}.bin"
                path.write_bytes(b"\x01\x02\x03" + unsigned.tobytes())  # an odd offset, as after a header
                tensor = TensorInfo("t", dtype, (1001,), 3, 3 + unsigned.nbytes)
                with values.open_values(str(path)) as reader:
                    found = reader.all_zero(tensor), reader.count_non_finite(tensor)
                assert found == reference(dtype, unsigned), (dtype, fill, chunk_bytes)


# --- what libcst cannot read: named, never a crash ------------------------------------------------------------

def test_an_or_chain_that_crashes_libcst_is_named_where_the_project_reads_it(tmp_path):
    """Before: SIGSEGV. The project reader (facts/reading.py) parsed checked files with libcst directly, past
    the guard that parse_source applies; 21,000 `or`s overflow libcst's native stack."""
    fixable = (SCRIPTS / "PD103" / "bad_class_self_model.py").read_text()
    (tmp_path / "train.py").write_text(fixable + "x = " + " or ".join(["a"] * 21_000) + "\n")
    for args in (("check", "train.py"), ("check", "--fix", "train.py")):
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.returncode, result.stderr[-500:])
        assert "train.py:30:1: PD000 valid Python that peftdoctor cannot read: an expression nested too deeply at " \
               "line 30 is beyond what its parser (libcst) handles" in result.stdout


def test_one_statement_of_more_than_half_a_million_tokens_is_named():
    from peftdoctor.source import MAX_STATEMENT_TOKENS, parse_source

    at_limit = "import peft\nx = [" + "1," * ((MAX_STATEMENT_TOKENS - 4) // 2) + "]\n"
    past = "import peft\nx = [" + "1," * (MAX_STATEMENT_TOKENS // 2) + "]\n"
    assert parse_source(at_limit, "a.py").findings == []
    assert [(f.code, f.line, f.message) for f in parse_source(past, "a.py").findings] == [
        ("PD000", 2, "valid Python that peftdoctor cannot read: one statement of more than 500,000 tokens at line 2 "
                     "is beyond what its parser (libcst) handles")]
