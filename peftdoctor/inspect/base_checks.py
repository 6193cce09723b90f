"""Checks of an adapter against its local base model, from the base's headers only (PD613, PD614).

The base's module names come from the tensor names of its `model.safetensors`
header, or from the `weight_map` of `model.safetensors.index.json` (the shard
headers are not even opened for names). Nothing here loads a tensor or imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from peftdoctor import regular_file
from peftdoctor.finding import Finding, Severity
from peftdoctor.inspect.findings import finding
from peftdoctor.inspect.safetensors_header import read_header

PREFIX = "base_model.model."
# peft adds these to modules_to_save for the task types that have a head.
HEAD_TASKS = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"),
              "QUESTION_ANS": ("qa_outputs",)}
HEAD_CLASSES = {"ForSequenceClassification": "SEQ_CLS", "ForTokenClassification": "TOKEN_CLS",
                "ForQuestionAnswering": "QUESTION_ANS"}
# Output layers a base with tied embeddings does not store under their own name.
TIED_OUTPUTS = ("lm_head",)

# Bounds on matching a target_modules regex read from a downloaded file.
MAX_PATTERN_CHARS = 1000
MAX_NAME_CHARS = 256
MAX_UNBOUNDED_REPEATS = 2
# Most backtracking steps (regex_steps, summed over the names tried) one target_modules regex may cost: about
# 0.1 s of CPython's engine, counted, not timed, so the answer never depends on the machine's load.
REGEX_BUDGET_STEPS = 10**8


@dataclass(frozen=True)
class BaseIndex:
    """What the base's headers say: its tensor names, module names and config.json."""

    folder: Path
    keys: frozenset[str]
    modules: frozenset[str]
    config: dict


def read_base(base_dir: Path | None) -> BaseIndex | None:
    """The base's tensor and module names, or None when it has no readable safetensors weights."""
    if base_dir is None:
        return None
    try:
        return _read_base(str(Path(base_dir).resolve()))
    except OSError:
        return None


@lru_cache(maxsize=16)
def _read_base(folder: str) -> BaseIndex | None:
    base = Path(folder)
    keys = _index_keys(base / "model.safetensors.index.json")
    if keys is None and (base / "model.safetensors").is_file():
        header = read_header(base / "model.safetensors")
        keys = [t.name for t in header.tensors] if header.tensors else None
    if not keys:
        return None
    modules = set()
    for key in keys:
        parts = key.split(".")[:-1]  # the last part names the parameter or buffer
        for end in range(1, len(parts) + 1):
            modules.add(".".join(parts[:end]))
    try:
        config = regular_file.parse_json(regular_file.read_text(base / "config.json"))
    except (OSError, ValueError, UnicodeDecodeError):
        config = {}
    return BaseIndex(base, frozenset(keys), frozenset(modules), config if isinstance(config, dict) else {})


def _index_keys(path: Path) -> list[str] | None:
    try:
        index = regular_file.parse_json(regular_file.read_text(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        return None
    return [k for k in weight_map if isinstance(k, str)]


def ties_embeddings(config: dict) -> bool:
    """transformers' default is to tie; a text_config can say otherwise for multimodal models."""
    for table in (config, config.get("text_config")):
        if isinstance(table, dict) and table.get("tie_word_embeddings") is False:
            return False
    return True


def _adapter_modules(tensor_names) -> set[str]:
    """Every module path in the adapter's tensor names, without peft's prefix."""
    modules = set()
    for name in tensor_names:
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        parts = name.split(".")[:-1]
        for end in range(1, len(parts) + 1):
            modules.add(".".join(parts[:end]))
    return modules


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set)):
        return [v for v in value if isinstance(v, str)]
    return []


def _sre_parse():
    try:
        import re._parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover - older Pythons
        import sre_parse  # type: ignore[no-redef]
    return sre_parse


def regex_unbounded(pattern: str, max_unbounded: int = MAX_UNBOUNDED_REPEATS) -> str:
    """Why matching `pattern` could take unbounded time ('' when its cost is bounded)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"longer than {MAX_PATTERN_CHARS} characters"
    sre_parse = _sre_parse()
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return ""  # invalid: reported as such by the caller
    constants = sre_parse
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None)}
    count = 0

    def walk(items, inside: bool) -> str:
        nonlocal count
        for op, arg in items:
            if op in repeats:
                low, high, sub = arg
                repeated = high > 1
                if repeated and inside:
                    return "nested repetition"
                if high == constants.MAXREPEAT:
                    count += 1
                why = walk(sub, inside or repeated)
                if why:
                    return why
            elif op == constants.SUBPATTERN:
                why = walk(arg[-1], inside)
                if why:
                    return why
            elif op == constants.BRANCH:
                if inside:
                    return "alternation under repetition"
                for branch in arg[1]:
                    why = walk(branch, inside)
                    if why:
                        return why
            elif op in (constants.ASSERT, constants.ASSERT_NOT):
                why = walk(arg[1], inside)
                if why:
                    return why
            elif op == getattr(constants, "ATOMIC_GROUP", None):
                why = walk(arg, inside)
                if why:
                    return why
            elif op in (constants.GROUPREF, constants.GROUPREF_EXISTS):
                return "back-reference"
        return ""

    why = walk(parsed, False)
    if not why and count > max_unbounded:
        why = f"{count} unbounded repetitions"
    return why


def regex_steps(pattern: str, length: int, cap: int = REGEX_BUDGET_STEPS) -> int:
    """A bound on the backtracking steps of fullmatch(pattern) on a name of `length` characters (more than `cap`
    reads as cap + 1): the ways the engine can try to match (each choice of a repetition's count or a branch,
    multiplied along the pattern) times the pattern's length. Counted on the parsed pattern, never run."""
    sre_parse = _sre_parse()
    constants = sre_parse
    repeats = {constants.MAX_REPEAT, constants.MIN_REPEAT, getattr(constants, "POSSESSIVE_REPEAT", None)}
    over = cap + 1

    def ways(items) -> int:
        total = 1
        for op, arg in items:
            if op in repeats:
                low, high, sub = arg
                one = ways(sub)
                term, count = 1, 0
                for times in range(min(high, length + 1) + 1):  # each try consumes a character or stops
                    if times >= low:
                        count = min(count + term, over)
                    term = min(term * one, over)
                total *= count
            elif op == constants.SUBPATTERN:
                total *= ways(arg[-1])
            elif op == constants.BRANCH:
                total *= min(sum(ways(branch) for branch in arg[1]), over)
            elif op in (constants.ASSERT, constants.ASSERT_NOT):
                total *= ways(arg[1])
            elif op == getattr(constants, "ATOMIC_GROUP", None):
                total *= ways(arg)
            elif op in (constants.GROUPREF, constants.GROUPREF_EXISTS):
                return over  # a back-reference: no bound from the pattern's shape
            total = min(total, over)
        return total

    try:
        parsed = sre_parse.parse(pattern)
        return min(ways(parsed) * (len(pattern) + 1), over)
    except (re.error, RecursionError, OverflowError):
        return over


def regex_matches_any(pattern: str, names) -> bool | None:
    """Whether `pattern` full-matches one of `names` (as peft does); None when that cannot be told within
    REGEX_BUDGET_STEPS: the same answer for the same pattern and names, whatever the machine's load."""
    if regex_unbounded(pattern):
        return None
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    steps, by_length = 0, {}
    for name in sorted(names, key=len):
        if len(name) > MAX_NAME_CHARS:
            break
        if len(name) not in by_length:
            by_length[len(name)] = regex_steps(pattern, len(name))
        steps += by_length[len(name)]
        if steps > REGEX_BUDGET_STEPS:  # counted before the match is run: a costly one never runs
            return None
        if compiled.fullmatch(name):
            return True
    return False


def _suffix_match(entry: str, names) -> bool:
    """peft's rule for a list entry of target_modules: the whole name or its last dotted parts."""
    tail = "." + entry
    return any(name == entry or name.endswith(tail) for name in names)


def unmatched_modules_to_save(config: dict, names) -> list[str]:
    """modules_to_save entries no module name ends with (peft's plain endswith), peft's own head names aside."""
    auto = HEAD_TASKS.get(str(config.get("task_type") or "").upper(), ())
    entries = _strings(config.get("modules_to_save"))
    unmatched = [entry for entry in entries if entry not in auto and not any(name.endswith(entry) for name in names)]
    # ["classifier", "score"] as peft writes it for SEQ_CLS: one of the pair is enough.
    pair = HEAD_TASKS["SEQ_CLS"]
    if any(p in entries and p not in unmatched for p in pair):
        unmatched = [entry for entry in unmatched if entry not in pair]
    return unmatched


def known_names(adapter, base: BaseIndex) -> set[str]:
    names = set(base.modules) | _adapter_modules(t.name for t in adapter.tensors)
    if ties_embeddings(base.config):
        names.update(TIED_OUTPUTS)
    return names


def check_targets(adapter, base: BaseIndex | None) -> list[Finding]:
    """PD613: target_modules / modules_to_save entries that match no module of the base."""
    if base is None:
        return []
    config = adapter.config
    names = known_names(adapter, base)
    targets = config.get("target_modules")
    unmatched: list[str] = []
    missing_layers: list[int] = []
    total = 0
    invalid = ""
    if isinstance(targets, str):
        if targets.lower() != "all-linear":
            total = 1
            try:
                re.compile(targets)
            except (re.error, RecursionError, OverflowError) as exc:
                invalid = f"target_modules {targets!r} is not a valid regex ({exc}): peft cannot load it"
            else:
                if regex_matches_any(targets, names) is False:
                    unmatched.append(targets)
    else:
        entries = _strings(targets)
        total = len(entries)
        index_of = _layer_index(config)
        wanted = _layer_set(config.get("layers_to_transform"))
        candidates = names
        if index_of is not None and wanted:
            candidates = [n for n in names if index_of(n) in wanted]
        unmatched = sorted(entry for entry in entries if not _suffix_match(entry, candidates))
        if index_of is not None and wanted and len(unmatched) < total:
            present = {index_of(n) for n in names if any(n == e or n.endswith("." + e) for e in entries)}
            present.discard(None)
            missing_layers = sorted(wanted - present)
    exclude = config.get("exclude_modules")
    excluded = []
    if isinstance(exclude, str):
        if regex_matches_any(exclude, names) is False:
            excluded = [exclude]
    else:
        excluded = [entry for entry in _strings(exclude) if not _suffix_match(entry, names)]
    path = str(adapter.folder / "adapter_config.json")
    found = []
    if invalid:
        found.append(finding("PD613", invalid, path, hint="Fix the regex in adapter_config.json."))
    saved = unmatched_modules_to_save(config, names)
    if unmatched or saved or excluded or missing_layers:
        parts = []
        if unmatched:
            kind = "regex" if isinstance(targets, str) else "entries"
            parts.append(f"target_modules {kind} {unmatched}" if kind == "entries"
                         else f"target_modules regex {unmatched[0]!r}")
        if saved:
            parts.append(f"modules_to_save {saved}")
        if excluded:
            parts.append(f"exclude_modules {excluded}")
        if missing_layers:
            parts.append(f"layers_to_transform {missing_layers}")
        everything = bool(unmatched) and len(unmatched) == total
        base_name = base.folder.name
        what = " and ".join(parts)
        tail = ("none of the target modules exist there: this adapter was made for another model"
                if everything else "peft ignores them silently (targets and layers so named are not adapted, "
                "exclusions exclude nothing)")
        found.append(finding(
            "PD613", f"{what} match no module of the base '{base_name}': {tail}", path,
            severity=Severity.ERROR if everything else Severity.WARNING,
            hint="Compare the names with model.named_modules() of the base (list entries match the end of a "
                 "module name, a string is a full-match regex); remove or rename the entries.",
            target_modules=unmatched, modules_to_save=saved, exclude_modules=excluded, layers=missing_layers))
    return found


def _layer_set(value) -> set[int]:
    if type(value) is int:
        return {value}
    if isinstance(value, list):
        return {v for v in value if type(v) is int}
    return set()


def _layer_index(config: dict):
    """peft's rule for the layer index of a module name (layers_pattern), or None when it cannot be bounded."""
    patterns = config.get("layers_pattern")
    if not patterns:
        regexes = [r".*?\.[^.]*\.(?P<idx>\d+)\."]
    else:
        # the pattern comes from the file: no repetition of its own inside peft's template
        if any(regex_unbounded(p, max_unbounded=0) for p in _strings(patterns)):
            return None
        regexes = [rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\." for p in _strings(patterns)]
    compiled = []
    for regex in regexes:
        try:
            compiled.append(re.compile(regex))
        except (re.error, RecursionError, OverflowError):
            return None

    def index_of(name: str) -> int | None:
        if len(name) > MAX_NAME_CHARS:
            return None
        for regex in compiled:
            match = regex.match(name)
            if match:
                return int(match["idx"])
        return None

    return index_of


def head_task(config: dict) -> tuple[str, str] | None:
    """(task, class name) when task_type is null but auto_mapping names a task-head class."""
    if config.get("task_type"):
        return None
    auto = config.get("auto_mapping")
    cls = auto.get("base_model_class") if isinstance(auto, dict) else None
    if not isinstance(cls, str):
        return None
    for suffix, task in HEAD_CLASSES.items():
        if cls.endswith(suffix):
            return task, cls
    return None


def _has_module(modules, wanted: str) -> bool:
    return any(m == wanted or m.endswith("." + wanted) for m in modules)


def check_task_head(adapter, base: BaseIndex | None) -> list[Finding]:
    """PD614: a task-head model wrapped without task_type: the head is not trained nor saved."""
    found = head_task(adapter.config)
    if found is None:
        return []
    task, cls = found
    heads = HEAD_TASKS[task]
    saved = _adapter_modules(t.name for t in adapter.tensors)
    if any(_has_module(saved, head) for head in heads):
        return []
    heads_text = " / ".join(heads)
    intro = (f"task_type is null but the base is a {cls}, and the file has no head weights ({heads_text}): "
             "peft froze the head, so it was never trained")
    hint = (f"Pass task_type=\"{task}\" to the config (peft then trains and saves the head), or list the head in "
            "modules_to_save; then train again.")
    path = str(adapter.weights)
    if base is None:
        return [finding("PD614", f"{intro}; the base is not local, so whether it has trained head weights is "
                                 "unknown", path, hint=hint, severity=Severity.WARNING)]
    if any(_has_module(base.modules, head) for head in heads):
        return [finding("PD614", f"{intro}; the base '{base.folder.name}' has head weights, which are used "
                                 "unchanged", path, hint=hint, severity=Severity.WARNING)]
    return [finding("PD614", f"{intro}; the base '{base.folder.name}' has no head weights either: the head is "
                             "random on every load", path, hint=hint, severity=Severity.ERROR)]


@lru_cache(maxsize=16)
def _base_shapes(folder: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every base tensor, from model.safetensors or the headers of its shards."""
    base = Path(folder)
    files = []
    try:
        index = regular_file.parse_json(regular_file.read_text(base / "model.safetensors.index.json"))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            files = sorted({f for f in weight_map.values() if isinstance(f, str) and "/" not in f and f != ".."})
    except (OSError, ValueError, UnicodeDecodeError):
        files = ["model.safetensors"]
    shapes = {}
    for name in files:
        if (base / name).is_file():
            for tensor in read_header(base / name).tensors:
                shapes[tensor.name] = (tensor.dtype, tensor.shape)
    return shapes


def base_shapes(base: BaseIndex) -> dict[str, tuple[str, tuple[int, ...]]]:
    return _base_shapes(str(base.folder))


_LORA_WEIGHT = re.compile(r"^(?P<module>.+)\.(?P<role>lora_A|lora_B)\.weight$")
FLOATS = {"F16", "BF16", "F32", "F64"}


def _base_weight(shapes, module: str):
    """The base's (dtype, shape) of `module`.weight, allowing one leading name part of difference."""
    candidates = [module + ".weight"]
    head, _, rest = module.partition(".")
    if rest:
        candidates.append(rest + ".weight")
    for candidate in candidates:
        if candidate in shapes:
            return candidate, shapes[candidate]
    return None, None


def check_base_shapes(adapter, base: BaseIndex | None) -> list[Finding]:
    """PD616: LoRA A/B shapes that do not fit the base weight they adapt (another size of the model)."""
    if base is None or str(adapter.config.get("peft_type", "")).upper() != "LORA":
        return []
    fan_in_fan_out = adapter.config.get("fan_in_fan_out") is True
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor in adapter.tensors:
        name = tensor.name[len(PREFIX):] if tensor.name.startswith(PREFIX) else tensor.name
        match = _LORA_WEIGHT.match(name)
        if match and len(tensor.shape) == 2:
            modules.setdefault(match["module"], {})[match["role"]] = tensor.shape
    if not modules:
        return []
    shapes = base_shapes(base)
    bad = []
    for module, parts in sorted(modules.items()):
        a, b = parts.get("lora_A"), parts.get("lora_B")
        key, entry = _base_weight(shapes, module)
        if a is None or b is None or entry is None:
            continue
        dtype, weight = entry
        if dtype not in FLOATS or len(weight) != 2:
            continue  # quantized or not a linear layer
        out_features, in_features = (weight[1], weight[0]) if fan_in_fan_out else weight
        if a[1] != in_features or b[0] != out_features:
            bad.append((module, a[1], b[0], key, in_features, out_features))
    if not bad:
        return []
    module, a_in, b_out, key, in_features, out_features = bad[0]
    more = f" and {len(bad) - 1} more modules" if len(bad) > 1 else ""
    return [finding(
        "PD616", f"{len(bad)} of {len(modules)} LoRA modules do not fit the base '{base.folder.name}': "
        f"'{module}' maps {a_in} -> {b_out} features but the base's '{key}' maps {in_features} -> "
        f"{out_features}{more}; loading fails with a size mismatch", str(adapter.weights),
        hint="The adapter was trained on another size or variant of the model: load it on the base it names "
             "in its training run (check base_model_name_or_path).",
        modules=[m[0] for m in bad])]
