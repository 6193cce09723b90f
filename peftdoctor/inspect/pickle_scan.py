"""PD611: list what a pickled adapter_model.bin would import or call, without unpickling it.

Unpickling calls whatever callables the file names, so a .bin can run any code
on load. The scanner streams the opcodes with `pickletools.genops` through a
small model of the unpickler's stack and memo (MARK, POP, POP_MARK, DUP, PUT,
GET, MEMOIZE are followed exactly), so every GLOBAL / STACK_GLOBAL / INST is
resolved to a (module, name) and every REDUCE / NEWOBJ / OBJ / BUILD is checked
against what it would call. A torch save needs only tensor rebuilding, storage
classes and OrderedDict.

Anything the scanner cannot prove harmless comes back as a pseudo-global whose
module is in angle brackets (`<pickle>`, `<zip>`, `<file>`) and whose name says
what was found: an operand it cannot resolve, a call on something that is not
an allowed global, a file that is a pickle and a zip (or tar) at once, duplicate
or unexpected zip entries, bytes between or around zip entries, a pickle inside
the zip other than data.pkl (each one is scanned), bytes after STOP or after the
legacy format's storages. `is_safe` is False for all of them.

Memory stays bounded: pickles are read as streams (a zip member is opened, not
read), a legacy file's storages are skipped with seek, no opcode argument over
`MAX_ARG_BYTES` is read, and the model keeps only short strings, small ints and
globals (tuples and lists hold no containers), within MAX_MEMO / MAX_DEPTH.
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
import tarfile
import zipfile
import zlib

from peftdoctor import regular_file

SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "strided"),
    ("torch", "sparse_coo"),
    ("torch", "sparse_csr"),
    ("torch", "per_tensor_affine"),
    ("torch", "per_channel_affine"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
}
_DTYPES = {"float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32",
           "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128", "float8_e4m3fn",
           "float8_e5m2", "qint8", "quint8", "qint32"}
# Element size of each legacy storage class: the legacy format writes numel, then numel * size bytes.
_ELEMENT_SIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                 "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                 "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QInt8Storage": 1, "QUInt8Storage": 1,
                 "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_ARG_BYTES = 1 << 20  # one opcode argument (a string, a bytes literal); a torch data.pkl has none near this
_MAX_STR = 200  # longer strings are kept as unknown values, not as candidate module / attribute names
# The model's own state: a torch data.pkl keeps a few memo entries per tensor and a stack a few thousand deep
# (pickle batches SETITEMS by 1000); past these the stream is reported, not followed.
MAX_MEMO = 1 << 20
MAX_DEPTH = 1 << 20
MAX_DISTINCT = 10_000  # distinct (module, name) pairs kept per pickle
MAX_LISTED = 50  # structural problems ("<zip>", "<file>", "<pickle>") listed per file
MAX_PROBLEMS = 20  # unprovable opcodes listed per pickle (each names its byte offset)
_ZIP_ENTRY = re.compile(r"(data\.pkl|byteorder|version|\.format_version|\.storage_alignment|data/\d+|"
                        r"\.data/serialization_id|\.data/version)")


class PickleUnreadable(Exception):
    """The file is neither a torch zip nor a readable pickle stream."""


class _TooLarge(Exception):
    pass


def is_safe(module: str, name: str) -> bool:
    if module.startswith("<"):
        return False
    # A dotted name walks attributes (torch.X.YStorage could be anything): only torch's own top-level names.
    return ((module, name) in SAFE_GLOBALS or (module == "torch" and name.isidentifier()
                                               and (name.endswith("Storage") or name in _DTYPES)))


def pickle_globals(path: str) -> list[tuple[str, str]]:
    """Every distinct (module, name) the pickle(s) in `path` would import, in order of appearance, with a
    pseudo-global ("<pickle>", "<zip>" or "<file>", what was found) for each thing not proved harmless."""
    try:
        with regular_file.open_regular(path) as stream:
            found = list(dict.fromkeys(_scan_file(path, stream)))
    except OSError as exc:
        raise PickleUnreadable(str(exc.strerror or exc)) from None
    pseudo = [item for item in found if item[0].startswith("<")]
    if len(pseudo) > MAX_LISTED:
        dropped = set(pseudo[MAX_LISTED:])
        found = [item for item in found if item not in dropped]
        found.append(("<file>", f"{len(dropped)} more problems not listed"))
    return found


# ---------------------------------------------------------------------------------------------- file level


def _scan_file(path: str, stream) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    head = stream.read(4)
    starts_as_zip = head == b"PK\x03\x04"  # what torch.load looks at to choose the zip reader
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    zip_view = zipfile.is_zipfile(stream)  # finds the end-of-central-directory record anywhere near the end
    stream.seek(0)
    zip_opens = zip_view and _zip_opens(stream)
    stream.seek(0)
    tar_view = _is_tar(stream)
    stream.seek(0)

    # The pickle view: what torch.load unpickles when the file does not start with a zip header. A file that
    # does starts with PERSID 'K\x03\x04...', which no loader accepts (pickle has no persistent_load, torch's
    # rejects that id), so it has no pickle view; parsing it would only find chance STOPs in the zip's bytes.
    if starts_as_zip:
        pickle_found, pickle_error = [], (0, "starts with a zip header")
    else:
        pickle_found, pickle_error = _scan_legacy(stream, size)
    pickle_view = pickle_error is None or pickle_error[0] > 0  # at least one whole pickle
    if pickle_view and zip_view and not zip_opens:
        zip_view = False  # an end-record signature among the pickle's storage bytes, not a zip

    views = [name for name, present in (("a pickle", pickle_view), ("a zip", zip_view), ("a tar", tar_view))
             if present]
    if len(views) > 1:
        found.append(("<file>", f"parses as {' and as '.join(views)} at once (a loader may read another view)"))
    if tar_view:
        found.append(("<file>", "tar archive (pre-1.0 torch format, whose pickles are not scanned)"))
    if zip_view and not starts_as_zip:
        found.append(("<file>", "zip data does not start at byte 0 (torch.load reads such a file as a pickle)"))

    if zip_view:
        stream.seek(0)
        found += _scan_zip(stream, size, starts_at_zero=starts_as_zip)
    if pickle_view or not zip_view:
        if not pickle_view and not tar_view:
            raise PickleUnreadable(f"not a pickle: {pickle_error[1]}")
        found += pickle_found
    return found


def _zip_opens(stream) -> bool:
    try:
        with zipfile.ZipFile(stream) as archive:
            return bool(archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return False


def _is_tar(stream) -> bool:
    try:
        with tarfile.open(fileobj=stream, mode="r:") as archive:
            return archive.next() is not None
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False


def _scan_legacy(stream, size: int):
    """The legacy torch format: magic, protocol, sys_info, the object, the storage keys (five pickles), then
    for each key an int64 element count and the raw bytes. Returns (found, None) or (found, (pickles read,
    error))."""
    found: list[tuple[str, str]] = []
    results = []
    storages: dict = {}
    for index in range(5):
        if stream.tell() >= size:
            if index == 0:
                return found, (0, "empty file")
            found.append(("<file>", f"only {index} pickle(s): not a torch save (torch expects 5 in the legacy "
                                    "format)"))
            return found, None
        try:
            globals_, result = _scan_one(stream, storages if index == 3 else None)
        except _Unreadable as exc:
            if index == 0:
                return found, (0, str(exc))
            found.append(("<pickle>", f"unreadable opcode stream in pickle {index + 1}: {exc}"))
            return found, (index, str(exc))
        found += globals_
        results.append(result)
        if index == 0 and result != _LEGACY_MAGIC:
            # Not a torch legacy save: torch.load would stop here; a plain pickle is still reported as one.
            if stream.tell() < size:
                found.append(("<file>", f"{size - stream.tell()} bytes after the pickle's STOP"))
            if not any(not is_safe(m, n) for m, n in found):
                found.append(("<file>", "a pickle that is not a torch save (no torch magic number)"))
            return found, None
    keys = results[4]
    if not (isinstance(keys, _List) and all(isinstance(k, str) for k in keys.items)):
        found.append(("<pickle>", "legacy storage key list is not a list of strings"))
        return found, None
    for key in keys.items:
        record = storages.get(key)
        if record is None:
            found.append(("<file>", f"legacy storage {key!r} is not referenced by the pickle"))
            return found, None
        type_name, numel = record
        raw = stream.read(8)
        if len(raw) < 8:
            found.append(("<file>", f"legacy storage {key!r} is truncated"))
            return found, None
        count = struct.unpack("<q", raw)[0]
        element = _ELEMENT_SIZE.get(type_name)
        if element is None or count != numel or count < 0:
            found.append(("<file>", f"legacy storage {key!r} ({type_name}, {count} elements) does not match "
                                    "its reference"))
            return found, None
        stream.seek(count * element, io.SEEK_CUR)
        if stream.tell() > size:
            found.append(("<file>", f"legacy storage {key!r} is truncated"))
            return found, None
    if stream.tell() < size:
        found.append(("<file>", f"{size - stream.tell()} bytes of trailing data after the legacy storages"))
    return found, None


def _scan_zip(stream, size: int, starts_at_zero: bool) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return [("<zip>", f"unreadable zip: {exc}")]
    with archive:
        infos = archive.infolist()
        try:
            found += _zip_layout(stream, archive, infos, size, starts_at_zero)
        except (OSError, ValueError, struct.error) as exc:
            found.append(("<zip>", f"unreadable zip layout: {exc}"))
        names = [info.filename for info in infos]
        prefixes = {name.split("/", 1)[0] for name in names}
        if len(prefixes) > 1:
            found.append(("<zip>", f"entries under {len(prefixes)} top-level folders (torch writes one)"))
        seen = set()
        for name in names:
            if name in seen:
                found.append(("<zip>", f"duplicate entry {name}"))
            seen.add(name)
        data_pkls = [info for info in infos if info.filename.split("/", 1)[-1] == "data.pkl"]
        if not data_pkls:
            found.append(("<zip>", "no data.pkl entry (not a torch save)"))
        for info in infos:
            inner = info.filename.split("/", 1)[1] if "/" in info.filename else ""
            if not _ZIP_ENTRY.fullmatch(inner):
                found.append(("<zip>", f"unexpected entry {info.filename}"))
            if re.fullmatch(r"data/\d+", inner) or info.is_dir():
                continue  # raw storage bytes, never unpickled
            try:
                with archive.open(info) as member:
                    looks_pickled = member.read(1) == b"\x80"
            except _ENTRY_ERRORS as exc:
                found.append(("<zip>", f"unreadable entry {info.filename}: {exc}"))
                continue
            if inner == "data.pkl" or info.filename.endswith(".pkl") or looks_pickled:
                if inner != "data.pkl":
                    found.append(("<zip>", f"a pickle in {info.filename} besides data.pkl"))
                found += _scan_member(archive, info)
    return found


def _zip_layout(stream, archive, infos, size: int, starts_at_zero: bool) -> list[tuple[str, str]]:
    """Entries back to back from byte 0 to the central directory, the end record last: no bytes that another
    reader (or a pickle view of the file) could see and this scan would not."""
    found: list[tuple[str, str]] = []
    stream.seek(max(size - 22, 0))
    tail = stream.read(22)
    if len(tail) < 22 or tail[:4] != b"PK\x05\x06" or tail[20:22] != b"\0\0":
        found.append(("<zip>", "data after the end-of-central-directory record (or a zip comment)"))
    position = 0
    for info in sorted(infos, key=lambda item: item.header_offset):
        if info.header_offset != position and (position or starts_at_zero):
            found.append(("<zip>", f"{info.header_offset - position} bytes outside any entry before "
                                   f"{info.filename} (entries overlap or hide data)"))
        stream.seek(info.header_offset)
        header = stream.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            found.append(("<zip>", f"no local header for {info.filename}"))
            return found
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        position = info.header_offset + 30 + name_length + extra_length + info.compress_size
        if info.flag_bits & 0x08:  # a data descriptor follows the data
            stream.seek(position)
            signed = stream.read(4) == b"PK\x07\x08"
            position += (4 if signed else 0) + (20 if info.file_size >= 0xFFFFFFFF else 12)
    if position != archive.start_dir:
        found.append(("<zip>", f"{archive.start_dir - position} bytes between the last entry and the central "
                               "directory"))
    return found


# A damaged, encrypted (RuntimeError) or oddly compressed (NotImplementedError) entry is reported, not raised.
_ENTRY_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError, zlib.error)


def _scan_member(archive, info) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        with archive.open(info) as member:
            globals_, _ = _scan_one(member, None)
            found += globals_
            if member.read(1):
                found.append(("<zip>", f"trailing data after STOP in {info.filename}"))
    except _Unreadable as exc:
        found.append(("<pickle>", f"unreadable opcode stream in {info.filename}: {exc}"))
    except _ENTRY_ERRORS as exc:
        found.append(("<zip>", f"unreadable entry {info.filename}: {exc}"))
    return found


# ------------------------------------------------------------------------------------- the opcode machine


class _Unreadable(Exception):
    pass


class _Bounded(io.RawIOBase):
    """A read-only view that refuses any single read over MAX_ARG_BYTES (genops reads whole arguments)."""

    def __init__(self, raw):
        self.raw = raw

    def readable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_ARG_BYTES:
            raise _TooLarge(f"an opcode argument over {MAX_ARG_BYTES} bytes")
        return self.raw.read(size)

    def readline(self, size=-1):
        line = self.raw.readline(MAX_ARG_BYTES)
        if len(line) >= MAX_ARG_BYTES and not line.endswith(b"\n"):
            raise _TooLarge(f"an opcode argument over {MAX_ARG_BYTES} bytes")
        return line

    def tell(self):
        return self.raw.tell()


class _Mark:
    __repr__ = lambda self: "MARK"  # noqa: E731


class _Unknown:
    __repr__ = lambda self: "?"  # noqa: E731


MARK, UNKNOWN = _Mark(), _Unknown()


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module, name):
        self.module, self.name = module, name


class _Instance:
    """What calling an allowed global returns."""


class _Tuple:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)


class _List(_Tuple):
    pass


_INSTANCE = _Instance()
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_INTS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_PUTS = {"BINPUT", "LONG_BINPUT", "PUT"}
_GETS = {"BINGET", "LONG_BINGET", "GET"}


def _scan_one(raw, storages):
    """Scan one pickle up to its STOP; returns (findings, the value left on the stack when it is modelled).
    `storages`, when given, collects the legacy persistent ids: key -> (storage class name, numel)."""
    seen: dict = {}  # (module, name) -> None: distinct, in order of appearance; memory bounded by MAX_DISTINCT
    stack: list = []
    memo: dict = {}
    problems = 0
    retained = 0  # items kept in tuples and lists

    def record(item):
        if item not in seen:
            if len(seen) >= MAX_DISTINCT:
                seen[("<pickle>", f"more than {MAX_DISTINCT} distinct globals (the rest not listed)")] = None
                return
            seen[item] = None

    def problem(text):
        nonlocal problems
        problems += 1
        if problems <= MAX_PROBLEMS:
            record(("<pickle>", f"{text} at byte {pos}"))
        elif problems == MAX_PROBLEMS + 1:
            record(("<pickle>", f"more than {MAX_PROBLEMS} unprovable opcodes (the rest not listed)"))

    def pop():
        if not stack or stack[-1] is MARK:
            raise _Unreadable(f"stack underflow at {name} (byte {pos})")
        return stack.pop()

    def pop_mark():
        items = []
        while stack and stack[-1] is not MARK:
            items.append(stack.pop())
        if not stack:
            raise _Unreadable(f"{name} without a MARK (byte {pos})")
        stack.pop()
        items.reverse()
        return items

    def check_global(module, attr):
        module, attr = _clip(module), _clip(attr)  # a clipped name ends with "..." and is never safe
        record((module, attr))
        return _Global(module, attr)

    def leaves(items):
        """What a tuple / list keeps: strings, ints and globals only (never another container, so nothing
        the scan keeps can grow by nesting), at most MAX_DEPTH items a pickle."""
        nonlocal retained
        retained += len(items)
        if retained > MAX_DEPTH:
            return None
        return [item if isinstance(item, (str, int, _Global)) else UNKNOWN for item in items]

    def container(cls, items):
        kept = leaves(items) if cls is _List or len(items) <= 8 else None
        return UNKNOWN if kept is None else cls(kept)

    def call(target, what):
        """A REDUCE / NEWOBJ / OBJ: allowed only on an allowed global."""
        if isinstance(target, _Global):
            return _INSTANCE  # the global itself was recorded (and judged) where it was pushed
        problem(f"{what} on {_describe(target)}, not an allowed global")
        return UNKNOWN

    stream = _Bounded(raw)
    name, pos = "", 0
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            name = opcode.name
            if len(stack) > MAX_DEPTH or len(memo) > MAX_MEMO:
                raise _Unreadable(f"more than {MAX_DEPTH} stack items or {MAX_MEMO} memo entries (byte {pos})")
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return list(seen), (pop() if stack else UNKNOWN)
            if name == "MARK":
                stack.append(MARK)
            elif name == "POP":
                if not stack:
                    raise _Unreadable(f"POP on an empty stack (byte {pos})")
                stack.pop()  # a MARK on top is popped as well, as the unpickler does
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1] if stack and stack[-1] is not MARK else pop())
            elif name in _PUTS:
                if not stack or stack[-1] is MARK:
                    raise _Unreadable(f"{name} with nothing to store (byte {pos})")
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                if not stack or stack[-1] is MARK:
                    raise _Unreadable(f"MEMOIZE with nothing to store (byte {pos})")
                memo[len(memo)] = stack[-1]
            elif name in _GETS:
                if arg not in memo:
                    raise _Unreadable(f"{name} {arg} of an empty memo slot (byte {pos})")
                stack.append(memo[arg])
            elif name in _STRINGS:
                stack.append(arg if isinstance(arg, str) and len(arg) <= _MAX_STR else UNKNOWN)
            elif name in _INTS:
                stack.append(arg if isinstance(arg, int) and -(1 << 128) < arg < 1 << 128 else UNKNOWN)
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(check_global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if isinstance(module, str) and isinstance(attr, str):
                    stack.append(check_global(module, attr))
                else:
                    problem(f"STACK_GLOBAL with operands it cannot resolve ({_describe(module)}, "
                            f"{_describe(attr)})")
                    stack.append(UNKNOWN)
            elif name == "INST":
                module, _, attr = str(arg).partition(" ")
                pop_mark()
                check_global(module, attr)
                stack.append(_INSTANCE)
            elif name == "OBJ":
                items = pop_mark()
                if not items:
                    raise _Unreadable(f"OBJ without a class (byte {pos})")
                stack.append(call(items[0], "OBJ"))
            elif name == "REDUCE":
                pop()
                stack.append(call(pop(), "REDUCE"))
            elif name == "NEWOBJ":
                pop()
                stack.append(call(pop(), "NEWOBJ"))
            elif name == "NEWOBJ_EX":
                pop(), pop()
                stack.append(call(pop(), "NEWOBJ_EX"))
            elif name == "BUILD":
                pop()
                target = pop()
                if not isinstance(target, _Instance):
                    problem(f"BUILD on {_describe(target)} (only an object made by an allowed global may be set up)")
                stack.append(target)
            elif name in ("EXT1", "EXT2", "EXT4"):
                problem(f"{name} {arg} (a global from copyreg's extension registry, which it cannot resolve)")
                stack.append(UNKNOWN)
            elif name == "BINPERSID":
                key = pop()
                _record_storage(key, storages)
                stack.append(UNKNOWN)
            elif name == "PERSID":
                stack.append(UNKNOWN)
            elif name in ("EMPTY_TUPLE",):
                stack.append(container(_Tuple, []))
            elif name in _TUPLES:
                items = [pop() for _ in range(_TUPLES[name])]
                stack.append(container(_Tuple, items[::-1]))
            elif name == "TUPLE":
                stack.append(container(_Tuple, pop_mark()))
            elif name == "EMPTY_LIST":
                stack.append(container(_List, []))
            elif name == "LIST":
                stack.append(container(_List, pop_mark()))
            elif name == "APPEND":
                item = pop()
                target = pop()
                if isinstance(target, _Global):
                    problem(f"APPEND on {_describe(target)} (calls a method of the global itself)")
                if isinstance(target, _List):
                    kept = leaves([item])
                    if kept is None:
                        target = UNKNOWN
                    else:
                        target.items += kept
                stack.append(target)
            elif name == "APPENDS":
                items = pop_mark()
                target = pop()
                if isinstance(target, _Global):
                    problem(f"APPENDS on {_describe(target)} (calls a method of the global itself)")
                if isinstance(target, _List):
                    kept = leaves(items)
                    if kept is None:
                        target = UNKNOWN
                    else:
                        target.items += kept
                stack.append(target)
            else:
                _generic(opcode, stack, pop, pop_mark, problem)
    except _TooLarge as exc:
        raise _Unreadable(str(exc)) from None
    except (ValueError, EOFError, IndexError, KeyError, struct.error) as exc:
        raise _Unreadable(str(exc) or type(exc).__name__) from None
    raise _Unreadable("no STOP opcode")


def _generic(opcode, stack, pop, pop_mark, problem):
    """Any other opcode: pop what it takes (down to the MARK for a stackslice), push one unknown per result.
    Opcodes that fill a container (SETITEM(S), ADDITEMS) keep the container's value; on a global they would
    call its __setitem__ / add, which is reported."""
    before = [item.name for item in opcode.stack_before]
    after = opcode.stack_after
    if "stackslice" in before:
        pop_mark()
        before = before[:before.index("mark")]
    fills = bool(before) and len(after) == 1 and before[0] in ("dict", "set")
    for _ in before[1:] if fills else before:
        pop()
    if fills:
        if not stack or stack[-1] is MARK:
            raise _Unreadable(f"{opcode.name} without a container")
        if isinstance(stack[-1], _Global):
            problem(f"{opcode.name} on {_describe(stack[-1])} (calls a method of the global itself)")
        return  # the container stays where it was
    stack.extend(UNKNOWN for _ in after)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_STR else text[:_MAX_STR] + "..."


def _record_storage(key, storages):
    if storages is None or not isinstance(key, _Tuple) or len(key.items) < 5 or len(storages) >= MAX_MEMO:
        return
    kind, storage_type, storage_key, _location, numel = key.items[:5]
    if kind == "storage" and isinstance(storage_type, _Global) and isinstance(storage_key, str) \
            and isinstance(numel, int):
        storages[storage_key] = (storage_type.name, numel)


def _describe(value) -> str:
    if isinstance(value, _Global):
        return f"{value.module}.{value.name}"
    if isinstance(value, _Instance):
        return "an object made by an allowed global"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, _List):
        return "a list"
    if isinstance(value, _Tuple):
        return "a tuple"
    if isinstance(value, int):
        return "an int"
    return "a value it cannot resolve"
