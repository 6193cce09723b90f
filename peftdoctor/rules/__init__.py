"""Static rules. Importing this package registers every rule in it."""

from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register

register(Rule("PD000", "syntax-error", "A script does not parse; nothing else in it was checked.",
              Severity.ERROR, kind="parse"))
register(Rule("PD002", "internal-error", "peftdoctor failed on this file; the other files were still checked.",
              Severity.WARNING, kind="meta"))
register(Rule("PD001", "unused-suppression", "A noqa / peftdoctor: ignore comment suppresses nothing.",
              Severity.WARNING, kind="meta"))

from peftdoctor.rules import (  # noqa: E402,F401  (import registers the rules)
    pd101_wrapped_twice,
    pd102_peft_on_peft,
    pd103_frozen_resume,
    pd104_base_reused,
    pd105_adapter_not_active,
    pd201_fp16_trainables,
    pd202_fp16_adam_eps,
    pd301_head_not_saved,
    pd302_new_tokens,
    pd304_torch_save_model,
    pd305_merge_result_discarded,
    pd306_merged_without_tokenizer,
    pd401_gc_without_input_grads,
    pd402_kbit_without_prepare,
    pd403_optimizer_before_wrap,
    pd404_eos_never_learned,
    pd405_dropout_at_inference,
    pd406_padding_side,
    pd407_task_type_mismatch,
    pd501_merge_on_quantized,
    pd502_merge_into_tied_embeddings,
    pd503_quantization_unused,
)
