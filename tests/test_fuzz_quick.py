"""The quick subset of the fuzz run (tests/fuzz/run_fuzz.py --quick), one test per class.

Each case is built on disk from a fixed seed and run through the real CLI in a subprocess with a timeout:
no traceback, no signal, no hang, no internal error (PD002), no output that does not parse, no file written
that should not be, every malicious pickle reported and a real `torch.save` left clean. The full run
(`python tests/fuzz/run_fuzz.py`) runs the same classes with many more cases.
"""

from __future__ import annotations

import os

import pytest

from fuzz import run_fuzz


@pytest.mark.parametrize("klass", run_fuzz.CLASSES)
def test_quick_fuzz_class(klass):
    lines: list[str] = []
    results = run_fuzz.fuzz(quick=True, seed=0, per_class=8, jobs=os.cpu_count() or 1, timeout=120,
                            classes=[klass], log=lines.append, verbose=True)
    outcomes = results[klass]
    assert outcomes, klass
    failed = [f"{o.run.name}: {'+'.join(o.verdicts)}\n{o.stdout[-1500:]}\n{o.stderr[-1500:]}" for o in outcomes
              if o.verdicts]
    assert not failed, "\n".join(lines + failed)
    if klass == "pickles":  # every evasion in every container, and real torch saves
        cases = [bad for o in outcomes for bad in o.run.pickles.values()]
        assert cases.count(True) == len(run_fuzz.EVASIONS) * len(run_fuzz.CONTAINERS)
        assert cases.count(False) == (2 if run_fuzz.benign_files() else 0)
