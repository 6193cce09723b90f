"""How fast `peftdoctor check` is, whole process: cold, warm (from its cache), and against fixit and torchfix.

Usage: python bench/check_speed.py [FOLDER ...]
Defaults to fixtures/scripts, fixtures/projects and, when present, ../shared/practice/repos (whole public
repositories). Also times one file of about 500 lines (the practice file nearest that size that mentions peft,
else the largest fixture). Each command runs in a fresh process, 3 times; the best run is shown, with its CPU
seconds (user + system, all cores), lines per CPU second, and the peak memory of the largest process.

fixit and torchfix are timed when they are on PATH (install them in another environment, e.g.
`python -m venv /tmp/lint && /tmp/lint/bin/pip install fixit torchfix`, then put /tmp/lint/bin on PATH).
They run their own default rules: the ratio compares engines doing whole-file work, not identical rules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRACTICE = ROOT.parent / "shared" / "practice" / "repos"


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mb: float


def count_lines(target: Path) -> tuple[int, int]:
    files = [target] if target.is_file() else [p for p in target.rglob("*.py") if p.is_file()]
    return len(files), sum(p.read_bytes().count(b"\n") + 1 for p in files)


def run_once(command: list[str]) -> Run:
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def best(command: list[str], runs: int = 3) -> Run:
    return min((run_once(command) for _ in range(runs)), key=lambda run: run.wall)


def line(label: str, run: Run, lines: int) -> str:
    return (f"  {label:<22} {run.wall:7.2f} s wall {run.cpu:7.2f} s cpu {run.peak_mb:6.0f} MB peak  "
            f"{lines / run.wall:>9,.0f} lines/s  {lines / max(run.cpu, 1e-9):>9,.0f} lines/cpu-s")


def one_file_of_500_lines() -> Path:
    candidates = sorted(PRACTICE.rglob("*.py")) if PRACTICE.is_dir() else []
    near = [(abs(p.read_bytes().count(b"\n") - 500), str(p), p) for p in candidates
            if b"peft" in p.read_bytes()]
    if near:
        return min(near)[2]
    return max((ROOT / "fixtures").rglob("*.py"), key=lambda p: p.stat().st_size)


def bench(target: Path) -> None:
    files, lines = count_lines(target)
    print(f"{target}: {files} files, {lines:,} lines")
    peftdoctor = [sys.executable, "-m", "peftdoctor", "check"]
    cold = best([*peftdoctor, "--no-cache", str(target)])
    print(line("peftdoctor cold", cold, lines))
    with tempfile.TemporaryDirectory() as cache:
        run_once([*peftdoctor, "--cache-dir", cache, str(target)])  # fills the cache
        warm = best([*peftdoctor, "--cache-dir", cache, str(target)])
    print(line("peftdoctor warm", warm, lines))
    for name, command in (("fixit", ["fixit", "lint"]), ("torchfix", ["torchfix"])):
        if shutil.which(command[0]):
            other = best([shutil.which(command[0]), *command[1:], str(target)], runs=1)
            print(line(name, other, lines) + f"  peftdoctor cold is {other.wall / cold.wall:.1f}x faster "
                  f"({(lines / cold.cpu) / (lines / max(other.cpu, 1e-9)):.1f}x per cpu-second)")


def main(argv: list[str]) -> None:
    startup = best([sys.executable, "-m", "peftdoctor", "--version"])
    print(f"process start-up (peftdoctor --version): {startup.wall * 1000:.0f} ms")
    targets = [Path(a) for a in argv] or [ROOT / "fixtures" / "scripts", ROOT / "fixtures" / "projects", PRACTICE,
                                          one_file_of_500_lines()]
    for target in targets:
        if target.exists():
            bench(target)


if __name__ == "__main__":
    main(sys.argv[1:])
