"""Exceptions of the runtime checks (light: no torch here)."""


class DeepError(Exception):
    """A deep check could not start; the message is one line naming the input."""


class RuntimeMissing(DeepError):
    """torch, transformers or peft is not installed."""

    def __init__(self, missing: str):
        super().__init__(
            f"deep checks need {missing}; install them with: pip install \"peftdoctor[runtime]\""
        )


class BaseNotFound(DeepError):
    """The base model is neither a local folder nor in the local HF cache."""


class UnhealthyModel(AssertionError):
    """Raised by assert_healthy when diagnose finds errors."""

    def __init__(self, report: str, findings):
        super().__init__(report)
        self.findings = findings


class NotLearning(AssertionError):
    """Raised by PeftDoctorCallback / watch() when the adapter does not learn; `findings` holds the details."""

    def __init__(self, report: str, findings):
        super().__init__(report)
        self.findings = findings
