"""How many token ids a tokenizer saved beside an adapter uses, read from its JSON files."""

from __future__ import annotations

from pathlib import Path

from peftdoctor import regular_file

TOKENIZER_FILES = ("tokenizer.json", "added_tokens.json", "tokenizer_config.json")


def token_count(folder: Path) -> tuple[int, str] | None:
    """(highest token id + 1, file that says so) over the tokenizer files present, or None."""
    best: tuple[int, str] | None = None
    for name in TOKENIZER_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = regular_file.parse_json(regular_file.read_text(path))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        count = _count(name, data)
        if count and (best is None or count > best[0]):
            best = (count, str(path))
    return best


def _count(name: str, data) -> int:
    if not isinstance(data, dict):
        return 0
    ids: list[int] = []
    if name == "tokenizer.json":
        vocab = (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict) else None
        if isinstance(vocab, dict):
            ids += [v for v in vocab.values() if type(v) is int]
        elif isinstance(vocab, list):
            ids.append(len(vocab) - 1)
        ids += [t.get("id") for t in data.get("added_tokens") or [] if isinstance(t, dict)]
    elif name == "added_tokens.json":
        ids += list(data.values())
    else:
        decoder = data.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            ids += [int(k) for k in decoder if str(k).isdigit()]
    ids = [i for i in ids if type(i) is int and i >= 0]
    return max(ids) + 1 if ids else 0
