"""Proof of learning: after the first optimizer step(s) every trainable tensor got a gradient and moved.

`LearningProbe` is shared by `PeftDoctorCallback` (Trainer) and `watch()` (hand loops). It copies only the
trainable tensors (within a byte budget; above it a float64 fingerprint per tensor) when a step begins, reads
their gradients just before the optimizer step and compares their values just after it. Import only after torch.
"""

from __future__ import annotations

from collections import defaultdict

from peftdoctor.finding import Finding, Severity
from peftdoctor.runtime.diagnose import ADAPTER_MARKERS, report
from peftdoctor.runtime.errors import NotLearning

WHERE = "<training>"
COPY_BUDGET = 1 << 30  # bytes of trainable tensors copied in full; larger sets are fingerprinted
MAX_SKIPPED = 8  # optimizer steps skipped by fp16 loss scaling (inf/nan grads) before they count
# A LoRA factor's gradient is zero by construction while its partner factor is all zero (peft's init).
ZERO_PARTNER = {"lora_A": "lora_B", "lora_embedding_B": "lora_embedding_A"}
FAILURES = ("raise", "stop", "warn")

NO_GRAD, ZERO_GRAD, BAD_GRAD, UNCHANGED = "no gradient", "zero gradient", "non-finite gradient", "unchanged"
CAUSES = {
    NO_GRAD: "the tensor is not on the path from the inputs to the loss: reentrant gradient checkpointing "
             "with inputs that do not require grad (PD707), or an adapter that is loaded but not active (PD708)",
    ZERO_GRAD: "the loss does not depend on the tensor (all labels masked with -100, or a zero scaling)",
    BAD_GRAD: "the gradient overflowed (fp16 without a float32 master copy, or a too high learning rate)",
    UNCHANGED: "the optimizer does not hold the tensor (built before get_peft_model, or from another model), "
               "or its learning rate is 0",
}


def _split(name: str) -> tuple[str, str]:
    """'base_model.model.x.q_proj.lora_A.default.weight' -> ('base_model.model.x.q_proj', 'lora_A.default.weight')."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if any(part.startswith(marker.rstrip("_")) for marker in ADAPTER_MARKERS):
            return ".".join(parts[:i]) or part, ".".join(parts[i:])
    return ".".join(parts[:-1]) or name, parts[-1]


def _partner(name: str) -> str | None:
    for role, partner in ZERO_PARTNER.items():
        if f".{role}." in name:
            return name.replace(f".{role}.", f".{partner}.")
    return None


def _full(tensor):
    """The full value of a parameter or gradient, or None when it cannot be read on this rank."""
    import torch

    if tensor is None:
        return None
    if hasattr(tensor, "ds_id"):
        try:
            from deepspeed.utils import safe_get_full_fp32_param
        except ImportError:
            return None
        return safe_get_full_fp32_param(tensor)
    data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
    if type(data).__name__ == "DTensor":
        return data.full_tensor()
    return data.detach()


def _guarded(method):
    """A probe must never crash the run: an unexpected error ends the check with a warning instead."""
    def run(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - e.g. a sharding layout we do not know
            self.failure = f"{type(exc).__name__}: {exc}"
            self.done = True
            return True

    run.__doc__ = method.__doc__
    return run


class LearningProbe:
    """Checks the trainable tensors of `model` over its next `check_steps` optimizer steps."""

    def __init__(self, model, *, check_steps: int = 1, grads_readable: bool = True, budget: int = COPY_BUDGET):
        if check_steps < 1:
            raise ValueError(f"check_steps must be at least 1, got {check_steps}")
        self.tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.check_steps = check_steps
        self.grads_readable = grads_readable
        total = sum(p.numel() * p.element_size() for p in self.tensors.values())
        self.full_copy = total <= budget
        self.steps = self.skipped = 0
        self.learned: set[str] = set()
        self.reasons: dict[str, str] = {}
        self.unreadable: set[str] = set()
        self._before: dict = {}
        self._zero_before: set[str] = set()
        self._grads: dict[str, str | None] = {}
        self.failure = ""
        self.done = not self.tensors

    @staticmethod
    def _fingerprint(value) -> tuple[float, float]:
        as64 = value.double()
        return as64.sum().item(), as64.square().sum().item()

    @_guarded
    def snapshot(self) -> None:
        """Keep what shows a change: a copy of each tensor, or its float64 sum and sum of squares."""
        if self.done:
            return
        self._before, self._zero_before = {}, set()
        for name, param in self.tensors.items():
            value = _full(param)
            if value is None or value.numel() == 0:  # e.g. FSDP's empty view of a shard held by another rank
                self.unreadable.add(name)
                continue
            self._before[name] = value.clone() if self.full_copy else self._fingerprint(value)
            if not value.any():
                self._zero_before.add(name)

    @_guarded
    def read_grads(self) -> None:
        """Classify each gradient: call after backward (and clipping), before the optimizer step."""
        self._grads = {}
        if self.done or not self.grads_readable:
            return
        for name, param in self.tensors.items():
            if name not in self.learned and name not in self.unreadable:
                self._grads[name] = self._grad_state(param)

    def _grad_state(self, param) -> str | None:
        """None when the gradient is finite and non-zero, else what is wrong with it."""
        import torch

        if hasattr(param, "ds_id"):
            return None  # ZeRO-3 keeps gradients in its own partitions: compare values only
        grad = _full(getattr(param, "grad", None))
        if grad is None:
            return NO_GRAD
        if not torch.isfinite(grad).all():
            return BAD_GRAD
        return None if grad.any() else ZERO_GRAD

    @_guarded
    def after_step(self) -> bool:
        """Compare values with the snapshot; True once the check is complete."""
        if self.done or not self._before:
            return self.done
        import torch

        changed = set()
        for name, before in self._before.items():
            after = _full(self.tensors[name])
            same = torch.equal(after, before) if self.full_copy else self._fingerprint(after) == before
            if not same:
                changed.add(name)
        if not changed and BAD_GRAD in self._grads.values() and self.skipped < MAX_SKIPPED:
            self.skipped += 1  # fp16 loss scaling skipped this step; it is not evidence either way
            return False
        for name in self._before:
            if name in self.learned:
                continue
            reason = self._grads.get(name) or (None if name in changed else UNCHANGED)
            partner = _partner(name)
            if reason in (ZERO_GRAD, UNCHANGED) and partner in self._zero_before:
                reason = None  # lora_A waits for lora_B to leave zero; lora_B itself is checked
            if reason is None:
                self.learned.add(name)
                self.reasons.pop(name, None)
            else:
                self.reasons[name] = reason
        self.steps += 1
        self._before, self._grads = {}, {}
        self.done = self.steps >= self.check_steps
        return self.done

    def findings(self) -> list[Finding]:
        """PD709 for the tensors that did not learn; a warning for those that could not be read."""
        out = []
        failed = {} if self.failure else {n: r for n, r in self.reasons.items() if n not in self.learned}
        if failed:
            out.append(not_learning_finding(failed, len(self.tensors), self.steps))
        if self.unreadable:
            out.append(Finding(code="PD709", message=f"{len(self.unreadable)} sharded trainable tensor(s) could "
                               "not be read on this rank, so whether they learn was not verified",
                               path=WHERE, line=0, severity=Severity.WARNING,
                               hint="the check gathers ZeRO-3 parameters with deepspeed's safe_get_full_fp32_param "
                               "and FSDP2 DTensors with full_tensor(); other shards are left out", extra={"unverified": sorted(self.unreadable)}))
        if self.failure:
            out.append(Finding(code="PD709", message=f"the learning check stopped on an error ({self.failure}): "
                               "whether the adapter learns was not verified", path=WHERE, line=0,
                               severity=Severity.WARNING))
        if not self.grads_readable and self.tensors:
            out.append(Finding(code="PD709", message="gradients are not readable here (DeepSpeed applies the "
                               "step inside backward): only the values were compared", path=WHERE, line=0,
                               severity=Severity.INFO))
        return out


def group_by_module(names) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names):
        module, part = _split(name)
        groups[module].append(part)
    return dict(groups)


def describe_groups(names, limit: int = 40) -> str:
    """One line per module: 'module: part, part'."""
    groups = group_by_module(names)
    lines = [f"    {module}: {', '.join(parts)}" for module, parts in list(groups.items())[:limit]]
    if len(groups) > limit:
        lines.append(f"    ... and {len(groups) - limit} more modules")
    return "\n".join(lines)


def not_learning_finding(failed: dict[str, str], total: int, steps: int) -> Finding:
    """One PD709 error: how many tensors failed, why, grouped by reason and module."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for name, reason in failed.items():
        by_reason[reason].append(name)
    summary = "; ".join(f"{len(names)} {reason}" for reason, names in by_reason.items())
    step_word = "the first optimizer step" if steps == 1 else f"{steps} optimizer steps"
    details = "\n".join(f"  {reason} ({len(names)}): likely cause: {CAUSES[reason]}\n{describe_groups(names)}"
                        for reason, names in by_reason.items())
    message = (f"{len(failed)} of {total} trainable tensors did not learn in {step_word} ({summary}):\n"
               f"{details}")
    return Finding(code="PD709", message=message, path=WHERE, line=0, severity=Severity.ERROR,
                   hint="fix this before spending more steps: the run would log a loss and leave these "
                   "tensors at their initial values",
                   extra={"tensors": {n: r for n, r in sorted(failed.items())}, "steps": steps})


def inactive_trainable(model) -> list[Finding]:
    """PD708: trainable adapter tensors of an adapter name that is not active get no gradient."""
    active = getattr(model, "active_adapters", None)
    config = getattr(model, "peft_config", None)
    if not isinstance(config, dict) or len(config) < 2:
        return []
    active = set(active() if callable(active) else active or [])
    stray = [n for n, p in model.named_parameters() if p.requires_grad
             and any(f".{name}." in f".{n}." for name in config if name not in active)
             and not any(f".{name}." in f".{n}." for name in active)]
    if not stray:
        return []
    names = sorted({name for name in config if name not in active and any(f".{name}." in f".{n}." for n in stray)})
    return [Finding(code="PD708", message=f"{len(stray)} trainable tensor(s) belong to adapter(s) {names} but the "
                    f"active adapter is {sorted(active)}: they get no gradient", path=WHERE, line=0,
                    severity=Severity.ERROR, hint=f"model.set_adapter({names[0]!r}) to train the loaded adapter, "
                    "or load it with PeftModel.from_pretrained(base, path, is_trainable=True) instead of "
                    "load_adapter on a fresh one")]


def handle(findings: list[Finding], on_failure: str, when: str) -> bool:
    """Raise, or log, the errors among `findings`; True when training should stop."""
    errors = [f for f in findings if f.severity == Severity.ERROR]
    shown = [f for f in findings if f.severity != Severity.INFO]
    if not shown:
        return False
    text = f"peftdoctor {when}:\n{report(shown)}"
    if errors and on_failure == "raise":
        raise NotLearning(text, findings)
    import logging
    import warnings

    if on_failure == "warn" or not errors:
        warnings.warn(text, stacklevel=3)
        return False
    logging.getLogger("peftdoctor").error(text + "\n  training stopped (on_failure='stop')")
    return True
