"""PD611: list the globals a pickled adapter_model.bin would import, without unpickling it.

Unpickling calls whatever callables the file names, so a .bin can run any code
on load. Reading the opcodes with `pickletools.genops` shows every GLOBAL /
STACK_GLOBAL it would resolve; a torch save needs only tensor rebuilding,
storage classes and OrderedDict.
"""

from __future__ import annotations

import io
import pickletools
import zipfile

SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_GET_OPS = {"BINGET", "LONG_BINGET", "GET"}
_PUT_OPS = {"BINPUT", "LONG_BINPUT", "PUT"}
_NO_PUSH_OPS = {"MEMOIZE", "FRAME", "PROTO", "STOP", "POP", "POP_MARK", "MARK"}


class PickleUnreadable(Exception):
    """The file is neither a torch zip nor a readable pickle stream."""


def is_safe(module: str, name: str) -> bool:
    return (module, name) in SAFE_GLOBALS or (module == "torch" and name.endswith("Storage"))


def pickle_globals(path: str) -> list[tuple[str, str]]:
    """Every (module, name) the pickle(s) in `path` would import, in order of appearance."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    raise PickleUnreadable("torch zip archive without data.pkl")
                found = []
                for name in names:
                    found += _scan(archive.read(name), streams=1)
                return found
        with open(path, "rb") as stream:
            # The legacy torch format is several pickles in a row, then raw storage bytes.
            return _scan(stream.read(), streams=5)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PickleUnreadable(str(getattr(exc, "strerror", None) or exc)) from None


def _scan(data: bytes, streams: int) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stream = io.BytesIO(data)
    for index in range(streams):
        if stream.tell() >= len(data):
            break
        try:
            found += _scan_one(stream)
        except (ValueError, EOFError, IndexError) as exc:
            if index == 0:
                raise PickleUnreadable(f"not a pickle: {exc}") from None
            break  # past the pickles, in the raw storage bytes
    return found


def _scan_one(stream) -> list[tuple[str, str]]:
    found = []
    pushed: list = []  # strings pushed (None for anything else), enough to resolve STACK_GLOBAL
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "GLOBAL" or name == "INST":
            module, _, attr = str(arg).partition(" ")
            found.append((module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            if isinstance(module, str) and isinstance(attr, str):
                found.append((module, attr))
            else:
                found.append(("<dynamic>", "<computed name>"))
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name in _GET_OPS:
            pushed.append(memo.get(arg))
        elif name in _PUT_OPS:
            memo[arg] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name not in _NO_PUSH_OPS:
            pushed.append(None)
        if name == "STOP":
            break
    return found
