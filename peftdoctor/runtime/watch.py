"""`watch(model, optimizer)`: the callback's check for hand-written loops and accelerate.

diagnose() runs at once; its findings are reported with the step check. Optimizer step hooks snapshot the trainable tensors and read their gradients before the first step(s) and
compare after; the hooks are removed once the check is done, so later steps pay nothing.
"""

from __future__ import annotations

from peftdoctor.runtime.diagnose import diagnose
from peftdoctor.runtime.learning import FAILURES, LearningProbe, handle, inactive_trainable


def _innermost(optimizer):
    """accelerate's AcceleratedOptimizer wraps the torch optimizer and calls its step only on sync steps."""
    import torch

    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class Watch:
    """Returned by watch(); a context manager. `findings` holds errors and warnings; `should_stop` is set
    with on_failure="stop"."""

    def __init__(self, model, optimizer, *, check_steps: int = 1, on_failure: str = "raise"):
        if on_failure not in FAILURES:
            raise ValueError(f"on_failure must be one of {FAILURES}, got {on_failure!r}")
        self.on_failure = on_failure
        self.findings: list = []
        self.should_stop = False
        self.probe = LearningProbe(model, check_steps=check_steps)
        self.pending = diagnose(model) + inactive_trainable(model)  # reported with the step check
        self._hooks = []
        if self.probe.done:  # nothing trainable to watch: report now
            self._handle(self.pending, "found problems before the first step")
            return
        optimizer = _innermost(optimizer)
        self._hooks = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def _handle(self, found, when: str) -> None:
        self.findings += [f for f in found if f.severity.value != "info"]
        if handle(found, self.on_failure, when):
            self.should_stop = True

    def _pre(self, optimizer, args, kwargs) -> None:
        self.probe.snapshot()
        self.probe.read_grads()

    def _post(self, optimizer, args, kwargs) -> None:
        if self.probe.after_step():
            self.close()
            self._handle(self.pending + self.probe.findings(), f"checked {self.probe.steps} optimizer step(s)")

    def close(self) -> None:
        """Remove the hooks (done automatically after the check steps)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def watch(model, optimizer, *, check_steps: int = 1, on_failure: str = "raise") -> Watch:
    """diagnose(model) now, then check the first `check_steps` optimizer steps; see Watch."""
    return Watch(model, optimizer, check_steps=check_steps, on_failure=on_failure)
