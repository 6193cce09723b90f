"""Typed settings (pydantic models, dataclasses): a field holds its declared default unless set, an annotated
field holds an instance of its class, and a dump of the instance spreads the fields into a library call."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from peftdoctor.facts import build_facts

SETTINGS = """
from dataclasses import asdict, dataclass, field
from typing import Optional
from pydantic import BaseModel, Field
from transformers import BitsAndBytesConfig


class Quant(BaseModel):
    load_in_8bit: Optional[bool] = Field(False, description="8-bit")
    load_in_4bit: Optional[bool] = Field({four})


@dataclass
class QuantOptions:
    load_in_4bit: bool = field(default={four})


class ModelSettings(BaseModel):
    bnb: Optional[Quant] = Field(None)


class Settings(BaseModel):
    model: ModelSettings
"""


def quantization_of(body: str, four: str = "True") -> list:
    source = textwrap.dedent(SETTINGS.format(four=four)) + textwrap.dedent(body)
    facts = build_facts(cst.parse_module(source), "t.py")
    return [v.get("quantization") for e in facts.calls("transformers.BitsAndBytesConfig") for v in e.result]


@pytest.mark.parametrize("body", [
    "def f(s: Settings):\n    return BitsAndBytesConfig(**s.model.bnb.model_dump())\n",
    "def f(s: Settings):\n    return BitsAndBytesConfig(**s.model.bnb.dict())\n",
    "def f(q: QuantOptions):\n    return BitsAndBytesConfig(**asdict(q))\n",
    "q = QuantOptions()\nBitsAndBytesConfig(**vars(q))\n",
    "q = Quant(load_in_8bit=False)\nBitsAndBytesConfig(load_in_4bit=q.load_in_4bit)\n",
])
def test_a_declared_default_reaches_the_library_call(body):
    assert quantization_of(body) == ["4-bit bitsandbytes"]


@pytest.mark.parametrize("body", [
    "q = Quant(load_in_4bit=False)\nBitsAndBytesConfig(**q.model_dump())\n",
    "q = QuantOptions(False)\nBitsAndBytesConfig(**asdict(q))\n",
    "q = Quant()\nq.load_in_4bit = False\nBitsAndBytesConfig(**q.model_dump())\n",
    "def f(q: Quant):\n    return BitsAndBytesConfig(**q.model_dump(), load_in_4bit=False)\n",
])
def test_a_field_set_where_the_settings_are_made_wins(body):
    assert quantization_of(body) in ([""], [None])  # None: a key the dump may hold is not known here


def test_a_default_that_quantizes_nothing():
    assert quantization_of("def f(s: Settings):\n    return BitsAndBytesConfig(**s.model.bnb.model_dump())\n",
                           four="False") == [None]  # no path quantizes; a caller may pass other settings


def test_settings_of_unknown_type_stay_unknown():
    assert quantization_of("def f(s):\n    return BitsAndBytesConfig(**s.model.bnb.model_dump())\n") == [None]


@pytest.mark.parametrize("factory, expected", [
    ("lambda: ['q_proj', 'embed_tokens']", ["q_proj", "embed_tokens"]),  # the usual default of a list field
    ("make_targets", ["q_proj"]),
    ("lambda targets=('q_proj',): list(targets)", None),  # a lambda with parameters is not read
])
def test_a_list_field_default_comes_from_its_factory(factory, expected):
    source = textwrap.dedent(f"""
        from dataclasses import dataclass, field
        from peft import LoraConfig

        def make_targets():
            return ["q_proj"]

        @dataclass
        class Adapter:
            targets: list = field(default_factory={factory})

        def f(a: Adapter):
            return LoraConfig(target_modules=a.targets)
    """)
    facts = build_facts(cst.parse_module(source), "t.py")
    found = [v.get("value") for e in facts.calls("peft.LoraConfig") for v in e.kwargs["target_modules"]
             if v.kind == "const"]
    assert found == ([expected] if expected is not None else [])
