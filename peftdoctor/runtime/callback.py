"""`PeftDoctorCallback`: diagnose() at train begin, proof of learning after the first optimizer step(s).

diagnose()'s findings are reported together with the step check, so one report carries the prediction
and the measured evidence (the tensors that did not learn); without trainable tensors they come at once.

After the check steps every hook returns at once, so the run pays nothing more. TRL's trainers subclass
`Trainer`, so this serves them too. Importing this module imports transformers.
"""

from __future__ import annotations

import os

from transformers import TrainerCallback

from peftdoctor.runtime.diagnose import diagnose
from peftdoctor.runtime.learning import FAILURES, LearningProbe, handle, inactive_trainable


def _deepspeed(args) -> bool:
    """DeepSpeed applies the step inside backward, so gradients are gone before the optimizer hook."""
    return bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "") == "true"


class PeftDoctorCallback(TrainerCallback):
    """Stops a Trainer run whose adapter does not learn, at its first optimizer step.

    on_failure: "raise" (NotLearning), "stop" (control.should_training_stop and a logged report) or "warn".
    `findings` holds what was found (errors and warnings; no infos).
    """

    def __init__(self, *, check_steps: int = 1, on_failure: str = "raise"):
        if on_failure not in FAILURES:
            raise ValueError(f"on_failure must be one of {FAILURES}, got {on_failure!r}")
        if check_steps < 1:
            raise ValueError(f"check_steps must be at least 1, got {check_steps}")
        self.check_steps, self.on_failure = check_steps, on_failure
        self.findings: list = []
        self.probe: LearningProbe | None = None
        self.pending: list = []

    def _handle(self, found, control, when: str):
        self.findings += [f for f in found if f.severity.value != "info"]
        if handle(found, self.on_failure, when):
            control.should_training_stop = True
        return control

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            return control
        self.probe = LearningProbe(model, check_steps=self.check_steps, grads_readable=not _deepspeed(args))
        self.pending = diagnose(model, training_args=args) + inactive_trainable(model)
        if self.probe.done:  # nothing trainable to watch: report now
            self.probe = None
            return self._handle(self.pending, control, "found problems before the first step")
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        if self.probe is not None and not self.probe.done:
            self.probe.snapshot()
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.probe is not None and not self.probe.done:
            self.probe.read_grads()
        return control

    def on_optimizer_step(self, args, state, control, **kwargs):
        probe = self.probe
        if probe is None or not probe.after_step():
            return control
        self.probe = None  # drop the copies: nothing more to compare
        return self._handle(self.pending + probe.findings(), control, f"checked {probe.steps} optimizer step(s)")
