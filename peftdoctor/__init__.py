"""peftdoctor: find silent PEFT fine-tuning mistakes in scripts and checkpoints.

The top-level import stays light: torch, transformers and peft are only
imported by the runtime API (`diagnose`, `assert_healthy`) when it is called.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "Finding", "Severity", "diagnose", "assert_healthy"]

from peftdoctor.finding import Finding, Severity


def diagnose(model, *, tokenizer=None, training_args=None):
    """Check a live (Peft)model before training; see peftdoctor.runtime.diagnose."""
    from peftdoctor.runtime.diagnose import diagnose as _diagnose

    return _diagnose(model, tokenizer=tokenizer, training_args=training_args)


def assert_healthy(model, *, tokenizer=None, training_args=None):
    """Raise with a readable report when `diagnose` finds errors."""
    from peftdoctor.runtime.diagnose import assert_healthy as _assert_healthy

    return _assert_healthy(model, tokenizer=tokenizer, training_args=training_args)
