"""PD709 from files: which adapter tensors did not change between two checkpoints of one run.

Bytes are compared one tensor at a time, in bounded chunks, through memory maps: nothing is unpickled or
converted, and neither file is read whole.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect.checks import PREFIX, Adapter
from peftdoctor.runtime.learning import group_by_module

CHUNK = 16 << 20  # bytes compared at a time


def _index(adapter: Adapter) -> dict:
    return {t.name: (t.dtype, t.shape) for t in adapter.tensors}


def comparable(first: Adapter, second: Adapter) -> bool:
    """Two checkpoints of one run: the same tensors (names, dtypes, shapes) in two different files."""
    if not first.tensors or _index(first) != _index(second):
        return False
    try:
        return not os.path.samefile(first.weights, second.weights)
    except OSError:
        return False


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
    return folder.name or str(folder)


def compare_checkpoints(first: Adapter, second: Adapter) -> list[Finding]:
    """PD709 error naming the unchanged tensors by module, or an info that every tensor changed."""
    same = unchanged_tensors(first, second)
    total = len(first.tensors)
    where = str(second.weights)
    pair = f"'{_label(first.folder)}' and '{_label(second.folder)}'"
    if not same:
        return [Finding(code="PD709", message=f"all {total} adapter tensors changed between {pair}", path=where,
                        line=0, severity=Severity.INFO)]
    groups = group_by_module(n[len(PREFIX):] if n.startswith(PREFIX) else n for n in same)
    shown = "; ".join(f"{module}: {', '.join(parts)}" for module, parts in list(groups.items())[:3])
    more = f"; ... ({len(groups)} modules in all)" if len(groups) > 3 else ""
    return [Finding(code="PD709", message=f"{len(same)} of {total} adapter tensors are byte-identical in {pair}: "
                    f"they did not learn between these checkpoints ({shown}{more})", path=where, line=0,
                    severity=Severity.ERROR,
                    hint="check the run's first steps: PeftDoctorCallback names the tensors and the cause",
                    extra={"unchanged": same, "compared_with": str(first.weights)})]
