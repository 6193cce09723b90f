"""peftdoctor: find silent PEFT fine-tuning mistakes in scripts and checkpoints.

The top-level import stays light: torch, transformers and peft are only
imported by the runtime API (`diagnose`, `assert_healthy`, `watch`,
`PeftDoctorCallback`) when it is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "Finding", "Severity", "diagnose", "assert_healthy", "watch", "PeftDoctorCallback",
           "NotLearning"]

from peftdoctor.finding import Finding, Severity
from peftdoctor.runtime.errors import NotLearning


def diagnose(model, *, tokenizer=None, training_args=None):
    """Check a live (Peft)model before training; see peftdoctor.runtime.diagnose."""
    from peftdoctor.runtime.diagnose import diagnose as _diagnose

    return _diagnose(model, tokenizer=tokenizer, training_args=training_args)


def assert_healthy(model, *, tokenizer=None, training_args=None):
    """Raise with a readable report when `diagnose` finds errors."""
    from peftdoctor.runtime.diagnose import assert_healthy as _assert_healthy

    return _assert_healthy(model, tokenizer=tokenizer, training_args=training_args)


def watch(model, optimizer, *, check_steps=1, on_failure="raise"):
    """Prove in a hand-written loop that the adapter learns; see peftdoctor.runtime.watch."""
    from peftdoctor.runtime.watch import watch as _watch

    return _watch(model, optimizer, check_steps=check_steps, on_failure=on_failure)


def __getattr__(name):
    """`PeftDoctorCallback` subclasses transformers' TrainerCallback, so it is imported on first use."""
    if name == "PeftDoctorCallback":
        from peftdoctor.runtime.callback import PeftDoctorCallback

        return PeftDoctorCallback
    raise AttributeError(f"module 'peftdoctor' has no attribute {name!r}")
