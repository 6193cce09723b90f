"""How fast `peftdoctor check` is, whole process, in lines per second.

Usage: python bench/check_speed.py [FOLDER ...]
Defaults to fixtures/scripts, fixtures/projects and, when present, ../shared/practice/repos
(whole public repositories, each folder one project).
Each folder is checked 3 times in a fresh process; the best run is reported.
When `fixit` is on PATH (pip install fixit, in another env), `fixit lint` on the same
folder is timed too and the ratio printed. Fixit runs its own default rules there:
the ratio compares engines doing comparable whole-file work, not identical rules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def count_lines(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.py") if p.is_file()]
    return len(files), sum(p.read_bytes().count(b"\n") + 1 for p in files)


def best_time(command: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> None:
    folders = [Path(a) for a in argv] or [ROOT / "fixtures" / "scripts", ROOT / "fixtures" / "projects",
                                          ROOT.parent / "shared" / "practice" / "repos"]
    startup = best_time([sys.executable, "-m", "peftdoctor", "--version"])
    print(f"process start-up (peftdoctor --version): {startup * 1000:.0f} ms")
    for folder in folders:
        if not folder.is_dir():
            continue
        files, lines = count_lines(folder)
        seconds = best_time([sys.executable, "-m", "peftdoctor", "check", str(folder)])
        print(f"{folder}: {files} files, {lines} lines in {seconds:.2f} s whole process "
              f"= {lines / seconds:,.0f} lines/s ({lines / max(seconds - startup, 1e-9):,.0f} lines/s after start-up)")
        fixit = shutil.which("fixit")
        if fixit:
            fixit_seconds = best_time([fixit, "lint", str(folder)], runs=1)
            print(f"  fixit lint: {fixit_seconds:.2f} s = {lines / fixit_seconds:,.0f} lines/s; "
                  f"peftdoctor is {fixit_seconds / seconds:.1f}x faster")


if __name__ == "__main__":
    main(sys.argv[1:])
