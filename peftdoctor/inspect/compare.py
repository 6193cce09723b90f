"""PD709 from files: which adapter tensors did not change between two checkpoints of one run.

Two folders are checkpoints of one run when they hold the same tensors and were saved at different steps
(trainer_state.json's global_step, else a checkpoint-N folder name): two copies of one adapter are not.
Bytes are compared one tensor at a time, in bounded chunks, through memory maps: nothing is unpickled or
converted, and neither file is read whole.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect.checks import PREFIX, Adapter
from peftdoctor.runtime.learning import group_by_module

CHUNK = 16 << 20  # bytes compared at a time
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)$")


def _index(adapter: Adapter) -> dict:
    return {t.name: (t.dtype, t.shape) for t in adapter.tensors}


def checkpoint_step(folder: Path) -> int | None:
    """The training step a checkpoint folder was saved at, or None when nothing says."""
    try:
        step = regular_file.parse_json(regular_file.read_text(folder / "trainer_state.json")).get("global_step")
    except (OSError, ValueError, AttributeError):
        step = None
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    match = CHECKPOINT_NAME.match(folder.resolve().name)
    return int(match[1]) if match else None


def in_step_order(first: Adapter, second: Adapter) -> tuple[Adapter, Adapter] | None:
    """(earlier, later) when both are checkpoints of one adapter saved at different steps, else None."""
    if not first.tensors or _index(first) != _index(second):
        return None
    steps = checkpoint_step(first.folder), checkpoint_step(second.folder)
    if None in steps or steps[0] == steps[1]:
        return None
    return (first, second) if steps[0] < steps[1] else (second, first)


def _same_bytes(first: mmap.mmap, second: mmap.mmap, a, b) -> bool:
    for offset in range(0, a.nbytes, CHUNK):
        size = min(CHUNK, a.nbytes - offset)
        if first[a.start + offset:a.start + offset + size] != second[b.start + offset:b.start + offset + size]:
            return False
    return True


def unchanged_tensors(first: Adapter, second: Adapter) -> list[str]:
    """Names of the tensors whose bytes are identical in both files."""
    by_name = {t.name: t for t in second.tensors}
    with open(first.weights, "rb") as one, open(second.weights, "rb") as two:
        if os.fstat(one.fileno()).st_size == 0 or os.fstat(two.fileno()).st_size == 0:
            return []
        with mmap.mmap(one.fileno(), 0, access=mmap.ACCESS_READ) as map_one, \
                mmap.mmap(two.fileno(), 0, access=mmap.ACCESS_READ) as map_two:
            return [t.name for t in first.tensors if _same_bytes(map_one, map_two, t, by_name[t.name])]


def _label(folder: Path) -> str:
    return f"'{folder.resolve().name}' (step {checkpoint_step(folder)})"


def compare_checkpoints(first: Adapter, second: Adapter) -> list[Finding]:
    """PD709 error naming the unchanged tensors by module, or an info that every tensor changed.

    `first` is the earlier checkpoint (see in_step_order)."""
    same = unchanged_tensors(first, second)
    total = len(first.tensors)
    where = str(second.weights)
    pair = f"{_label(first.folder)} and {_label(second.folder)}"
    if not same:
        return [Finding(code="PD709", message=f"all {total} adapter tensors changed between {pair}", path=where,
                        line=0, severity=Severity.INFO)]
    groups = group_by_module(n.removeprefix(PREFIX) for n in same)
    shown = "; ".join(f"{module}: {', '.join(parts)}" for module, parts in list(groups.items())[:3])
    more = f"; ... ({len(groups)} modules in all)" if len(groups) > 3 else ""
    return [Finding(code="PD709", message=f"{len(same)} of {total} adapter tensors are byte-identical in {pair}: "
                    f"they did not learn between these checkpoints ({shown}{more})", path=where, line=0,
                    severity=Severity.ERROR,
                    hint="check the run's first steps: PeftDoctorCallback names the tensors and the cause",
                    extra={"unchanged": same, "compared_with": str(first.weights)})]
