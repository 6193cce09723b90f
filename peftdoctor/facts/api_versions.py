"""Which library versions a script's own API use implies.

A script written for TRL 0.8 passes `tokenizer=` and `max_seq_length=` to
`SFTTrainer`; TRL removed both keywords later, so a script that passes them
runs on an older TRL. `EVIDENCE` maps such API use to version bounds, and
`implied_versions(facts)` turns the calls of one file into a range per library.
This is the one place for that library knowledge; every bound was read in the
sources of the releases on either side of it (the `why` of each row says what
changed). `KNOWN_RELEASES` lists release numbers, so a range can name one
representative version: the newest known release inside it.

versions.py uses the range only when the project pins no version itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

Version = tuple[int, ...]

# The last patch release of each minor series (and each release a bound below
# sits on), oldest first. The newest of each list is versions.CURRENT_RELEASES.
KNOWN_RELEASES: dict[str, tuple[str, ...]] = {
    "trl": (
        "0.4.7", "0.5.0", "0.6.0", "0.7.11", "0.8.6", "0.9.6", "0.10.1", "0.11.4", "0.12.2", "0.13.0",
        "0.14.0", "0.15.2", "0.16.1", "0.17.0", "0.18.2", "0.19.1", "0.20.0", "0.21.0", "0.22.2", "0.23.1",
        "0.24.0", "0.25.1", "0.26.2", "0.27.2", "0.28.0", "0.29.1", "1.0.0", "1.1.0", "1.2.0", "1.3.0",
        "1.4.0", "1.5.1", "1.6.0", "1.7.1", "1.8.0", "1.9.2", "1.10.0", "1.11.0", "1.12.0", "1.13.0",
        "1.14.2", "1.15.0", "1.16.0",
    ),
    "peft": (
        "0.3.0", "0.4.0", "0.5.0", "0.6.2", "0.7.1", "0.8.2", "0.9.0", "0.10.0", "0.11.1", "0.12.0",
        "0.13.2", "0.14.0", "0.15.2", "0.16.0", "0.17.1", "0.18.1", "0.19.1", "0.20.0", "0.21.2",
    ),
    "transformers": (
        "4.30.2", "4.31.0", "4.32.1", "4.33.3", "4.34.1", "4.35.2", "4.36.2", "4.37.2", "4.38.2", "4.39.3",
        "4.40.2", "4.41.2", "4.42.4", "4.43.4", "4.44.2", "4.45.2", "4.46.3", "4.47.1", "4.48.3", "4.49.0",
        "4.50.3", "4.51.3", "4.52.4", "4.53.3", "4.54.1", "4.55.4", "4.56.2", "4.57.6", "5.0.0", "5.1.0",
        "5.2.0", "5.3.0", "5.4.0", "5.5.4", "5.6.2", "5.7.0", "5.8.1", "5.9.0", "5.10.4", "5.11.0",
        "5.12.1", "5.13.1", "5.14.1", "5.15.1", "5.16.1", "5.17.0", "5.18.0", "5.19.0", "5.20.2", "5.21.1",
        "5.22.2", "5.23.0", "5.24.0",
    ),
    "torch": (
        "1.13.1", "2.0.1", "2.1.2", "2.2.2", "2.3.1", "2.4.1", "2.5.1", "2.6.0", "2.7.1", "2.8.0",
        "2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0",
    ),
}


def parse_version(text: str) -> Version:
    """'0.13.2' -> (0, 13, 2); '0.13.0rc1' -> (0, 13, 0); stops at the first part that is not a number."""
    numbers = []
    for part in str(text).split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(numbers) or (0,)


def shown(version: Version) -> str:
    return ".".join(str(n) for n in version)


def padded(a: Version, b: Version) -> tuple[Version, Version]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def less(a: Version, b: Version) -> bool:
    a, b = padded(a, b)
    return a < b


def in_range(version: Version, low: Version | None, high: Version | None) -> bool:
    """low <= version < high; either bound may be None."""
    return (low is None or not less(version, low)) and (high is None or less(version, high))


def newest_known(library: str, low: Version | None, high: Version | None, accept=None) -> Version | None:
    """The newest release in KNOWN_RELEASES with low <= release < high (and `accept(release)`), if any."""
    for text in reversed(KNOWN_RELEASES.get(library, ())):
        release = parse_version(text)
        if in_range(release, low, high) and (accept is None or accept(release)):
            return release
    return None


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Evidence:
    """`calls(keyword=...)` in a script means `low <= library < high`."""

    library: str
    calls: tuple[str, ...]  # canonical call names, shell patterns ("trl.SFTTrainer", "trl.*.SFTTrainer")
    keywords: tuple[str, ...]  # any of these keywords; () = the call itself is the evidence
    low: Version | None  # inclusive
    high: Version | None  # exclusive
    why: str  # for messages and docs: what changed in which release

    def label(self, keyword: str | None) -> str:
        name = self.calls[0].rsplit(".", 1)[-1] if not self.calls[0].endswith(".from_pretrained") else (
            "from_pretrained")
        return f"{name}({keyword}=...)" if keyword else f"{name}(...)"

    def bound(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f">= {shown(self.low)}")
        if self.high is not None:
            parts.append(f"< {shown(self.high)}")
        return f"{self.library} {', '.join(parts)}"


def _classes(package: str, *names: str) -> tuple[str, ...]:
    """Both `from trl import SFTTrainer` and `from trl.trainer.sft_trainer import SFTTrainer`."""
    return tuple(p for name in names for p in (f"{package}.{name}", f"{package}.*.{name}"))


TRL_TRAINERS_WITH_PROCESSING_CLASS = ("SFTTrainer", "DPOTrainer", "RewardTrainer", "ORPOTrainer", "CPOTrainer",
                                      "KTOTrainer", "BCOTrainer", "GRPOTrainer", "PPOTrainer", "OnlineDPOTrainer")
TRAINING_ARGUMENTS = (
    *_classes("transformers", "TrainingArguments", "Seq2SeqTrainingArguments"),
    *_classes("trl", "SFTConfig", "DPOConfig", "RewardConfig", "ORPOConfig", "CPOConfig", "KTOConfig", "GRPOConfig"),
)
SFT_TRAINER_ONLY_KWARGS = ("max_seq_length", "dataset_text_field", "packing", "dataset_kwargs", "dataset_num_proc",
                           "neftune_noise_alpha", "dataset_batch_size", "num_of_sequences", "chars_per_token",
                           "infinite", "eval_packing", "model_init_kwargs")

EVIDENCE: tuple[Evidence, ...] = (
    # ---- trl
    Evidence("trl", _classes("trl", "SFTTrainer", "DPOTrainer"), ("tokenizer",), None, (0, 16),
             "renamed processing_class in trl 0.12; the tokenizer= alias was removed in trl 0.16"),
    Evidence("trl", _classes("trl", "SFTTrainer"), SFT_TRAINER_ONLY_KWARGS, None, (0, 13),
             "moved to SFTConfig in trl 0.9; SFTTrainer no longer takes it from trl 0.13"),
    Evidence("trl", _classes("trl", "DPOTrainer"), ("beta", "max_length", "max_prompt_length", "loss_type"),
             None, (0, 13), "moved to DPOConfig in trl 0.9; DPOTrainer no longer takes it from trl 0.13"),
    Evidence("trl", _classes("trl", *TRL_TRAINERS_WITH_PROCESSING_CLASS), ("processing_class",), (0, 12), None,
             "TRL trainers take processing_class= from trl 0.12"),
    Evidence("trl", _classes("trl", "SFTConfig"), (), (0, 9), None, "SFTConfig is new in trl 0.9"),
    Evidence("trl", _classes("trl", "SFTConfig"), ("max_seq_length",), None, (0, 20),
             "SFTConfig(max_seq_length=) was renamed max_length in trl 0.16 and removed in trl 0.20"),
    Evidence("trl", _classes("trl", "SFTConfig"), ("max_length",), (0, 16), None,
             "SFTConfig(max_length=) is new in trl 0.16"),
    # ---- transformers
    Evidence("transformers", TRAINING_ARGUMENTS, ("evaluation_strategy",), None, (4, 51),
             "evaluation_strategy= was renamed eval_strategy in transformers 4.41 and removed in 4.51"),
    Evidence("transformers", TRAINING_ARGUMENTS, ("eval_strategy",), (4, 41), None,
             "eval_strategy= is new in transformers 4.41"),
    Evidence("transformers", ("transformers.*.from_pretrained",), ("dtype",), (4, 56), None,
             "from_pretrained(dtype=) is read from transformers 4.56 (torch_dtype= before)"),
    Evidence("transformers", _classes("transformers", "Trainer", "Seq2SeqTrainer"), ("processing_class",),
             (4, 46), None, "Trainer(processing_class=) is new in transformers 4.46"),
    Evidence("transformers", _classes("transformers", "Trainer", "Seq2SeqTrainer"), ("tokenizer",), None, (5, 0),
             "Trainer(tokenizer=) was renamed processing_class in transformers 4.46 and removed in 5.0"),
    # ---- peft
    Evidence("peft", _classes("peft", "LoraConfig"), ("use_rslora",), (0, 8), None, "use_rslora is new in peft 0.8"),
    Evidence("peft", _classes("peft", "LoraConfig"), ("use_dora",), (0, 9), None, "use_dora is new in peft 0.9"),
    Evidence("peft", _classes("peft", "LoraConfig"), ("layer_replication",), (0, 10), None,
             "layer_replication is new in peft 0.10"),
    Evidence("peft", ("peft.get_peft_model", "peft.*.get_peft_model"), ("autocast_adapter_dtype",), (0, 12), None,
             "get_peft_model(autocast_adapter_dtype=) is new in peft 0.12"),
    Evidence("peft", _classes("peft", "LoraConfig"), ("lora_bias", "exclude_modules"), (0, 14), None,
             "new in peft 0.14"),
    Evidence("peft", _classes("peft", "LoraConfig"), ("trainable_token_indices",), (0, 15), None,
             "trainable_token_indices is new in peft 0.15"),
)


# ------------------------------------------------------------- from the facts
@dataclass(frozen=True)
class Clue:
    """One piece of evidence found in the file."""

    evidence: Evidence
    text: str  # "SFTTrainer(tokenizer=...) at line 40"


@dataclass(frozen=True)
class Implied:
    library: str
    low: Version | None  # inclusive
    high: Version | None  # exclusive
    clues: tuple[Clue, ...]  # the ones that set the bounds

    @property
    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.library} >= {shown(self.low)}, < {shown(self.high)}"
        if self.low is not None:
            return f"{self.library} >= {shown(self.low)}"
        return f"{self.library} < {shown(self.high)}"

    @property
    def evidence_text(self) -> str:
        return " and ".join(clue.text for clue in self.clues)

    def representative(self, accept=None) -> Version | None:
        """The newest known release in the range (that `accept` also takes: a loose pin's other bounds)."""
        return newest_known(self.library, self.low, self.high, accept)


def clues_in(facts) -> list[Clue]:
    """Every row of EVIDENCE that a call in the file matches, with where."""
    found: list[Clue] = []
    seen = set()
    for event in facts.events:
        name = event.name
        if not name or name.startswith("."):
            continue
        for row in EVIDENCE:
            if not any(fnmatchcase(name, pattern) for pattern in row.calls):
                continue
            keywords = [k for k in row.keywords if k in event.kwargs] if row.keywords else [None]
            for keyword in keywords:
                key = (id(event.node), row, keyword)
                if key in seen:
                    continue
                seen.add(key)
                found.append(Clue(row, f"{row.label(keyword)} at line {facts.line_of(_where(event.node, keyword))}"))
    return found


def _where(call, keyword: str | None):
    """The keyword argument itself (its line), else the call."""
    for arg in getattr(call, "args", ()):
        if keyword is not None and arg.keyword is not None and arg.keyword.value == keyword:
            return arg
    return call


def implied_from(clues: list[Clue]) -> dict[str, Implied]:
    """The tightest range per library; a library whose clues contradict each other gets none."""
    result: dict[str, Implied] = {}
    for library in sorted({clue.evidence.library for clue in clues}):
        mine = [c for c in clues if c.evidence.library == library]
        lows = [c for c in mine if c.evidence.low is not None]
        highs = [c for c in mine if c.evidence.high is not None]
        low_clue = None
        for clue in lows:
            if low_clue is None or less(low_clue.evidence.low, clue.evidence.low):
                low_clue = clue
        high_clue = None
        for clue in highs:
            if high_clue is None or less(clue.evidence.high, high_clue.evidence.high):
                high_clue = clue
        low = low_clue.evidence.low if low_clue else None
        high = high_clue.evidence.high if high_clue else None
        if low is not None and high is not None and not less(low, high):
            continue  # conflicting evidence (copied code, a compatibility branch): ignore it
        chosen = tuple(c for c in (high_clue, low_clue) if c is not None)
        result[library] = Implied(library, low, high, chosen)
    return result


def implied_versions(facts) -> dict[str, Implied]:
    """Library -> the version range this file's API use implies (computed once per file)."""
    derived = getattr(facts, "derived", None)
    if derived is None:
        return implied_from(clues_in(facts))
    return derived("implied_versions", lambda f: implied_from(clues_in(f)))
