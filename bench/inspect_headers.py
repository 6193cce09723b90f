"""Benchmark: `peftdoctor inspect` on a 7B-shaped LoRA adapter versus loading it with torch.

Writes a synthetic adapter (r=64 on q,k,v,o,gate,up,down of 32 layers, hidden 4096,
intermediate 11008: about 640 MB of random float32) with safetensors.numpy in a temp
folder, then times, each as a whole process where it says so:

- `peftdoctor inspect` with the value-reading checks off (--ignore PD605,PD606): headers only;
- `peftdoctor inspect` of the adapter naming a local 7B-shaped base (config.json, model.safetensors.index.json and 4 shard
  files whose headers are real and whose data is a sparse hole): the PD613/PD614 checks against the base;
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


def write_base(folder: Path, shards: int = 4) -> int:
    """A Llama-2-7B-shaped base: real config, index and shard headers; the tensor data is a sparse hole."""
    shapes = {"model.embed_tokens.weight": (32000, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (32000, HIDDEN)}
    for layer in range(LAYERS):
        for module, (fan_in, fan_out) in MODULES.items():
            shapes[f"model.layers.{layer}.{module}.weight"] = (fan_out, fan_in)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"model.layers.{layer}.{norm}.weight"] = (HIDDEN,)
    names = list(shapes)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        table, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in names[shard::shards]:
            size = 2 * int(np.prod(shapes[name]))
            table[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = file
        raw = json.dumps(table).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / file, "wb") as stream:
            stream.write(len(raw).to_bytes(8, "little") + raw)
            stream.truncate(8 + len(raw) + offset)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": 32,
              "vocab_size": 32000, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    return len(weight_map)


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
        # The same adapter naming the local 7B-shaped base (header level: `--base` would run the deep checks).
        base_dir = Path(options.keep or scratch) / "base-7b"
        base_tensors = write_base(base_dir)
        named = folder.with_name("adapter-7b-r64-local-base")
        named.mkdir(exist_ok=True)
        config = json.loads((folder / "adapter_config.json").read_text())
        (named / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base_dir)}))
        if not (named / "adapter_model.safetensors").exists():
            (named / "adapter_model.safetensors").symlink_to(folder / "adapter_model.safetensors")
        with_base, done_base = time_process([*cli[:4], str(named), "--format", "json", "--ignore", "PD605,PD606"],
                                            options.repeat)
        base_findings = [f["code"] for f in json.loads(done_base.stdout)["findings"]]
        full, done_full = time_process(cli, max(1, options.repeat // 2))
        full_findings = [f["code"] for f in json.loads(done_full.stdout)["findings"]]
        torch_total, torch_load, torch_read = time_torch_load(folder / "adapter_model.safetensors", max(1, options.repeat // 2))
        python_only, _ = time_process([sys.executable, "-c", "pass"], options.repeat)
    print(f"python -c pass (interpreter start):                 {python_only * 1000:7.1f} ms")
    print(f"peftdoctor inspect, headers only (text + table):    {headers * 1000:7.1f} ms  findings={findings}")
    print(f"peftdoctor inspect, headers only (--format json):   {as_json * 1000:7.1f} ms")
    print(f"peftdoctor inspect, headers + local 7B base index:  {with_base * 1000:7.1f} ms  "
          f"findings={base_findings} ({base_tensors} base tensors, 4 shards)")
    print(f"peftdoctor inspect, with PD605/PD606 value reads:   {full * 1000:7.1f} ms  findings={full_findings}")
    print(f"safetensors.torch.load_file (load only):            {torch_load * 1000:7.1f} ms")
    print(f"load_file + reading every value (t.sum()):          {torch_read * 1000:7.1f} ms")
    print(f"import torch + load_file (process work):            {torch_total * 1000:7.1f} ms")
    print(f"ratio load_file / inspect headers (whole process):  {torch_load / headers:7.1f}x")
    print(f"ratio (import torch + load_file) / inspect headers: {torch_total / headers:7.1f}x")
    print(f"ratio (load_file + read values) / inspect headers:  {torch_read / headers:7.1f}x")


if __name__ == "__main__":
    main()
