"""The facts layer: names through imports, values through flow, dtypes in every spelling."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from peftdoctor.facts import build_facts
from peftdoctor.facts.library import dtype_of
from peftdoctor.facts.names import canonical


def facts_of(source: str):
    return build_facts(cst.parse_module(textwrap.dedent(source)), "t.py")


def kinds_of_first_arg(source: str, call: str) -> list[set[str]]:
    facts = facts_of(source)
    return [{v.kind for v in (e.arg(0, "model") or ())} for e in facts.calls(call)]


@pytest.mark.parametrize("imports, wrap, load", [
    ("import peft", "peft.get_peft_model", "peft.PeftModel.from_pretrained"),
    ("import peft as p", "p.get_peft_model", "p.PeftModel.from_pretrained"),
    ("from peft import get_peft_model as gpm, PeftModel as PM", "gpm", "PM.from_pretrained"),
    ("from peft.mapping import get_peft_model\nfrom peft.peft_model import PeftModel", "get_peft_model",
     "PeftModel.from_pretrained"),
])
def test_every_import_form_resolves_to_one_name(imports, wrap, load):
    source = f"{imports}\nimport transformers\nm = transformers.AutoModelForCausalLM.from_pretrained('x')\n" \
             f"m = {wrap}(m, None)\nm = {load}(m, 'a')\n"
    assert kinds_of_first_arg(source, "peft.PeftModel.from_pretrained") == [{"peft_model"}]
    assert kinds_of_first_arg(source, "peft.get_peft_model") == [{"base_model"}]


def test_canonical_names():
    assert canonical("peft.tuners.lora.config.LoraConfig") == "peft.LoraConfig"
    assert canonical("peft.utils.other.prepare_model_for_kbit_training") == "peft.prepare_model_for_kbit_training"
    assert canonical("torch.cuda.amp.GradScaler") == "torch.cuda.amp.GradScaler"
    assert canonical("unsloth.FastLanguageModel") == "unsloth.FastLanguageModel"


@pytest.mark.parametrize("spelling, expected", [
    ("torch_dtype=torch.float16", "float16"),
    ("dtype=torch.float16", "float16"),
    ("torch_dtype=torch.half", "float16"),
    ("dtype='float16'", "float16"),
    ("torch_dtype='bfloat16'", "bfloat16"),
    ("dtype='auto'", "auto"),
    ("torch_dtype=getattr(torch, args.dtype)", None),
    ("torch_dtype=torch.float16 if fp16 else torch.float32", None),
])
def test_model_dtype_spellings(spelling, expected):
    facts = facts_of(f"import torch\nfrom transformers import AutoModel\nm = AutoModel.from_pretrained('x', {spelling})\n")
    model = facts.calls("transformers.AutoModel.from_pretrained")[0].result[0]
    assert model.get("dtype") == expected


def test_half_and_to_change_dtype_in_place():
    facts = facts_of("""
        import torch
        from peft import get_peft_model
        from transformers import AutoModel
        a = AutoModel.from_pretrained('x')
        a.half()
        b = AutoModel.from_pretrained('x').to(torch.float16)
        get_peft_model(a, None)
        get_peft_model(b, None)
    """)
    assert [e.arg(0)[0].get("dtype") for e in facts.calls("peft.get_peft_model")] == ["float16", "float16"]


def test_if_else_gives_one_value_per_path_and_early_return_prunes():
    source = """
        from peft import PeftModel, get_peft_model
        from transformers import AutoModel
        def main(resume):
            model = AutoModel.from_pretrained('x')
            if resume:
                model = PeftModel.from_pretrained(model, resume)
            else:
                model = get_peft_model(model, None)
            use(model)
        def other(eval_only):
            model = AutoModel.from_pretrained('x')
            if eval_only:
                model = PeftModel.from_pretrained(model, 'a')
                return model
            use(model)
    """
    facts = facts_of(source)
    uses = [sorted(v.kind for v in e.arg(0)) for e in facts.calls("use")]
    assert uses == [["peft_model", "peft_model"], ["base_model"]]


def test_helper_functions_and_methods_return_what_they_build():
    source = """
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM
        def build():
            base = AutoModelForCausalLM.from_pretrained('x')
            return get_peft_model(base, None)
        class Runner:
            def make(self):
                return build()
            def run(self):
                self.model = self.make()
                use(self.model)
    """
    facts = facts_of(source)
    assert [{v.kind for v in e.arg(0)} for e in facts.calls("use")] == [{"peft_model"}]


def test_isinstance_narrows_a_branch():
    source = """
        from peft import PeftModel, get_peft_model
        def f(model):
            if cond:
                model = PeftModel.from_pretrained(model, 'a')
            if not isinstance(model, PeftModel):
                use(model)
    """
    facts = facts_of(source)
    assert [{v.kind for v in e.arg(0)} for e in facts.calls("use")] == [{"param"}]


def test_try_except_merges_both_paths():
    source = """
        from peft import PeftModel, get_peft_model
        from transformers import AutoModel
        model = AutoModel.from_pretrained('x')
        try:
            model = PeftModel.from_pretrained(model, 'a')
        except OSError:
            model = get_peft_model(model, None)
        use(model)
    """
    facts = facts_of(source)
    assert [sorted(v.get("via") for v in e.arg(0)) for e in facts.calls("use")] == [
        ["from_pretrained", "get_peft_model"]
    ]


def test_dtype_of_rejects_non_torch_refs():
    facts = facts_of("import numpy as np\nx = np.float16\n")
    assert dtype_of(facts.interpreter.module_env.lookup("x")) is None


def test_call_positions_from_ast_match_libcst_positions():
    """The fast positions agree with libcst's PositionProvider on every call of every fixture."""
    from pathlib import Path

    from peftdoctor.facts.positions import call_positions, provider_positions

    root = Path(__file__).resolve().parent.parent / "fixtures"
    extra = "x = f'{g(1)}' + (h(2))\n@deco(3)\ndef k():\n    return 'é' + m(4)\n"
    sources = [p.read_text(encoding="utf-8") for p in root.rglob("*.py") if p.parent.name != "PD000"] + [extra]
    checked = 0
    for source in sources:
        module = cst.parse_module(source)
        fast = call_positions(module, source)
        assert fast is not None
        exact = provider_positions(module)
        for key, position in fast.items():
            assert position == exact[key], (position, exact[key])
            checked += 1
    assert checked > 500


def test_a_helper_returning_its_parameter_gives_back_the_argument():
    source = """
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM
        def prepare(model, flag=True):
            model.gradient_checkpointing_enable()
            return model
        def wrap(model, config):
            return get_peft_model(model, config)
        base = AutoModelForCausalLM.from_pretrained('x')
        use(prepare(base))
        use(wrap(model=base, config=None))
    """
    facts = facts_of(source)
    assert [[v.kind for v in e.arg(0)] for e in facts.calls("use")] == [["base_model"], ["peft_model"]]
