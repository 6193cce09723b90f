"""argparse options: what `args.x` holds on a run that passes no flags (the option's default, as argparse
computes it), read where a library call is given it."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from peftdoctor.facts import build_facts
from peftdoctor.facts.values import MISSING, const_value


def passed_dropout(source: str):
    """The lora_dropout value LoraConfig(...) is given at its first call, or MISSING when not literal."""
    facts = build_facts(cst.parse_module(textwrap.dedent(source)), "t.py")
    event = facts.calls("peft.LoraConfig")[0]
    return const_value(event.kwargs["lora_dropout"], MISSING)


HEAD = """
import argparse
from peft import LoraConfig
"""


@pytest.mark.parametrize("declare, expected", [
    ('p.add_argument("--lora_dropout", type=float, default=0.05)', 0.05),
    ('p.add_argument("--lora-dropout", type=float, default="0.1")', 0.1),  # type= applied to a string default
    ('p.add_argument("-d", "--lora_dropout", default=0)', 0),
    ('p.add_argument("--dropout", dest="lora_dropout", default=0.2)', 0.2),
    ('p.add_argument("--lora_dropout", type=float)', None),
    ('g = p.add_argument_group("lora")\ng.add_argument("--lora_dropout", default=0.3)', 0.3),
    ('p.add_argument("--lora_dropout", default=0.0)\np.set_defaults(lora_dropout=0.4)', 0.4),
])
def test_an_option_holds_its_default(declare, expected):
    source = HEAD + "p = argparse.ArgumentParser()\n" + declare + """
args = p.parse_args()
LoraConfig(r=8, lora_dropout=args.lora_dropout)
"""
    assert passed_dropout(source) == expected


@pytest.mark.parametrize("declare", [
    'p.add_argument("lora_dropout", type=float)',  # a positional: always given
    'p.add_argument("--lora_dropout", type=float, required=True)',
    'p.add_argument("--lora_dropout", type=float, default="high")',  # argparse would fail on it
    'p.add_argument("--lora_dropout", action="store_true")',  # switches: see test_a_switch_is_not_known
    'p.add_argument("--lora_dropout", type=bool, default=True)',
])
def test_an_option_without_a_default_run_is_not_known(declare):
    source = HEAD + "p = argparse.ArgumentParser()\n" + declare + """
args = p.parse_args()
LoraConfig(r=8, lora_dropout=args.lora_dropout)
"""
    assert passed_dropout(source) is MISSING


def test_the_namespace_flows_through_helpers_and_parse_known_args():
    source = HEAD + """
def parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lora_dropout", type=float, default=0.05)
    args, _ = parser.parse_known_args()
    return args


def build(args):
    return LoraConfig(r=8, lora_dropout=args.lora_dropout)


build(parse())
"""
    assert passed_dropout(source) == 0.05


def test_an_assignment_after_parsing_wins():
    source = HEAD + """
p = argparse.ArgumentParser()
p.add_argument("--lora_dropout", type=float, default=0.05)
args = p.parse_args()
args.lora_dropout = 0.0
LoraConfig(r=8, lora_dropout=args.lora_dropout)
"""
    assert passed_dropout(source) == 0.0


@pytest.mark.parametrize("test", ["args.warmup_only", "not args.warmup_only"])
def test_a_branch_on_an_option_keeps_both_sides(test):
    """The command line may set the option: `if args.warmup_only:` is not pruned by its default 0, nor is
    its negation."""
    source = HEAD + f"""
p = argparse.ArgumentParser()
p.add_argument("--warmup_only", type=int, default=0)
args = p.parse_args()
rate = 0.1
if {test}:
    rate = 0.0
LoraConfig(r=8, lora_dropout=rate)
"""
    facts = build_facts(cst.parse_module(textwrap.dedent(source)), "t.py")
    rates = {v.get("value") for v in facts.calls("peft.LoraConfig")[0].kwargs["lora_dropout"]}
    assert rates == {0.0, 0.1}


def test_a_switch_is_not_known():
    """`is_trainable=args.do_train` with training under `if args.do_train:`: the default (False) would
    say "frozen" while the branch (not pruned) says "trained", two different runs."""
    source = HEAD + """
from peft import PeftModel
p = argparse.ArgumentParser()
p.add_argument("--do_train", action="store_true")
args = p.parse_args()
PeftModel.from_pretrained(None, "adapter", is_trainable=args.do_train)
"""
    facts = build_facts(cst.parse_module(textwrap.dedent(source)), "t.py")
    flag = facts.calls("peft.PeftModel.from_pretrained")[0].kwargs["is_trainable"]
    assert const_value(flag, MISSING) is MISSING
