"""PD611 against hand-built malicious pickles: nothing here is ever unpickled.

Each payload names a harmless canary (os.getcwd, builtins.print) where an attack would name os.system;
the scanner must report it however the opcode stream or the container hides it. Benign torch saves stay
clean.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from peftdoctor.config import Config
from peftdoctor.inspect.pickle_scan import MAX_ARG_BYTES, PickleUnreadable, is_safe, pickle_globals
from peftdoctor.inspect.run import inspect_paths

ROOT = Path(__file__).resolve().parent.parent
GOOD = ROOT / "fixtures" / "adapters" / "good-llama"


# ------------------------------------------------------------------------------------------ opcode helpers


def u(text: str) -> bytes:
    """SHORT_BINUNICODE"""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


PROTO4, STOP, POP, POP_MARK, MARK, DUP = b"\x80\x04", b".", b"0", b"1", b"(", b"2"
STACK_GLOBAL, REDUCE, BUILD, EMPTY_TUPLE, EMPTY_DICT, MEMOIZE = b"\x93", b"R", b"b", b")", b"}", b"\x94"
SETITEMS, TUPLE1, NONE = b"u", b"\x85", b"N"


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


def pkl(*parts: bytes) -> bytes:
    data = PROTO4 + b"".join(parts) + STOP
    assert [op.name for op, _, _ in pickletools.genops(data)][-1] == "STOP"  # well formed, never loaded
    return data


def write_torch_zip(path: Path, pickle_bytes: bytes, extra=()) -> None:
    """The layout torch.save writes (minus storages); `extra`: more (name, bytes) entries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on a duplicate name: that is the point
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle_bytes)
            archive.writestr("archive/byteorder", "little")
            archive.writestr("archive/version", "3\n")
            for name, data in extra:
                archive.writestr(name, data)


def torch_zip_bytes(pickle_bytes: bytes, extra=()) -> bytes:
    buffer = io.BytesIO()
    write_torch_zip(buffer, pickle_bytes, extra)
    return buffer.getvalue()


def unsafe(path) -> list[str]:
    return sorted({f"{m}.{n}" for m, n in pickle_globals(str(path)) if not is_safe(m, n)})


def canary_call(module_ops: bytes, name_ops: bytes) -> bytes:
    """module_ops / name_ops leave the strings; STACK_GLOBAL, then call it with no arguments."""
    return module_ops + name_ops + STACK_GLOBAL + EMPTY_TUPLE + REDUCE + POP


BENIGN = pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE)


# -------------------------------------------------------------------------------- opcode-stream evasions


EVASIONS = {
    # The real stack holds os, getcwd; the strings pushed last (then popped) are a safe pair.
    "pop": pkl(u("os"), u("getcwd"), u("collections"), u("OrderedDict"), POP, POP, STACK_GLOBAL, EMPTY_TUPLE,
               REDUCE),
    "pop_mark": pkl(u("os"), u("getcwd"), MARK, u("collections"), u("OrderedDict"), POP_MARK, STACK_GLOBAL,
                    EMPTY_TUPLE, REDUCE),
    # Memo slots written after a POP hold what is under the popped value, not the last string pushed.
    "memo_after_pop": pkl(u("os"), u("collections"), POP, put(0), u("getcwd"), u("OrderedDict"), POP, put(1),
                          POP, POP, get(0), get(1), STACK_GLOBAL, EMPTY_TUPLE, REDUCE),
    "memoize_after_pop": pkl(u("os"), u("collections"), POP, MEMOIZE, u("getcwd"), u("OrderedDict"), POP,
                             MEMOIZE, POP, POP, get(0), get(1), STACK_GLOBAL, EMPTY_TUPLE, REDUCE),
    # POP on a MARK removes the MARK (as the unpickler does).
    "pop_removes_mark": pkl(u("os"), MARK, POP, u("getcwd"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE),
    "dup": pkl(u("os"), u("getcwd"), DUP, POP, STACK_GLOBAL, EMPTY_TUPLE, REDUCE),
    "global_then_pop": pkl(b"cos\ngetcwd\n", POP, BENIGN[2:-1]),
    "global_via_memo": pkl(b"cos\ngetcwd\n", put(3), POP, u("x"), POP, get(3), EMPTY_TUPLE, REDUCE),
    "inst": pkl(MARK, b"ios\ngetcwd\n"),
    "obj": pkl(MARK, b"cos\ngetcwd\n", b"o"),
    "protocol0_text_global": b"cos\ngetcwd\n(tR.",
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_hidden_callable_is_reported(name, tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, EVASIONS[name])
    assert "os.getcwd" in unsafe(path)


def test_stack_games_around_safe_names_stay_clean(tmp_path):
    path = tmp_path / "adapter_model.bin"
    payload = pkl(u("torch._utils"), MEMOIZE, u("junk"), POP, MARK, u("os"), POP_MARK, u("_rebuild_tensor_v2"),
                  DUP, POP, STACK_GLOBAL, POP, get(0), u("collections"), POP, POP, u("collections"),
                  u("OrderedDict"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE)
    write_torch_zip(path, payload)
    assert unsafe(path) == []


UNPROVABLE = {
    # STACK_GLOBAL on something that is not a string pushed by the file.
    "stack_global_on_call_result": (pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE,
                                        u("getcwd"), STACK_GLOBAL), "STACK_GLOBAL with operands"),
    "stack_global_on_int": (pkl(b"K\x01", u("getcwd"), STACK_GLOBAL), "STACK_GLOBAL with operands"),
    # A call on what is not an allowed global: the result of a call, a persistent id, an extension code.
    "reduce_on_call_result": (pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE,
                                  EMPTY_TUPLE, REDUCE), "REDUCE on"),
    "reduce_on_persid": (pkl(u("x"), b"Q", EMPTY_TUPLE, REDUCE), "REDUCE on"),
    "extension_registry": (pkl(b"\x82\x01", EMPTY_TUPLE, REDUCE), "EXT1"),
    # BUILD on a global sets attributes on the class / function / module itself.
    "build_on_global": (pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, EMPTY_DICT, BUILD), "BUILD on"),
    "build_on_dict": (pkl(EMPTY_DICT, EMPTY_DICT, BUILD), "BUILD on"),
    # SETITEM / APPEND on a global call that global's own __setitem__ / append.
    "setitem_on_global": (pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, u("k"), NONE, b"s"),
                          "SETITEM on collections.OrderedDict"),
    "appends_on_global": (pkl(u("collections"), u("OrderedDict"), STACK_GLOBAL, MARK, NONE, b"e"),
                          "APPENDS on collections.OrderedDict"),
    # Streams a loader would reject, or that the scanner cannot follow.
    "memo_get_empty_slot": (pkl(get(7)), "unreadable opcode stream"),
    "pop_empty_stack": (PROTO4 + POP + NONE + STOP, "unreadable opcode stream"),
    "no_stop": (PROTO4 + u("os") + u("getcwd") + STACK_GLOBAL, "unreadable opcode stream"),
    "huge_argument": (PROTO4 + b"X" + struct.pack("<I", MAX_ARG_BYTES + 1) + b"a" * (MAX_ARG_BYTES + 1) + STOP,
                      "unreadable opcode stream"),
}


@pytest.mark.parametrize("name", sorted(UNPROVABLE))
def test_what_cannot_be_proved_harmless_is_reported(name, tmp_path):
    payload, expected = UNPROVABLE[name]
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, payload)
    found = unsafe(path)
    assert any(expected in item for item in found), found


# ----------------------------------------------------------------------------------------- container tricks


MALICIOUS = pkl(u("os"), u("getcwd"), STACK_GLOBAL, EMPTY_TUPLE, REDUCE)


def test_polyglot_pickle_with_a_benign_zip_appended(tmp_path):
    # torch.load sees no zip header at byte 0 and unpickles the front; zipfile finds the zip at the end.
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(MALICIOUS + torch_zip_bytes(BENIGN))
    assert zipfile.is_zipfile(path)
    found = unsafe(path)
    assert "os.getcwd" in found
    assert any("parses as a pickle and as a zip at once" in item for item in found), found
    assert any("does not start at byte 0" in item for item in found), found


def test_polyglot_is_reported_even_when_both_views_look_benign(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(BENIGN + torch_zip_bytes(BENIGN))
    found = unsafe(path)
    assert any("parses as a pickle and as a zip" in item for item in found), found


def test_malicious_zip_behind_a_benign_pickle(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(BENIGN + torch_zip_bytes(MALICIOUS))
    assert "os.getcwd" in unsafe(path)


def test_two_data_pkl_entries_are_both_scanned(tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, BENIGN, extra=[("archive/data.pkl", MALICIOUS)])
    found = unsafe(path)
    assert "os.getcwd" in found and "<zip>.duplicate entry archive/data.pkl" in found
    # The other order too: the scanner must not read only the first (or only the last) one.
    write_torch_zip(path, MALICIOUS, extra=[("archive/data.pkl", BENIGN)])
    assert "os.getcwd" in unsafe(path)


def test_duplicate_benign_data_pkl_is_still_reported(tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, BENIGN, extra=[("archive/data.pkl", BENIGN)])
    assert unsafe(path) == ["<zip>.duplicate entry archive/data.pkl"]


@pytest.mark.parametrize("entry", ["archive/extra.pkl", "archive/version", "other/data.pkl",
                                   "archive/data/../../evil.pkl"])
def test_every_pickle_in_the_zip_is_scanned(entry, tmp_path):
    path = tmp_path / "adapter_model.bin"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_torch_zip(path, BENIGN, extra=[(entry, MALICIOUS)])
    found = unsafe(path)
    assert "os.getcwd" in found, found


def test_unexpected_zip_entries_are_reported(tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, BENIGN, extra=[("archive/notes.txt", b"hello")])
    assert unsafe(path) == ["<zip>.unexpected entry archive/notes.txt"]
    write_torch_zip(path, BENIGN, extra=[("archive/extra.pkl", BENIGN)])
    found = unsafe(path)
    assert "<zip>.unexpected entry archive/extra.pkl" in found
    assert "<zip>.a pickle in archive/extra.pkl besides data.pkl" in found


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "adapter_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", "3\n")
    assert unsafe(path) == ["<zip>.no data.pkl entry (not a torch save)"]


def test_trailing_data_after_stop_in_data_pkl(tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, BENIGN + MALICIOUS)
    found = unsafe(path)
    assert any("trailing data after STOP in archive/data.pkl" in item for item in found), found


def test_plain_pickle_followed_by_another(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(BENIGN + MALICIOUS)
    found = unsafe(path)
    assert any("bytes after the pickle's STOP" in item for item in found), found


def test_tar_container_is_reported(tmp_path):
    import tarfile

    path = tmp_path / "adapter_model.bin"
    with tarfile.open(path, "w:") as archive:
        info = tarfile.TarInfo("pickle")
        info.size = len(MALICIOUS)
        archive.addfile(info, io.BytesIO(MALICIOUS))
    found = unsafe(path)
    assert any("tar archive" in item for item in found), found


def test_garbage_is_unreadable(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(b"\xffnot a pickle at all")
    with pytest.raises(PickleUnreadable):
        pickle_globals(str(path))


# ------------------------------------------------------------------------------------------ benign saves


def small_state():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    state = module.state_dict()  # an OrderedDict with _metadata (set by BUILD)
    state["half"] = torch.ones(3, dtype=torch.float16)
    state["bf16"] = torch.ones(3, dtype=torch.bfloat16)
    state["long"] = torch.arange(3)
    state["bool"] = torch.ones(2, dtype=torch.bool)
    state["view"] = torch.ones(10)[2:5]
    state["param"] = torch.nn.Parameter(torch.ones(2))
    return torch, state


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_real_torch_save_is_clean(zip_format, tmp_path):
    torch, state = small_state()
    path = tmp_path / "adapter_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert unsafe(path) == []
    assert ("torch._utils", "_rebuild_tensor_v2") in pickle_globals(str(path))


def test_legacy_save_with_trailing_data_is_reported(tmp_path):
    torch, state = small_state()
    path = tmp_path / "adapter_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with open(path, "ab") as stream:
        stream.write(MALICIOUS)
    found = unsafe(path)
    assert any("trailing data after the legacy storages" in item for item in found), found


def test_legacy_save_with_a_zip_appended_is_reported(tmp_path):
    torch, state = small_state()
    path = tmp_path / "adapter_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with open(path, "ab") as stream:
        stream.write(torch_zip_bytes(MALICIOUS))
    found = unsafe(path)
    assert "os.getcwd" in found and any("as a zip" in item for item in found), found


def test_real_torch_zip_with_a_second_pickle_is_reported(tmp_path):
    torch, state = small_state()
    path = tmp_path / "adapter_model.bin"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        prefix = archive.namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{prefix}/data/extra", pickle.dumps(print))  # hidden among the storages' folder
        archive.writestr(f"{prefix}/constants.pkl", pickle.dumps(print))
    assert "builtins.print" in unsafe(path)


# ------------------------------------------------------------------------------------------------- the CLI


def adapter_with_bin(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(GOOD, folder)
    (folder / "adapter_model.safetensors").unlink()
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = str(ROOT / config["base_model_name_or_path"])
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.bin").write_bytes(data)
    return folder


def test_cli_reports_the_polyglot_with_exit_1(tmp_path):
    folder = adapter_with_bin(tmp_path, EVASIONS["memo_after_pop"] + torch_zip_bytes(BENIGN))
    done = subprocess.run([sys.executable, "-m", "peftdoctor", "inspect", str(folder)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if " PD611 " in line]
    assert "os.getcwd" in line and "parses as a pickle and as a zip at once" in line


def test_inspect_finding_lists_every_problem(tmp_path):
    folder = adapter_with_bin(tmp_path, torch_zip_bytes(EVASIONS["pop_mark"], extra=[("archive/data.pkl",
                                                                                       BENIGN)]))
    [item] = inspect_paths([str(folder)], config=Config(), show_summary=False).findings
    assert item.code == "PD611"
    assert "os.getcwd" in item.message and "duplicate entry archive/data.pkl" in item.message


def test_real_peft_bin_save_is_clean(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert unsafe(tmp_path / "adapter_model.bin") == []


# ------------------------------------------------------------------------------------------ bounded output


def test_repeated_problems_are_listed_once_and_capped(tmp_path):
    path = tmp_path / "adapter_model.bin"
    calls = (MALICIOUS[2:-1] + POP) * 500 + (EMPTY_DICT + EMPTY_TUPLE + REDUCE + POP) * 500
    write_torch_zip(path, pkl(calls))
    found = pickle_globals(str(path))
    assert found.count(("os", "getcwd")) == 1
    problems = [item for item in found if item[0] == "<pickle>"]
    assert 1 < len(problems) <= 22 and any("more than" in name for _, name in problems)


# ---------------------------------------------------------------------------------------------- zip layout


def test_bytes_hidden_between_zip_entries(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", BENIGN)
        buffer.seek(archive.start_dir)
        buffer.write(MALICIOUS)  # outside any entry: a reader that walks local headers may find it
        archive.start_dir = buffer.tell()
        archive.writestr("archive/version", "3\n")
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(buffer.getvalue())
    found = unsafe(path)
    assert any("bytes outside any entry before archive/version" in item for item in found), found


def test_two_zips_back_to_back(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(torch_zip_bytes(MALICIOUS) + torch_zip_bytes(BENIGN))
    found = unsafe(path)
    assert any("bytes outside any entry" in item for item in found), found


def test_data_after_the_zip_end_record(tmp_path):
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(torch_zip_bytes(BENIGN) + MALICIOUS)
    found = unsafe(path)
    assert any("after the end-of-central-directory record" in item for item in found), found


def test_dotted_storage_name_is_not_a_storage(tmp_path):
    path = tmp_path / "adapter_model.bin"
    write_torch_zip(path, pkl(u("torch"), u("hub.FloatStorage"), STACK_GLOBAL))
    assert unsafe(path) == ["torch.hub.FloatStorage"]


def test_zip_with_a_corrupt_central_directory_is_reported(tmp_path):
    data = bytearray(torch_zip_bytes(BENIGN))
    central = data.rindex(b"PK\x01\x02")
    data[central:central + 4] = b"XXXX"
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(bytes(data))
    found = unsafe(path)
    assert any(item.startswith("<zip>.unreadable zip") for item in found), found


def test_scan_memory_does_not_grow_with_nesting_or_long_names(tmp_path):
    import tracemalloc

    path = tmp_path / "adapter_model.bin"
    # 100k nested tuples (DUP TUPLE2, each holding the last), then 100k memoized small tuples.
    chain = NONE + (DUP + b"\x86") * 100_000 + POP + (NONE + NONE + b"\x86" + MEMOIZE + POP) * 100_000
    write_torch_zip(path, pkl(chain))
    tracemalloc.start()
    try:
        pickle_globals(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60 * 2**20, peak
    # A global named with a 500 KB module line is recorded clipped, and is not safe.
    write_torch_zip(path, pkl(b"c" + b"torch" * 100_000 + b"\nFloatStorage\n"))
    [(module, name)] = pickle_globals(str(path))
    assert len(module) < 300 and module.endswith("...") and not is_safe(module, name)


def test_damaged_zip_entry_is_reported_not_raised(tmp_path):
    data = bytearray(torch_zip_bytes(MALICIOUS))
    at = data.index(MALICIOUS)
    data[at + 3] ^= 0xFF  # the CRC no longer matches
    path = tmp_path / "adapter_model.bin"
    path.write_bytes(bytes(data))
    found = unsafe(path)
    assert any("archive/data.pkl" in item and ("unreadable" in item or "CRC" in item) for item in found), found
