"""Black-box fuzz run of the real CLI over hostile inputs (issue 21): scripts, checkpoints, pickles, writes.

Every case is built on disk from a seeded random generator, then `python -m peftdoctor check|inspect ...`
runs on it as a subprocess with a timeout. A run is classified as

- traceback: "Traceback" on stderr;
- signal: killed by a signal (negative exit status, e.g. a SIGSEGV in a native parser);
- hang: still running at the timeout;
- PD002: an internal-error finding in the report;
- bad output: an exit status other than 0/1/2, or a `--format json` report that does not parse;
- unsafe write: a file changed that should not have (any run without --fix/--output leaves every input
  byte-identical; a refused write leaves its target and its kind untouched), or a write left a temp file;
- pickle missed: a malicious pickle reported clean (no PD611); a benign `torch.save` flagged is a false alarm.

Classes: scripts (mutants of the fixture scripts and of a sample of ../shared/practice/repos when present:
line deletions and duplications, token swaps, truncation, random bytes, BOM, CRLF/CR, tabs, non-UTF-8 bytes,
lone surrogates), deep (valid code nested or chained far), big (5,000,000-character lines), names (non-UTF-8
file names in every format), notebooks (broken JSON, wrong types), checkpoints (corrupted headers and configs,
odd folders, FIFOs and devices, unreadable folders run as `nobody` when root can start Python as nobody),
pickles (every opcode evasion in every container, and real torch.save files), writes (--fix and --output on
read-only files, symlinks, FIFOs, devices, folders, the checked script, and a file changed during the run).

Usage: python tests/fuzz/run_fuzz.py [--quick] [--seed N] [--cases-per-class N] [--jobs N] [--classes a,b] [-v]
The peftdoctor that runs is the one Python imports (set PYTHONPATH to test another checkout); this script
never imports it. One summary line per class and a total line are printed; -v lists each failure. --quick
(the test suite's subset) takes fewer cases and runs each class's plain cases as one run over its folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_SCRIPTS = ROOT / "fixtures" / "scripts"
GOOD_ADAPTER = ROOT / "fixtures" / "adapters" / "good-llama"
PRACTICE = ROOT.parent / "shared" / "practice" / "repos"
# A script with a fixable finding (PD103): the base that the deep and big cases grow, so --fix has work.
FIXABLE = FIXTURE_SCRIPTS / "PD103" / "bad_class_self_model.py"

COLUMNS = ("cases", "tracebacks", "signals", "hangs", "PD002", "bad_output", "unsafe_writes", "pickles_missed",
           "benign_flagged")


@dataclass
class Run:
    """One CLI run: `argv` after `python -m peftdoctor`, in `cwd`; `check` adds its own verdicts."""

    name: str
    argv: list[str]
    cwd: Path
    # adapter folder (relative to cwd) -> True for a pickle that runs code when loaded (PD611 expected), False
    # for a real torch.save (no PD611 expected)
    pickles: dict[str, bool] = field(default_factory=dict)
    writes: bool = False  # the run may write (--fix / --output): `check` judges what it wrote
    check: Callable[["Outcome"], list[str]] | None = None
    hook: str = ""  # Python run in the child before the CLI (a concurrent writer)
    as_nobody: bool = False  # run with uid/gid 65534 when root (permissions bind)
    cases: int = 1  # inputs the run covers (a batch covers many)


@dataclass
class Outcome:
    run: Run
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    verdicts: Counter = field(default_factory=Counter)  # column -> cases


# ---------------------------------------------------------------------------------------------- script seeds


def script_seeds(quick: bool, rng: random.Random) -> list[bytes]:
    seeds = sorted(FIXTURE_SCRIPTS.rglob("*.py"))
    if not quick and PRACTICE.is_dir():
        practice = sorted(p for p in PRACTICE.rglob("*.py") if p.is_file() and p.stat().st_size < 200_000)
        seeds += rng.sample(practice, min(150, len(practice)))
    return [p.read_bytes() for p in seeds]


def _swap_tokens(text: str, rng: random.Random) -> str:
    spans = [m.span() for m in re.finditer(r"[A-Za-z_]\w*|[()\[\]{}:,=.]", text)]
    if len(spans) < 2:
        return text
    (a, b), (c, d) = sorted(rng.sample(spans, 2))
    return text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]


def _lines_op(data: bytes, rng: random.Random, op: str) -> bytes:
    lines = data.splitlines(keepends=True) or [b""]
    i = rng.randrange(len(lines))
    if op == "delete":
        del lines[i:i + rng.randint(1, 3)]
    elif op == "duplicate":
        lines[i:i] = lines[i:i + rng.randint(1, 4)]
    return b"".join(lines)


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "delete lines": lambda d, r: _lines_op(d, r, "delete"),
    "duplicate lines": lambda d, r: _lines_op(d, r, "duplicate"),
    "swap tokens": lambda d, r: _swap_tokens(d.decode("utf-8", "surrogateescape"), r).encode("utf-8",
                                                                                               "surrogateescape"),
    "truncate": lambda d, r: d[:r.randrange(len(d) + 1)],
    "random bytes": lambda d, r: (lambda i: d[:i] + r.randbytes(r.randint(1, 8)) + d[i:])(r.randrange(len(d) + 1)),
    "BOM": lambda d, r: b"\xef\xbb\xbf" + d,
    "CRLF": lambda d, r: d.replace(b"\n", b"\r\n"),
    "CR": lambda d, r: d.replace(b"\n", b"\r"),
    "tabs": lambda d, r: re.sub(rb"(?m)^((?:    )+)", lambda m: b"\t" * (len(m.group(1)) // 4), d),
    "non-UTF-8 bytes": lambda d, r: (lambda i: d[:i] + b"\xff\xfe\xc3" + d[i:])(r.randrange(len(d) + 1)),
    "lone surrogate bytes": lambda d, r: (lambda i: d[:i] + b"\xed\xa0\x80" + d[i:])(r.randrange(len(d) + 1)),
    "surrogate escapes in strings": lambda d, r: re.sub(rb'"([^"\n\\]{0,40})"', rb'"\1\\ud800\\udcff"', d, count=4),
}


def mutant_runs(folder: Path, rng: random.Random, seeds: list[bytes], count: int) -> list[Run]:
    runs = []
    names = sorted(MUTATORS)
    for index in range(count):
        seed = rng.choice(seeds)
        kinds = rng.sample(names, rng.choice((1, 1, 2, 3)))
        data = seed
        for kind in kinds:
            data = MUTATORS[kind](data, rng)
        case = folder / f"m{index:04d}"
        case.mkdir()
        (case / "train.py").write_bytes(data)
        label = f"mutant {index} ({', '.join(kinds)})"
        runs.append(Run(label, ["check", "train.py"], case))
        if index % 4 == 0:
            runs.append(fix_run(case, "train.py", label + " --fix"))
    return runs


def fix_run(case: Path, name: str, label: str) -> Run:
    """--fix on a copy (in a folder of its own, apart from the class's other runs): whatever it writes must be
    Python that compiles when the input did, and no temp file is left."""
    source = (case / name).read_bytes()
    case = case.parent.parent / "fix-copies" / f"{case.parent.name}-{case.name}"
    case.mkdir(parents=True)
    (case / name).write_bytes(source)

    def check(outcome: Outcome) -> list[str]:
        after = (case / name).read_bytes()
        leftovers = [p.name for p in case.iterdir() if p.name.endswith(".tmp")]
        if leftovers:
            return [f"unsafe write: temp file left {leftovers}"]
        if after != source and compiles(source) and not compiles(after):
            return ["unsafe write: --fix wrote code that does not compile"]
        return []

    return Run(label, ["check", "--fix", name], case, writes=True, check=check)


def compiles(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, "<fuzz>", "exec")
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False


# ------------------------------------------------------------------------------------- deep, big, odd names


def deep_sources(quick: bool) -> dict[str, str]:
    """Valid Python (on 3.11) nested or chained far: each stresses a recursive walk or a native parser."""
    sources = {
        "parens 199": "x = " + "(" * 199 + "1" + ")" * 199,
        "lists 199": "x = " + "[" * 199 + "]" * 199,
        "calls 199": "x = " + "f(" * 199 + "1" + ")" * 199,
        "method chain 199": "x = a" + ".f()" * 199,
        "method chain 3000": "x = a" + ".f()" * 3000,
        "attribute chain 20000": "x = a" + ".b" * 20_000,
        "subscript chain 5000": "x = a" + "[0]" * 5000,
        "lambdas 999": "x = " + "lambda: " * 999 + "0",
        "or chain 7000": "x = " + " or ".join(["a"] * 7000),
        "or chain 21000": "x = " + " or ".join(["a"] * 21000),
        "and chain 21000": "x = " + " and ".join(["a"] * 21000),
        "mixed boolean chain": "x = " + " ".join(f"a{i} {'and' if i % 3 else 'or'}" for i in range(6000)) + " b",
        "plus chain 20000": "x = " + " + ".join(["a"] * 20_000),
        "compare chain 5000": "x = " + " < ".join(["a"] * 5000),
        "not chain 1000": "x = " + "not " * 1000 + "a",
        "unary minus 1000": "x = " + "-" * 1000 + "1",
        "power chain 3000": "x = " + " ** ".join(["2"] * 3000),
        "elif 3000": "if a:\n    pass\n" + "elif a:\n    pass\n" * 3000,
        "blocks 99 deep": "".join("    " * i + "if a:\n" for i in range(99)) + "    " * 99 + "pass",
        "dict 199": "x = " + "{1: " * 199 + "1" + "}" * 199,
        "fstring nest": "x = f'{" + "(" * 150 + "1" + ")" * 150 + "}'",
        "string concat 20000": "x = (" + " ".join(["'a'"] * 20_000) + ")",
        "long tuple 200000": "x = (" + "1," * 200_000 + ")",
        "decorators 2000": "@d\n" * 2000 + "def f(): pass",
        "statements 50000": "x = 1\n" * 50_000,
    }
    if quick:
        return {name: sources[name] for name in QUICK_DEEP}
    return sources


# The quick subset: one of each way input has crashed or failed a parser or a walk.
QUICK_DEEP = ("parens 199", "method chain 199", "lambdas 999", "or chain 21000", "string concat 20000", "elif 3000")


def deep_runs(folder: Path, quick: bool) -> list[Run]:
    runs = []
    fixable = FIXABLE.read_text()
    for index, (name, tail) in enumerate(sorted(deep_sources(quick).items())):
        case = folder / f"d{index:03d}"
        case.mkdir()
        (case / "train.py").write_text(fixable + tail + "\n")
        runs.append(Run(f"deep: {name}", ["check", "train.py"], case))
        if not quick or index % 2 == 0:
            runs.append(fix_run(case, "train.py", f"deep: {name} --fix"))
    return runs


def batched(folder: Path, runs: list[Run]) -> list[Run]:
    """A class's plain runs (one input, nothing to judge but the outcome) as one run over its folder: one
    process for the quick subset. A run that writes, has a hook or a verdict of its own stays apart."""
    plain = [r for r in runs if r.argv[0] in ("check", "inspect") and "--fix" not in r.argv and "-o" not in r.argv
             and "--output" not in r.argv and r.check is None and not (r.hook or r.as_nobody)]
    if len(plain) < 2 or len({r.argv[0] for r in plain}) > 1:
        return runs
    rest = [r for r in runs if r not in plain]
    pickles = {os.path.relpath(r.cwd / where, folder): bad for r in plain for where, bad in r.pickles.items()}
    cases = sum(r.cases for r in plain)
    return [Run(f"{cases} cases in one run", [plain[0].argv[0], "--format", "json", "."], folder,
                pickles=pickles, cases=cases), *rest]


def big_runs(folder: Path, quick: bool) -> list[Run]:
    size = 200_000 if quick else 5_000_000
    fixable = FIXABLE.read_text()
    tails = {"long string line": "x = '" + "a" * size + "'",
             "long list line": "x = [" + "1," * (size // 2) + "]",
             "long comment line": "# " + "z" * size}
    if quick:  # a long list is libcst's slowest input per byte: the full run measures it
        del tails["long list line"]
    runs = []
    for index, (name, tail) in enumerate(sorted(tails.items())):
        case = folder / f"b{index}"
        case.mkdir()
        (case / "train.py").write_text(fixable + tail + "\n")
        runs.append(Run(f"big: {name} ({size:,} chars)", ["check", "train.py"], case))
        runs.append(fix_run(case, "train.py", f"big: {name} --fix"))
    return runs


def name_runs(folder: Path) -> list[Run]:
    """Scripts in a folder whose names are not UTF-8 (nor printable), walked in every format and named."""
    raw = os.fsencode(folder)
    os.makedirs(raw + b"/odd/sub\xff")
    names = (b"tr\xff\xfe.py", b"\xe9t\xe9.py", b"a\xed\xa0\x80.py", b"\x1b[31m.py")
    for name in names:
        with open(raw + b"/odd/sub\xff/" + name, "wb") as stream:
            stream.write(FIXABLE.read_bytes())
    top = folder / "odd"
    runs = [Run(f"odd names walked, {fmt}", ["check", "--format", fmt, "."], top)
            for fmt in ("text", "json", "github", "sarif", "junit")]
    runs += [Run(f"odd name {name!r} named", ["check", os.fsdecode(b"sub\xff/" + name)], top) for name in names]
    return runs


def notebook_runs(folder: Path, rng: random.Random, seeds: list[bytes], count: int) -> list[Run]:
    runs = []
    for index in range(count):
        text = rng.choice(seeds).decode("utf-8", "replace")
        cells = [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                  "source": part.splitlines(keepends=True)} for part in text.split("\n\n") if part.strip()]
        notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        data = json.dumps(notebook)
        kind = rng.choice(("truncate", "delete char", "random bytes", "deep json", "wrong types", "surrogates",
                           "valid"))
        if kind == "truncate":
            data = data[:rng.randrange(len(data))]
        elif kind == "delete char":
            i = rng.randrange(len(data))
            data = data[:i] + data[i + 1:]
        elif kind == "random bytes":
            i = rng.randrange(len(data))
            data = data[:i] + rng.randbytes(4).decode("latin-1") + data[i:]
        elif kind == "deep json":
            data = '{"cells": ' + "[" * 100_000 + "]" * 100_000 + ', "nbformat": 4}'
        elif kind == "wrong types":
            cell = rng.choice(cells) if cells else {}
            cell[rng.choice(("source", "cell_type", "metadata"))] = rng.choice((None, 7, [1, 2], {"a": 1}, "x"))
            notebook["nbformat"] = rng.choice((4, "4", None, 3, 99))
            data = json.dumps(notebook)
        elif kind == "surrogates":
            data = data.replace("peft", "pe\\ud800ft", 2).replace("model", "m\\udcffodel", 2)
        case = folder / f"nb{index:03d}"
        case.mkdir()
        (case / "train.ipynb").write_bytes(data.encode("utf-8", "surrogatepass"))
        runs.append(Run(f"notebook {index} ({kind})", ["check", "train.ipynb"], case))
        if index % 3 == 0:
            runs.append(fix_run(case, "train.ipynb", f"notebook {index} ({kind}) --fix"))
    return runs


# ---------------------------------------------------------------------------------------------- checkpoints


def _good_parts() -> tuple[dict, bytes, dict]:
    data = (GOOD_ADAPTER / "adapter_model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:], json.loads((GOOD_ADAPTER /
                                                                         "adapter_config.json").read_text())


def _safetensors(header, body: bytes) -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(blob)) + blob + body


def checkpoint_variants(rng: random.Random, quick: bool) -> list[tuple[str, bytes | None, str | None]]:
    """(label, weights bytes or None for the good ones, config text or None for the good one)."""
    header, body, config = _good_parts()
    good = _safetensors(header, body)
    names = sorted(k for k in header if k != "__metadata__")
    variants: list[tuple[str, bytes | None, str | None]] = []

    def tensor_edit(label, key, value):
        edited = json.loads(json.dumps(header))
        edited[rng.choice(names)][key] = value
        variants.append((label, _safetensors(edited, body), None))

    cut = rng.randrange(len(good))
    variants.append((f"truncated at {cut}", good[:cut], None))
    for lie in (0, 1, len(good), 2 ** 63 - 1, 2 ** 64 - 1, rng.randrange(2 ** 32)):
        variants.append((f"header length {lie}", struct.pack("<Q", lie) + good[8:], None))
    variants.append(("header nested 990 deep", _safetensors(b'{"a": ' + b"[" * 990 + b"]" * 990 + b"}", body), None))
    variants.append(("header nested 100000 deep", _safetensors(b"[" * 100_000 + b"]" * 100_000, body), None))
    for value in ([["F32"]], ["F32"], 7, None, "F33", "", {"a": 1}, "\ud800"):
        tensor_edit(f"dtype {value!r}", "dtype", value)
    for value in ([-1, 4], [2 ** 70, 2], [1.5, 2], ["4"], None, [4] * 64, []):
        tensor_edit(f"shape {value!r}", "shape", value)
    for value in ([10, 0], [0, 2 ** 64], [-8, 8], [0], None, ["0", "8"], [0, 10 ** 40]):
        tensor_edit(f"data_offsets {value!r}", "data_offsets", value)
    overlap = json.loads(json.dumps(header))
    for name in names:
        overlap[name]["data_offsets"] = [0, overlap[name]["data_offsets"][1] - overlap[name]["data_offsets"][0]]
    variants.append(("overlapping tensors", _safetensors(overlap, body), None))
    long_name = "base_model.model." + "x" * (1_000_000 if quick else 99_000_000) + ".lora_A.weight"
    renamed = dict(header)
    renamed[long_name] = renamed.pop(names[0])
    variants.append((f"name of {len(long_name):,} characters", _safetensors(renamed, body), None))
    surrogate = {("base_model.model.model.layers.0.self_attn.q\ud800_proj.lora_A.weight" if k == names[0] else k): v
                 for k, v in header.items()}
    variants.append(("lone surrogate in header", _safetensors(surrogate, body), None))
    variants.append(("metadata not strings", _safetensors({**header, "__metadata__": {"format": [1], "x": None}},
                                                          body), None))
    variants.append(("header not an object", _safetensors([1, 2, 3], body), None))
    variants.append(("header invalid UTF-8", _safetensors(b'{"\xff": 1}', body), None))
    variants.append(("random bytes", rng.randbytes(rng.randint(0, 4096)), None))
    for _ in range(3):
        i = rng.randrange(8, 8 + struct.unpack("<Q", good[:8])[0])
        variants.append((f"header byte {i} flipped", good[:i] + bytes([good[i] ^ rng.randrange(1, 256)]) + good[i + 1:],
                         None))
    digits = '{"peft_type": "LORA", "r": 1' + "0" * 5000 + ', "lora_alpha": 8, "target_modules": ["q_proj"]}'
    variants.append(("integer over the digit limit", None, digits))
    config_values = {
        "r": [0, -4, 2 ** 80, 4.5, "4", None, [4], 1e308, float("nan")],
        "lora_alpha": [0, None, "x", float("inf")],
        "target_modules": [None, 7, "q_proj|v_proj", ".*", "(a+)+$", [None], [["q_proj"]], {"q_proj": 1}],
        "rank_pattern": [{"(a|aa)+(b|bb)+(c+)+$": 3}, {f"layers.{i}.q_proj": 2 for i in range(7000)}, [1], "x",
                         {"q_proj": "8"}, {"[": 2}, {"\ud800": 2}],
        "alpha_pattern": [{"(x+x+)+y": 3}, None, {"": 1}],
        "peft_type": ["LORA\ud800", None, 5, "NOPE", ""],
        "task_type": ["CAUSAL_LM\ud800", 3, [], "SEQ_CLS"],
        "base_model_name_or_path": ["/dev/zero", "\ud800", "~" * 300, "../" * 2000, 7, "a" * 100_000],
        "modules_to_save": [["score"], "x", 1, [None]],
        "layers_to_transform": [[0, 10 ** 9], "1", [-1], 3.5],
        "fan_in_fan_out": ["yes", 1],
        "use_dora": ["no"],
    }
    for key, values in config_values.items():
        for value in values:
            text = json.dumps({**config, key: value})
            variants.append((f"config {key}={str(value)[:30]!r}", None, text))
    for text in ("", "{", "[]", "null", '"x"', "{" * 5000 + "}" * 5000, "[" * 100_000 + "]" * 100_000,
                 '{"peft_type": "LORA", "r": 4, "r": 8}', "\ufeff" + json.dumps(config), json.dumps(config) + "x",
                 json.dumps(config).replace('"', "'")):
        variants.append((f"config text {text[:20]!r}", None, text))
    return variants


def checkpoint_runs(folder: Path, rng: random.Random, quick: bool, count: int) -> list[Run]:
    runs = []
    variants = checkpoint_variants(rng, quick)
    if count < len(variants) and not quick:  # the quick subset reads them all in one run
        variants = rng.sample(variants, count)
    for index, (label, weights, config) in enumerate(variants):
        case = folder / f"c{index:03d}"
        case.mkdir()
        shutil.copy(GOOD_ADAPTER / "adapter_model.safetensors", case)
        shutil.copy(GOOD_ADAPTER / "adapter_config.json", case)
        if weights is not None:
            (case / "adapter_model.safetensors").write_bytes(weights)
        if config is not None:
            (case / "adapter_config.json").write_bytes(config.encode("utf-8", "surrogatepass"))
        fmt = "json" if index % 2 else "text"
        runs.append(Run(f"checkpoint: {label} ({fmt})", ["inspect", "--format", fmt, "."], case))
    runs += special_checkpoint_runs(folder)
    return runs


def special_checkpoint_runs(folder: Path) -> list[Run]:
    """Odd folders: non-ASCII digit checkpoints, FIFOs and devices where files should be, unreadable folders."""
    runs = []
    odd = folder / "odd-digits"
    for name in ("checkpoint-²", "checkpoint-③", "checkpoint-٣", "checkpoint-10", "checkpoint-" + "9" * 5000,
                 "checkpoint-\U0001d7d9", "checkpoint-", "checkpoint--1"):
        with contextlib.suppress(OSError):  # a name over the file system's limit is the point of one of them
            shutil.copytree(GOOD_ADAPTER, odd / name)
    runs.append(Run("checkpoint folders with odd digits", ["inspect", "--format", "json", "."], odd))
    for target in ("adapter_config.json", "adapter_model.safetensors"):
        fifo = folder / f"fifo-{target}"
        shutil.copytree(GOOD_ADAPTER, fifo)
        (fifo / target).unlink()
        os.mkfifo(fifo / target)
        runs.append(Run(f"FIFO as {target}", ["inspect", "."], fifo))
        device = folder / f"device-{target}"
        shutil.copytree(GOOD_ADAPTER, device)
        (device / target).unlink()
        (device / target).symlink_to("/dev/zero")
        runs.append(Run(f"/dev/zero as {target}", ["inspect", "."], device))
        folder_as = folder / f"folder-{target}"
        shutil.copytree(GOOD_ADAPTER, folder_as)
        (folder_as / target).unlink()
        (folder_as / target).mkdir()
        runs.append(Run(f"a folder as {target}", ["inspect", "."], folder_as))
    locked = folder / "locked"
    for name, mode in (("checkpoint-1", 0o755), ("checkpoint-2", 0o000), ("checkpoint-3", 0o311)):
        shutil.copytree(GOOD_ADAPTER, locked / name)
        os.chmod(locked / name, mode)
    unreadable_config = locked / "checkpoint-4"
    shutil.copytree(GOOD_ADAPTER, unreadable_config)
    os.chmod(unreadable_config / "adapter_config.json", 0)
    runs.append(Run("unreadable checkpoint folders and config", ["inspect", "."], locked, as_nobody=True))
    return runs


# --------------------------------------------------------------------------------------------------- pickles


def _u(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


PROTO, STOP, POP, POP_MARK, MARK, DUP = b"\x80\x04", b".", b"0", b"1", b"(", b"2"
STACK_GLOBAL, REDUCE, BUILD, EMPTY_TUPLE, EMPTY_DICT, MEMOIZE = b"\x93", b"R", b"b", b")", b"}", b"\x94"
SAFE = (("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"))
TARGETS = (("os", "system"), ("posix", "system"), ("builtins", "exec"), ("builtins", "eval"),
           ("subprocess", "Popen"), ("runpy", "_run_code"), ("nt", "system"), ("builtins", "getattr"),
           ("torch", "load"), ("webbrowser", "open"), ("socket", "create_connection"))


def _put(i: int) -> bytes:
    return b"q" + bytes([i])


def _get(i: int) -> bytes:
    return b"h" + bytes([i])


def evasion(kind: str, module: str, name: str, rng: random.Random) -> bytes:
    """The opcodes of one call of module.name hidden the `kind` way (a stream torch would execute)."""
    safe_module, safe_name = rng.choice(SAFE)
    call = EMPTY_TUPLE + REDUCE
    if kind == "plain global":
        return f"c{module}\n{name}\n".encode() + call
    if kind == "stack global":
        return _u(module) + _u(name) + STACK_GLOBAL + call
    if kind == "pop":
        return _u(module) + _u(name) + _u(safe_module) + _u(safe_name) + POP + POP + STACK_GLOBAL + call
    if kind == "pop mark":
        return _u(module) + _u(name) + MARK + _u(safe_module) + _u(safe_name) + POP_MARK + STACK_GLOBAL + call
    if kind == "memo after pop":
        return (_u(module) + _u(safe_module) + POP + _put(0) + _u(name) + _u(safe_name) + POP + _put(1) + POP + POP
                + _get(0) + _get(1) + STACK_GLOBAL + call)
    if kind == "memoize after pop":
        return (_u(module) + _u(safe_module) + POP + MEMOIZE + _u(name) + _u(safe_name) + POP + MEMOIZE + POP + POP
                + _get(0) + _get(1) + STACK_GLOBAL + call)
    if kind == "dup":
        return _u(module) + _u(name) + DUP + POP + STACK_GLOBAL + call
    if kind == "global via memo":
        return f"c{module}\n{name}\n".encode() + _put(3) + POP + _u("x") + POP + _get(3) + call
    if kind == "inst":
        return MARK + f"i{module}\n{name}\n".encode()
    if kind == "obj":
        return MARK + f"c{module}\n{name}\n".encode() + b"o"
    if kind == "build":  # BUILD with a __setstate__ global: the state is applied by a call
        return (_u(safe_module) + _u(safe_name) + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + _u(module) + _u(name)
                + STACK_GLOBAL + BUILD)
    raise ValueError(kind)


EVASIONS = ("plain global", "stack global", "pop", "pop mark", "memo after pop", "memoize after pop", "dup",
            "global via memo", "inst", "obj", "build")
CONTAINERS = ("legacy", "torch zip", "zip other entry", "two data.pkl", "polyglot", "trailing after stop",
              "after benign stop")


def _zip(entries) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicate name warns: that is the point
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


BENIGN_PICKLE = PROTO + _u("collections") + _u("OrderedDict") + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + STOP


def malicious_file(kind: str, container: str, module: str, name: str, rng: random.Random) -> bytes:
    payload = PROTO + evasion(kind, module, name, rng) + STOP
    meta = [("archive/byteorder", "little"), ("archive/version", "3\n")]
    if container == "legacy":
        return payload
    if container == "torch zip":
        return _zip([("archive/data.pkl", payload), *meta])
    if container == "zip other entry":
        # not data/N: torch reads a storage entry as raw bytes, never unpickles it
        return _zip([("archive/data.pkl", BENIGN_PICKLE), *meta, (f"archive/{rng.choice(('x.pkl', 'y'))}", payload)])
    if container == "two data.pkl":
        return _zip([("archive/data.pkl", BENIGN_PICKLE), *meta, ("archive/data.pkl", payload)])
    if container == "polyglot":  # a benign zip appended to the malicious pickle: both views load
        return payload + _zip([("archive/data.pkl", BENIGN_PICKLE), *meta])
    if container == "trailing after stop":
        return _zip([("archive/data.pkl", BENIGN_PICKLE + payload), *meta])
    if container == "after benign stop":
        return BENIGN_PICKLE + payload
    raise ValueError(container)


def benign_files() -> list[tuple[str, bytes]]:
    """Real torch.save of a LoRA-shaped state dict, legacy and zip; none when torch is not installed."""
    try:
        import torch
    except ImportError:
        return []
    generator = torch.Generator().manual_seed(0)
    state = {f"base_model.model.layers.{i}.q_proj.lora_{ab}.weight": torch.randn(4, 8, generator=generator)
             for i in range(2) for ab in "AB"}
    files = []
    for label, zip_format in (("legacy", False), ("zip", True)):
        buffer = io.BytesIO()
        torch.save(state, buffer, _use_new_zipfile_serialization=zip_format)
        files.append((f"benign torch.save ({label})", buffer.getvalue()))
    return files


def pickle_runs(folder: Path, rng: random.Random, count: int, quick: bool) -> list[Run]:
    runs = []
    combos = [(k, c) for k in EVASIONS for c in CONTAINERS]  # all of them: quick reads them in one run
    picks = combos if count >= len(combos) or quick else rng.sample(combos, count)
    for index, (kind, container) in enumerate(sorted(picks)):
        module, name = rng.choice(TARGETS)
        case = folder / f"p{index:03d}"
        shutil.copytree(GOOD_ADAPTER, case)
        (case / "adapter_model.safetensors").unlink()
        (case / "adapter_model.bin").write_bytes(malicious_file(kind, container, module, name, rng))
        runs.append(Run(f"pickle: {kind} in {container} ({module}.{name})", ["inspect", "--format", "json", "."],
                        case, pickles={".": True}))
    for index, (label, data) in enumerate(benign_files()):
        case = folder / f"benign{index}"
        shutil.copytree(GOOD_ADAPTER, case)
        (case / "adapter_model.safetensors").unlink()
        (case / "adapter_model.bin").write_bytes(data)
        runs.append(Run(label, ["inspect", "--format", "json", "."], case, pickles={".": False}))
    return runs


# ---------------------------------------------------------------------------------------------------- writes


def _refused(case: Path, name: str, kind_before: int, content_before: bytes | None) -> Callable[[Outcome], list[str]]:
    """The write must be refused: one line on stderr, exit 2, the target untouched (same kind and bytes)."""

    def check(outcome: Outcome) -> list[str]:
        target = case / name
        problems = []
        st = os.lstat(target)
        if stat.S_IFMT(st.st_mode) != kind_before:
            problems.append("unsafe write: the target's kind changed")
        elif content_before is not None and target.read_bytes() != content_before:
            problems.append("unsafe write: the refused target changed")
        if outcome.rc != 2 or len(outcome.stderr.strip().splitlines()) != 1:
            problems.append(f"unsafe write: not refused in one line with exit 2 (exit {outcome.rc})")
        return problems

    return check


def write_runs(folder: Path) -> list[Run]:
    runs = []
    fixable = FIXABLE.read_bytes()

    def case_with_script(label: str) -> Path:
        case = folder / f"w{len(runs):02d}"
        case.mkdir()
        (case / "train.py").write_bytes(fixable)
        return case

    case = case_with_script("read-only")
    os.chmod(case / "train.py", 0o444)
    runs.append(Run("--fix on a read-only file", ["check", "--fix", "train.py"], case, writes=True,
                    check=_refused(case, "train.py", stat.S_IFREG, fixable)))

    case = case_with_script("symlink")
    (case / "train.py").rename(case / "real.py")
    (case / "train.py").symlink_to("real.py")

    def link_kept(outcome: Outcome, case=case) -> list[str]:
        if not (case / "train.py").is_symlink():
            return ["unsafe write: the symlink was replaced by a file"]
        if (case / "real.py").read_bytes() == fixable and outcome.rc != 2:
            return ["unsafe write: the link's target was left unfixed without a refusal"]
        return []

    runs.append(Run("--fix on a symlink", ["check", "--fix", "train.py"], case, writes=True, check=link_kept))

    for label, make in (("FIFO", lambda p: os.mkfifo(p)), ("device", lambda p: p.symlink_to("/dev/null")),
                        ("folder", lambda p: p.mkdir())):
        case = case_with_script(label)
        make(case / "report.txt")
        kind = stat.S_IFMT(os.lstat(case / "report.txt").st_mode)
        runs.append(Run(f"--output to a {label}", ["check", "train.py", "--output", "report.txt"], case,
                        writes=True, check=_refused(case, "report.txt", kind, None)))
    for spelling in ("train.py", "./train.py", "sub/../train.py"):
        case = case_with_script("output is the script")
        (case / "sub").mkdir()
        runs.append(Run(f"--output naming the checked script ({spelling})", ["check", "train.py", "-o", spelling],
                        case, writes=True, check=_refused(case, "train.py", stat.S_IFREG, fixable)))
    case = case_with_script("read-only output")
    (case / "report.txt").write_text("old\n")
    os.chmod(case / "report.txt", 0o444)
    runs.append(Run("--output on a read-only file", ["check", "train.py", "-o", "report.txt"], case, writes=True,
                    check=_refused(case, "report.txt", stat.S_IFREG, b"old\n")))

    case = case_with_script("concurrent")
    # A concurrent writer: the moment peftdoctor creates its temp file (after it read the script), someone
    # appends a line. Writing over that change loses it.
    hook = ("import os, tempfile\n_mk = tempfile.mkstemp\n"
            "def _mkstemp(*a, dir=None, **k):\n"
            "    if dir is not None and os.path.samefile(dir, '.'):\n"
            "        with open('train.py', 'a') as f: f.write('# changed during the run\\n')\n"
            "        tempfile.mkstemp = _mk\n"
            "    return _mk(*a, dir=dir, **k)\n"
            "tempfile.mkstemp = _mkstemp\n")

    def change_kept(outcome: Outcome, case=case) -> list[str]:
        if b"# changed during the run" not in (case / "train.py").read_bytes():
            return ["unsafe write: a change made during the run was overwritten"]
        return []

    runs.append(Run("--fix while another writer changes the file", ["check", "--fix", "train.py"], case,
                    writes=True, check=change_kept, hook=hook))
    return runs


# ---------------------------------------------------------------------------------------------------- runner


def snapshot(folder: Path) -> dict[bytes, tuple]:
    """Every entry under `folder` (the cache excluded): kind and content hash, to see what a run changed."""
    seen = {}
    for top, dirs, files in os.walk(os.fsencode(folder)):
        dirs[:] = [d for d in dirs if d != b".peftdoctor_cache"]
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o444 and st.st_size < 200_000_000:
                with contextlib.suppress(OSError), open(path, "rb") as stream:
                    digest = hashlib.sha1(stream.read()).hexdigest()
            seen[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), digest)
    return seen


def demote_to_nobody() -> None:
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)


def nobody_can_run() -> bool:
    """Whether peftdoctor runs as `nobody` here (root's interpreter may live in a folder nobody cannot enter)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return True
    try:
        return subprocess.run([sys.executable, "-c", "import peftdoctor"], preexec_fn=demote_to_nobody,
                              cwd="/", capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


def execute(run: Run, timeout: float, cache: Path) -> Outcome:
    env = {**os.environ, "PEFTDOCTOR_CACHE_DIR": str(cache), "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    code = run.hook + "import runpy, sys\nsys.argv[0] = 'peftdoctor'\nrunpy.run_module('peftdoctor', " \
                      "run_name='__main__', alter_sys=True)\n"
    argv = [sys.executable, "-c", code, *run.argv]

    before = None if run.writes else snapshot(run.cwd)
    start = time.monotonic()
    process = subprocess.Popen(argv, cwd=run.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=demote_to_nobody if run.as_nobody else None)
    try:
        out, err = process.communicate(timeout=timeout)
        rc = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        rc = None
    outcome = Outcome(run, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      time.monotonic() - start)
    outcome.verdicts = classify(outcome, before)
    return outcome


def codes_reported(outcome: Outcome) -> set[str]:
    return set(re.findall(r"(?:^|[\s\"'>])(PD\d{3})(?=[\s\"'<:])", outcome.stdout, re.MULTILINE))


def internal_errors(outcome: Outcome) -> list[str]:
    """`path: message` of each PD002 finding (JSON report) or each PD002 line (text)."""
    try:
        findings = json.loads(outcome.stdout)["findings"]
        return [f"{f['path']}: {f['message']}" for f in findings if f.get("code") == "PD002"]
    except (ValueError, KeyError, TypeError):
        return [line for line in outcome.stdout.splitlines() if re.search(r"\bPD002\b", line)]


def pd611_folders(outcome: Outcome) -> set[str] | None:
    """The folders (relative to the run's cwd) with a PD611 finding in a JSON report, or None if unreadable."""
    try:
        findings = json.loads(outcome.stdout)["findings"]
    except (ValueError, KeyError, TypeError):
        return None
    return {os.path.normpath(os.path.dirname(f["path"])) for f in findings if f.get("code") == "PD611"}


def classify(outcome: Outcome, before: dict | None) -> Counter:
    run, verdicts = outcome.run, Counter()
    if outcome.rc is None:
        return Counter(hangs=1)
    if "Traceback" in outcome.stderr:
        verdicts["tracebacks"] += 1
    if outcome.rc < 0:
        verdicts["signals"] += 1
    elif outcome.rc not in (0, 1, 2):
        verdicts["bad_output"] += 1
    fmt = run.argv[run.argv.index("--format") + 1] if "--format" in run.argv else "text"
    if fmt in ("json", "sarif") and outcome.rc in (0, 1):
        try:
            json.loads(outcome.stdout)
        except ValueError:
            verdicts["bad_output"] += 1
    if "PD002" in codes_reported(outcome):
        verdicts["PD002"] += 1
    if before is not None and snapshot(run.cwd) != before:
        verdicts["unsafe_writes"] += 1
    if run.check is not None and outcome.rc >= 0:
        problems = run.check(outcome)
        if problems:
            verdicts["unsafe_writes"] += 1
            outcome.stderr += "\n[fuzz] " + "; ".join(problems)
    if run.pickles and outcome.rc >= 0:
        flagged = pd611_folders(outcome) or set()
        missed = [where for where, bad in run.pickles.items() if bad and os.path.normpath(where) not in flagged]
        false_alarms = [where for where, bad in run.pickles.items() if not bad and os.path.normpath(where) in flagged]
        verdicts["pickles_missed"] += len(missed)
        verdicts["benign_flagged"] += len(false_alarms)
        if missed or false_alarms:
            outcome.stderr += f"\n[fuzz] missed: {missed}; flagged benign: {false_alarms}"
    return +verdicts


CLASSES = ("scripts", "deep", "big", "names", "notebooks", "checkpoints", "pickles", "writes")


def build(root: Path, quick: bool, seed: int, per_class: int, classes=CLASSES) -> dict[str, list[Run]]:
    """Every case of `classes` on disk under `root`; each class has its own generator, seeded by (seed, class),
    so a class builds the same cases whichever others run."""
    runs = {}
    for klass in classes:
        rng = random.Random(f"{seed}-{klass}")
        folder = root / klass
        folder.mkdir()
        if klass == "scripts":
            runs[klass] = mutant_runs(folder, rng, script_seeds(quick, rng), per_class)
        elif klass == "deep":
            runs[klass] = deep_runs(folder, quick)
        elif klass == "big":
            runs[klass] = big_runs(folder, quick)
        elif klass == "names":
            runs[klass] = name_runs(folder)
        elif klass == "notebooks":
            runs[klass] = notebook_runs(folder, rng, script_seeds(True, rng), max(3, per_class // 4))
        elif klass == "checkpoints":
            runs[klass] = checkpoint_runs(folder, rng, quick, per_class)
        elif klass == "pickles":
            runs[klass] = pickle_runs(folder, rng, per_class, quick)
        else:
            runs[klass] = write_runs(folder)
        if quick and klass != "names":  # the names class is about each format
            runs[klass] = batched(folder, runs[klass])
    return runs


def fuzz(quick: bool, seed: int, per_class: int, jobs: int, timeout: float, keep: bool = False,
         classes=CLASSES, log=print, verbose: bool = False) -> dict[str, list[Outcome]]:
    """Build and run every class; returns the outcomes per class and prints the summary lines via `log`."""
    root = Path(tempfile.mkdtemp(prefix="peftdoctor-fuzz-"))
    os.chmod(root, 0o755)  # the unreadable-folder case runs as `nobody`, who must reach its folder
    try:
        runs = build(root, quick, seed, per_class, classes)
        cache = root / "cache"
        results: dict[str, list[Outcome]] = {k: [] for k in runs}
        if not nobody_can_run():
            for klass in runs:
                runs[klass] = [r for r in runs[klass] if not r.as_nobody]
        ordered = [(k, r) for k, rs in runs.items() for r in rs]
        ordered.sort(key=lambda kr: (kr[1].as_nobody, kr[1].hook != ""))  # privilege changes last
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(execute, r, timeout, cache): k for k, r in ordered}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]].append(future.result())
        for klass, outcomes in results.items():
            log(summary_line(klass, outcomes))
            if verbose:
                for outcome in outcomes:
                    if outcome.verdicts:
                        tail = (outcome.stderr.strip().splitlines() or [""])[-1][:300]
                        log(f"    {'+'.join(outcome.verdicts)}: {outcome.run.name} [exit {outcome.rc}] {tail}")
                        for line in internal_errors(outcome)[:5]:
                            log(f"        {line[:300]}")
                slow = sorted(outcomes, key=lambda o: -o.seconds)[:3]
                log("    slowest: " + ", ".join(f"{o.run.name} {o.seconds:.1f} s" for o in slow))
        log(summary_line("total", [o for outcomes in results.values() for o in outcomes]))
        return results
    finally:
        if keep:
            log(f"cases kept in {root}")
        else:
            for top, dirs, _ in os.walk(root):  # unlock what the cases locked, so it can be removed
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(top, d), 0o755)
            shutil.rmtree(root, ignore_errors=True)


def summary_line(klass: str, outcomes: list[Outcome]) -> str:
    counts = {column: sum(o.verdicts[column] for o in outcomes) for column in COLUMNS[1:]}
    malicious = sum(sum(o.run.pickles.values()) for o in outcomes)
    parts = [f"{klass:<12}", f"cases={sum(o.run.cases for o in outcomes):<5}"]
    parts += [f"{column}={counts[column]}" for column in COLUMNS[1:-2]]
    parts.append(f"pickles_reported={malicious - counts['pickles_missed']}/{malicious}")
    parts.append(f"benign_flagged={counts['benign_flagged']}")
    return "  ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small, fast subset the test suite runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases-per-class", type=int, default=None,
                        help="mutants, checkpoint variants and pickles per class (default 8 quick, 300 full)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as a hang")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated subset of " + ", ".join(CLASSES))
    parser.add_argument("--keep", action="store_true", help="keep the generated cases")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing run")
    args = parser.parse_args(argv)
    per_class = args.cases_per_class or (8 if args.quick else 300)
    classes = [c for c in args.classes.split(",") if c]
    unknown = set(classes) - set(CLASSES)
    if unknown:
        parser.error(f"unknown classes: {', '.join(sorted(unknown))}")
    start = time.monotonic()
    results = fuzz(args.quick, args.seed, per_class, args.jobs, args.timeout, args.keep, classes,
                   verbose=args.verbose)
    print(f"({time.monotonic() - start:.0f} s, seed {args.seed}, {per_class} cases per class, "
          f"{'quick' if args.quick else 'full'})")
    failed = any(o.verdicts for outcomes in results.values() for o in outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
