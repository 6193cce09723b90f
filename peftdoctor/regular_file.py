"""Open only regular files: a FIFO, device or socket is refused, never read.

Opening a FIFO for reading blocks until a writer comes (forever, for a FIFO
named adapter_config.json), and reading a device can be endless. Every file
that `check` or `inspect` reads from a user's folder goes through here; the
refusal is an OSError, so the callers' existing `except OSError` turns it into
their usual one-line message naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from peftdoctor.run_record import note

SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


class NotRegularFile(OSError):
    """The path names a FIFO, device, socket or folder where a file was expected."""


def _refuse_special(mode: int, path) -> None:
    for test, kind in SPECIAL_KINDS:
        if test(mode):
            raise NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file", os.fspath(path))


def open_regular(path):
    """`path` opened for binary reading; NotRegularFile when it is not a regular file.

    Checked before opening (opening a device may act on it) and again on the open descriptor (the path may
    have been swapped in between); O_NONBLOCK keeps the open itself from waiting on a FIFO.
    """
    note(path)  # an input of a recorded check run (see run_record)
    _refuse_special(os.stat(path).st_mode, path)
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        _refuse_special(os.fstat(handle).st_mode, path)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def read_bytes(path) -> bytes:
    with open_regular(path) as stream:
        return stream.read()


def read_text(path) -> str:
    """The file decoded as UTF-8 (UnicodeDecodeError as Path.read_text gives it)."""
    return read_bytes(path).decode("utf-8")


def parse_json(text: str | bytes):
    """`json.loads`, but JSON nested past the interpreter's recursion limit (a hostile header of 100,000
    brackets) raises ValueError like any other malformed JSON, so the callers' `except ValueError` covers it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
