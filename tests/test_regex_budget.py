"""PD613's regex work is counted, not timed: the same answer whatever the machine's load, and a hostile
target_modules regex from a downloaded adapter_config.json is refused before it runs."""

from __future__ import annotations

import subprocess
import sys
import time

from peftdoctor.inspect.base_checks import REGEX_BUDGET_STEPS, regex_matches_any, regex_steps, regex_unbounded
from peftdoctor.inspect.pattern_keys import UNKNOWN, PatternKeys

# A large base's module names: 80 layers of a llama-like model with 8 experts each.
NAMES = sorted({f"model.layers.{layer}.{part}" for layer in range(80) for part in (
    "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp",
    *(f"mlp.experts.{e}.{p}" for e in range(8) for p in ("gate_proj", "up_proj", "down_proj")))})
LONGEST = max(NAMES, key=len)


def test_the_answer_does_not_depend_on_the_clock(monkeypatch):
    """A clock that jumps 10 s on every reading (a machine so loaded that each match takes that long): a wall
    clock budget would give up (None); the count gives the answer a quiet machine gets."""
    quiet = [regex_matches_any(p, NAMES) for p in (r".*\.qkv_proj", r".*experts\.7\.down_proj", ".*")]
    assert quiet == [False, True, True] and len(NAMES) > 2000
    now = [0.0]

    def slow_clock():
        now[0] += 10.0
        return now[0]

    for name in ("monotonic", "perf_counter", "time", "process_time"):
        monkeypatch.setattr(time, name, slow_clock)
    assert [regex_matches_any(p, NAMES) for p in (r".*\.qkv_proj", r".*experts\.7\.down_proj", ".*")] == quiet
    assert regex_matches_any(".*" + LONGEST.replace(".", r"\."), NAMES) is True  # the last name tried


def test_the_count_bounds_the_total_work():
    """Each name adds the bound of its length; past the budget the answer is None, before any more matching."""
    pattern = ".*a.*b"  # two unbounded repetitions: the most regex_unbounded allows
    per_name = regex_steps(pattern, 256)
    assert 0 < per_name <= REGEX_BUDGET_STEPS and regex_unbounded(pattern) == ""
    names = ["a" * 255 + "!"] * (REGEX_BUDGET_STEPS // per_name)
    assert regex_matches_any(pattern, names) is False
    assert regex_matches_any(pattern, names + names[:1]) is None


HOSTILE = ["(a|aa)" * 40 + "c", "a{0,30}" * 10 + "c", "(a?a?)*c"]


def test_hostile_patterns_the_shape_check_lets_through_are_refused_unrun():
    """Branches in sequence, bounded repetitions in sequence, optional parts under a repetition: no nested or
    unbounded repetition for regex_unbounded to see, yet fullmatch backtracks exponentially (`(a?a?)*c` takes
    seconds on 20 a's, hours on 40). They are never run: their count is over the budget for the shortest name."""
    for pattern in HOSTILE:
        assert regex_unbounded(pattern) == "", pattern
        assert regex_steps(pattern, 1) > REGEX_BUDGET_STEPS or regex_steps(pattern, 40) > REGEX_BUDGET_STEPS
    # In a child process with a time limit: a pattern that did run would hang the test, not fail it.
    code = ("from peftdoctor.inspect.base_checks import regex_matches_any\n"
            f"names = ['a' * n + 'b' for n in range(1, 200)]\n"
            f"print([regex_matches_any(p, names) for p in {HOSTILE!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[None, None, None]"


def test_a_hostile_rank_pattern_key_is_unknown_and_never_tried():
    """The same shapes as rank_pattern keys (peft tries each on every module name): refused, not run."""
    code = ("from peftdoctor.inspect.pattern_keys import PatternKeys\n"
            f"keys = PatternKeys(dict.fromkeys({HOSTILE!r}, 4), ['a' * 40 + 'b'])\n"
            "print(keys.key_for('a' * 40 + 'b'), keys.unmatched())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "UNKNOWN []"
    real = PatternKeys({r"layers\.\d+\.self_attn\.q_proj": 4, r"(q|v)_proj": 8}, ["model.layers.3.self_attn.q_proj"])
    assert real.key_for("model.layers.3.self_attn.q_proj") == r"layers\.\d+\.self_attn\.q_proj"
    assert PatternKeys({"(a|aa)" * 40: 4}, []).key_for("model.q_proj") is UNKNOWN
