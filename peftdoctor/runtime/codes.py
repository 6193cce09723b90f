"""Registry entries of the PD7xx deep checks (importing this stays light)."""

from peftdoctor.finding import Severity
from peftdoctor.registry import Rule, register

register(Rule("PD701", "adapter-keys-mismatch",
              "Adapter keys missing or unexpected when loaded onto the base, or targets that match nothing.",
              Severity.ERROR, kind="deep"))
register(Rule("PD702", "merge-mismatch",
              "Merged and unmerged adapter give different outputs, or unmerge does not restore the base.",
              Severity.ERROR, kind="deep"))
register(Rule("PD703", "no-op-adapter",
              "The adapter does not change the model's outputs (untrained, double-wrapped or not loaded).",
              Severity.ERROR, kind="deep"))
register(Rule("PD704", "trainable-dtype",
              "Trainable parameters in float16 (AMP cannot unscale them), bfloat16, or none at all.",
              Severity.ERROR, kind="deep"))
register(Rule("PD705", "embedding-resize",
              "Embedding rows of base, adapter and tokenizer disagree: rows lost or random after loading.",
              Severity.ERROR, kind="deep"))
register(Rule("PD706", "nested-adapter",
              "A PeftModel inside a PeftModel, or adapter layers inside adapter layers.",
              Severity.ERROR, kind="deep"))
register(Rule("PD707", "checkpointing-without-input-grads",
              "Reentrant gradient checkpointing on a frozen base with no input gradients: adapters get no grads.",
              Severity.ERROR, kind="deep"))
register(Rule("PD708", "adapter-inactive",
              "The adapter is disabled, merged or absent in the model about to be trained.",
              Severity.ERROR, kind="deep"))
register(Rule("PD709", "adapter-not-learning",
              "Trainable adapter tensors got no finite non-zero gradient or did not change: after the first "
              "optimizer step, or between two checkpoints of one run.",
              Severity.ERROR, kind="deep"))
