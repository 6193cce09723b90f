"""`peftdoctor demo` (or `python -m peftdoctor.demo`): the bundled example, written out and checked.

The example is fixtures/demo of the repository, shipped in the wheel as peftdoctor/demo_project,
so that someone who installed from the package index can see a run without writing a script.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

class DemoError(Exception):
    """The example could not be written; the message names the path."""


def example_folder() -> Path:
    """The bundled example: in the installed package, or the repository's fixtures/demo."""
    here = Path(__file__).resolve().parent
    for folder in (here / "demo_project", here.parent / "fixtures" / "demo"):
        if folder.is_dir():
            return folder
    raise DemoError(f"{here / 'demo_project'}: the bundled example is missing from this install")


def write_example(dest: Path) -> list[Path]:
    """Copy the example's scripts into `dest`; refuses to overwrite anything, writes each file whole."""
    sources = sorted(path for path in example_folder().iterdir() if path.suffix == ".py")
    targets = [dest / source.name for source in sources]
    for target in targets:
        if target.exists() or target.is_symlink():
            raise DemoError(f"{target}: already exists; pass another folder (peftdoctor demo FOLDER)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for source, target in zip(sources, targets):
            handle, temporary = tempfile.mkstemp(dir=dest, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(source.read_bytes())
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
    except OSError as exc:
        raise DemoError(f"{exc.filename or dest}: cannot write the example: {exc.strerror or exc}") from None
    return targets


def main() -> None:
    from peftdoctor.cli import cli

    cli(["demo", *sys.argv[1:]], prog_name="peftdoctor")


if __name__ == "__main__":
    main()
