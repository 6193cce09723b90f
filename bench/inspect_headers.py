"""Benchmark: `peftdoctor inspect` on a 7B-shaped LoRA adapter versus loading it with torch.

Writes a synthetic adapter (r=64 on q,k,v,o,gate,up,down of 32 layers, hidden 4096,
intermediate 11008: about 640 MB of random float32) with safetensors.numpy in a temp
folder, then times, each as a whole process where it says so:

- `peftdoctor inspect` with the value-reading checks off (--ignore PD605,PD606): headers only;
- `peftdoctor inspect` with every check, including PD605/PD606 which read values;
- `safetensors.torch.load_file` of the weights (in-process, after importing torch).

Usage: python bench/inspect_headers.py [--repeat N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

LAYERS, HIDDEN, INTERMEDIATE, RANK = 32, 4096, 11008, 64
MODULES = {  # name: (in_features, out_features)
    "self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTERMEDIATE), "mlp.up_proj": (HIDDEN, INTERMEDIATE),
    "mlp.down_proj": (INTERMEDIATE, HIDDEN),
}


def write_adapter(folder: Path) -> int:
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(LAYERS):
        for module, (fan_in, fan_out) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((RANK, fan_in), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((fan_out, RANK), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 128, "lora_dropout": 0.05,
        "target_modules": sorted(m.split(".")[-1] for m in MODULES), "bias": "none",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "peft_version": "0.21.2",
        "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_dora": False, "use_rslora": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return (folder / "adapter_model.safetensors").stat().st_size


def time_process(args: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    times, done = [], None
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times), done


def time_torch_load(path: Path, repeat: int) -> tuple[float, float, float]:
    """(import torch + load_file, load_file alone, load_file + touching every value) in a fresh process."""
    script = (
        "import time; t0 = time.perf_counter()\n"
        "from safetensors.torch import load_file\n"
        "t1 = time.perf_counter(); state = load_file(%r); t2 = time.perf_counter()\n"
        "total = sum(float(t.sum()) for t in state.values()); t3 = time.perf_counter()\n"
        "print(t2 - t0, t2 - t1, t3 - t1)\n" % str(path)
    )
    pairs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        pairs.append(tuple(float(x) for x in out.split()))
    return tuple(statistics.median(p[i] for p in pairs) for i in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="write the adapter here and keep it")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(options.keep or scratch) / "adapter-7b-r64"
        start = time.perf_counter()
        size = write_adapter(folder)
        print(f"adapter: {folder} ({size / 2**20:.0f} MiB, {LAYERS * len(MODULES) * 2} tensors, "
              f"written in {time.perf_counter() - start:.1f} s)")
        cli = [sys.executable, "-m", "peftdoctor", "inspect", str(folder), "--format", "json"]
        subprocess.run(cli, capture_output=True)  # warm the page cache and .pyc files
        as_json, done = time_process([*cli, "--ignore", "PD605,PD606"], options.repeat)
        findings = [f["code"] for f in json.loads(done.stdout)["findings"]]
        headers, _ = time_process([*cli[:-2], "--ignore", "PD605,PD606"], options.repeat)
        full, done_full = time_process(cli, max(1, options.repeat // 2))
        full_findings = [f["code"] for f in json.loads(done_full.stdout)["findings"]]
        torch_total, torch_load, torch_read = time_torch_load(folder / "adapter_model.safetensors", max(1, options.repeat // 2))
        python_only, _ = time_process([sys.executable, "-c", "pass"], options.repeat)
    print(f"python -c pass (interpreter start):                 {python_only * 1000:7.1f} ms")
    print(f"peftdoctor inspect, headers only (text + table):    {headers * 1000:7.1f} ms  findings={findings}")
    print(f"peftdoctor inspect, headers only (--format json):   {as_json * 1000:7.1f} ms")
    print(f"peftdoctor inspect, with PD605/PD606 value reads:   {full * 1000:7.1f} ms  findings={full_findings}")
    print(f"safetensors.torch.load_file (load only):            {torch_load * 1000:7.1f} ms")
    print(f"load_file + reading every value (t.sum()):          {torch_read * 1000:7.1f} ms")
    print(f"import torch + load_file (process work):            {torch_total * 1000:7.1f} ms")
    print(f"ratio load_file / inspect headers (whole process):  {torch_load / headers:7.1f}x")
    print(f"ratio (import torch + load_file) / inspect headers: {torch_total / headers:7.1f}x")
    print(f"ratio (load_file + read values) / inspect headers:  {torch_read / headers:7.1f}x")


if __name__ == "__main__":
    main()
