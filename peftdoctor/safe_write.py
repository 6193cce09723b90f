"""Replace a file the way a careful editor does: `--fix` rewrites and `--output` reports.

- A symlink is followed: its target is rewritten and the link stays a link.
- Only a regular file is replaced; a FIFO, a device or a socket is refused (`Refused`).
- The write permission is decided from the file's mode bits and owner, never from a failed open, so a
  read-only file is refused even when the process runs as root (root could write it, but the bits say the
  file is not meant to be changed). The rule: the write bit of the class the process falls in (owner if it
  owns the file, else group if the file's group is one of its groups, else other); root, which is in every
  class, needs any write bit. A file owned by another user is refused unless the process can give the new
  file back to that owner (root), since a rename would hand the file to the runner.
- Mode (setuid/setgid/sticky bits included) and, where the process can, owner and group of the replaced
  file are kept.
- `read_snapshot` records size, mtime_ns, inode and a SHA-256 of the bytes read; `replace_file` refuses
  to write over a file that no longer matches (someone else changed it during the run). The check runs
  once before and once more just before the rename; a change in the microseconds between the last check
  and the rename cannot be seen without locks that editors do not share.
- Atomic: temp file in the same folder, fsync, `os.replace`, fsync of the folder. A crash at any moment
  leaves either the old or the new content (plus, at worst, a stray `.NAME.*.tmp` file).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


class Refused(Exception):
    """A write that a careful editor would not do; the message is the reason, without the file's name."""


def reason(exc: Exception) -> str:
    """Why a write did not happen, for a one-line error: a refusal's reason or the OS's message."""
    return str(exc) if isinstance(exc, Refused) else (getattr(exc, "strerror", None) or str(exc))


@dataclass(frozen=True)
class Snapshot:
    """What a file was when it was read: enough to notice that it changed since."""

    real: Path
    dev: int
    ino: int
    size: int
    mtime_ns: int
    sha256: str


def real_path(path) -> Path:
    """`path` with every symlink resolved (a dangling link resolves to where its target would be)."""
    return Path(os.path.realpath(path))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def may_write(st: os.stat_result) -> bool:
    """Whether the mode bits let this process write the file (see the module doc; root needs any write bit)."""
    mode = st.st_mode
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is None:  # pragma: no cover - Windows: only the read-only attribute exists
        return bool(mode & stat.S_IWUSR)
    if euid == 0:
        return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if st.st_uid == euid:
        return bool(mode & stat.S_IWUSR)
    if st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        return bool(mode & stat.S_IWGRP)
    return bool(mode & stat.S_IWOTH)


def check_replaceable(st: os.stat_result) -> None:
    """Raise `Refused` unless a file with this stat may be replaced by this process."""
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{_kind(st.st_mode)}, not a regular file")
    if not may_write(st):
        raise Refused(f"read-only (mode {stat.S_IMODE(st.st_mode):04o})")
    if hasattr(os, "geteuid") and os.geteuid() not in (0, st.st_uid):
        raise Refused("owned by another user (replacing it would make it yours)")


def read_snapshot(path) -> tuple[bytes, Snapshot]:
    """The bytes of `path` (a symlink is followed) and a snapshot of them; `Refused` if not a regular file."""
    real = real_path(path)
    # O_NONBLOCK: opening a FIFO must not hang; fstat then says what it is.
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{_kind(st.st_mode)}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read()
    finally:
        os.close(fd)
    return data, Snapshot(real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def _check_unchanged(expect: Snapshot, st: os.stat_result) -> None:
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (expect.dev, expect.ino, expect.size, expect.mtime_ns):
        raise Refused("changed since it was read (not overwritten; run again)")
    with open(expect.real, "rb") as stream:
        if hashlib.sha256(stream.read()).hexdigest() != expect.sha256:
            raise Refused("changed since it was read (not overwritten; run again)")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def check_target(path, expect: Snapshot | None = None) -> tuple[Path, os.stat_result | None]:
    """(real path, its stat or None if absent) of where `replace_file(path, ...)` would write; `Refused`
    if it may not (not regular, read-only, another user's, or changed since `expect` was taken)."""
    real = expect.real if expect is not None else real_path(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        if expect is not None:
            raise Refused("removed since it was read") from None
        return real, None
    check_replaceable(st)
    if expect is not None:
        _check_unchanged(expect, st)
    return real, st


def replace_file(path, write, expect: Snapshot | None = None) -> Path:
    """Atomically replace `path` (its target, if a symlink) by what `write(stream)` writes to a binary stream.

    With `expect`, refuse when the file no longer matches the snapshot. A file that does not exist yet
    is created with mode 0666 minus the umask. Returns the real path written. Raises `Refused` or OSError.
    """
    real, st = check_target(path, expect)
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            if st is not None:
                if hasattr(os, "fchown") and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(stream.fileno(), st.st_uid, st.st_gid)
                    except OSError:
                        try:  # the owner is ours (checked above); keep at least the group if allowed
                            os.fchown(stream.fileno(), -1, st.st_gid)
                        except OSError:
                            pass
                mode = stat.S_IMODE(st.st_mode)
            else:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)  # after chown, which clears setuid/setgid
            os.fsync(stream.fileno())
        # once more, as late as possible: a writer that got in while we wrote is not overwritten
        check_target(real, expect)
        os.replace(tmp, real)
        tmp = None
        _fsync_folder(real.parent)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return real


def same_file(a, b) -> bool:
    """Whether two paths name the same file (after symlinks; hard links too)."""
    if real_path(a) == real_path(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
