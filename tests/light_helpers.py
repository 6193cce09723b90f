"""Running the CLI in a fresh interpreter to see which heavy libraries it imported (the light install's promise)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft")


def cli_in_fresh_process(args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The CLI's run with `args` (exit status ignored), and the torch/transformers/peft modules it imported."""
    script = (
        "import sys\n"
        "from peftdoctor.cli import cli\n"
        "try:\n"
        f"    cli({args!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    heavy = [line for line in done.stderr.splitlines() if line.startswith("HEAVY ")]
    return done, ast.literal_eval(heavy[-1][len("HEAVY "):]) if heavy else ["<the run did not finish>"]
