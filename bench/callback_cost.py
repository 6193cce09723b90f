"""What PeftDoctorCallback costs: on its check step, and per step after it (target: < 3 %).

Usage: python bench/callback_cost.py [--steps N] [--hidden H] [--layers L] [--repeats R]
Trains a config-built Llama (no download) with LoRA on q/k/v/o for N steps on the CPU with the real Trainer,
with and without the callback, alternating runs. Two measures:
- the time spent inside the callback's own hooks, against the step time: this does not depend on what else
  the machine runs;
- the process CPU time of each step with and without the callback (medians after the check step, best run),
  which includes indirect costs but is noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import peft
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from peftdoctor import PeftDoctorCallback


class StepTimer(TrainerCallback):
    """Process CPU time of each optimizer step (all threads)."""

    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.process_time() - self._start)


class TimedDoctor(PeftDoctorCallback):
    """PeftDoctorCallback that adds up the wall time of its own hooks, per optimizer step (0 = train begin)."""

    def __init__(self):
        super().__init__()
        self.spent: dict[int, float] = {}

    def _timed(self, hook, state, *args, **kwargs):
        start = time.perf_counter()
        result = hook(*args, **kwargs)
        self.spent[state.global_step] = self.spent.get(state.global_step, 0.0) + time.perf_counter() - start
        return result

    def on_train_begin(self, args, state, control, **kwargs):
        return self._timed(super().on_train_begin, state, args, state, control, **kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        return self._timed(super().on_step_begin, state, args, state, control, **kwargs)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        return self._timed(super().on_pre_optimizer_step, state, args, state, control, **kwargs)

    def on_optimizer_step(self, args, state, control, **kwargs):
        return self._timed(super().on_optimizer_step, state, args, state, control, **kwargs)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, rows: int, length: int, vocab: int):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, vocab, (rows, length), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def model(hidden: int, layers: int):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    lora = peft.LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return peft.get_peft_model(LlamaForCausalLM(config), lora)


def run(steps: int, hidden: int, layers: int, doctor: TimedDoctor | None) -> tuple[list[float], int]:
    timer = StepTimer()
    net = model(hidden, layers)
    callbacks = [timer] + ([doctor] if doctor else [])
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, per_device_train_batch_size=4, max_steps=steps, learning_rate=1e-4,
                                 report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                 disable_tqdm=True)
        Trainer(model=net, args=args, train_dataset=Tokens(steps * 4, 64, 1024), callbacks=callbacks).train()
    copied = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    return timer.times, copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: idle OpenMP threads spin and blur CPU times)")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    cpu = {False: [], True: []}
    hooks_check, hooks_after = [], []
    for _ in range(opts.repeats):
        for with_doctor in (False, True):
            doctor = TimedDoctor() if with_doctor else None
            times, copied = run(opts.steps, opts.hidden, opts.layers, doctor)
            cpu[with_doctor].append(statistics.median(times[2:]))  # after the check step and one warm-up
            if doctor:
                hooks_check.append(doctor.spent.get(0, 0.0))  # train begin (diagnose) and the whole check step
                hooks_after.append(sum(t for step, t in doctor.spent.items() if step >= 1) / (opts.steps - 1))
    base, checked = min(cpu[False]), min(cpu[True])
    total = sum(p.numel() for p in model(opts.hidden, opts.layers).parameters())
    print(f"model: llama hidden {opts.hidden}, {opts.layers} layers, {total:,} parameters; LoRA r=16 on q/k/v/o; "
          f"{opts.steps} steps, best of {opts.repeats}; torch {torch.__version__}, {torch.get_num_threads()} "
          "CPU threads")
    print(f"adapter bytes copied for the check: {copied / 1e6:.2f} MB (the base is not copied)")
    print(f"median step (process CPU time): {base * 1e3:.1f} ms without the callback")
    print(f"callback hooks on the check step (diagnose, copy, gradients, compare): {min(hooks_check) * 1e3:.2f} ms "
          f"= {min(hooks_check) / base * 100:.1f} % of one step")
    print(f"callback hooks per step after the check: {min(hooks_after) * 1e6:.1f} us "
          f"= {min(hooks_after) / base * 100:.4f} % of a step")
    print(f"per step after the check, CPU time with vs without the callback: {checked * 1e3:.1f} ms vs "
          f"{base * 1e3:.1f} ms ({(checked / base - 1) * 100:+.1f} %, includes machine noise)")


if __name__ == "__main__":
    main()
