"""Benchmark deep inspect: time and peak RSS on a tiny base and a ~500 MB float32 base.

Usage: python bench/inspect_deep.py [--keep DIR] [--only tiny|large]

Each measurement runs in a fresh process, so peak RSS (ru_maxrss) is that of
deep inspect alone. Phases: import (torch/transformers/peft), load (base +
adapter), forward (adapted + disabled passes), merge (merge, pass, unmerge).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BUILD = r"""
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
out, hidden, layers, inter, vocab = sys.argv[1], *map(int, sys.argv[2:6])
torch.manual_seed(0)
config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                     num_attention_heads=max(2, hidden // 64), num_key_value_heads=max(2, hidden // 64),
                     max_position_embeddings=128, tie_word_embeddings=False)
model = LlamaForCausalLM(config)
model.save_pretrained(out + "/base")
lora = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
lora.save_pretrained(out + "/adapter")
print(sum(p.numel() for p in model.parameters()))
"""

MEASURE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pathlib import Path
from peftdoctor.runtime.deep import deep_check
import torch, transformers, peft
import_s = time.perf_counter() - t0
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
timings = {}
findings = deep_check(Path(sys.argv[1]), sys.argv[2], device="cpu", timings=timings)
timings["import"] = import_s
timings["total_in_process"] = time.perf_counter() - t0
print(json.dumps({"timings": timings, "rss_after_import_kb": rss_import,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "findings": [f"{f.severity.value} {f.code} {f.message}" for f in findings]}))
"""


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def run(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, **kw)


def bench(name: str, work: Path, shape: tuple[int, int, int, int]) -> None:
    folder = work / name
    if not (folder / "adapter").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        built = run([sys.executable, "-c", BUILD, str(folder), *map(str, shape)])
        if built.returncode:
            sys.exit(built.stderr)
    base_mb, adapter_mb = size_mb(folder / "base"), size_mb(folder / "adapter")
    start = time.perf_counter()
    measured = run([sys.executable, "-c", MEASURE, str(folder / "adapter"), str(folder / "base")])
    wall = time.perf_counter() - start
    if measured.returncode:
        sys.exit(measured.stderr)
    data = json.loads(measured.stdout.strip().splitlines()[-1])
    t = data["timings"]
    peak, after_import = data["peak_rss_kb"] / 1024, data["rss_after_import_kb"] / 1024
    print(f"\n== {name}: base {base_mb:.1f} MB, adapter {adapter_mb:.2f} MB (hidden/layers/inter/vocab {shape})")
    print(f"whole process {wall:.2f} s; in process: import {t['import']:.2f} s, load {t['load']:.2f} s, "
          f"forward {t.get('forward', 0):.2f} s, merge {t.get('merge', 0):.2f} s")
    print(f"peak RSS {peak:.0f} MB; after imports {after_import:.0f} MB; "
          f"increase {peak - after_import:.0f} MB = {(peak - after_import) / (base_mb + adapter_mb):.2f}x "
          f"(base + adapter); whole peak = {peak / (base_mb + adapter_mb):.2f}x")
    for line in data["findings"]:
        print("  ", line[:160])
    cli = ROOT / "peftdoctor" / "inspect" / "run.py"
    if cli.is_file():
        start = time.perf_counter()
        done = run(["/usr/bin/time", "-v", sys.executable, "-m", "peftdoctor", "inspect", str(folder / "adapter"),
                    "--base", str(folder / "base"), "--device", "cpu"])
        rss = [line for line in done.stderr.splitlines() if "Maximum resident" in line]
        print(f"CLI `peftdoctor inspect --base`: exit {done.returncode}, {time.perf_counter() - start:.2f} s, "
              f"{rss[0].strip() if rss else 'peak RSS not measured'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="reuse/keep the built models in this folder")
    parser.add_argument("--only", choices=("tiny", "large"))
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pd-bench-"))
    cases = {"tiny": (16, 2, 32, 128),  # tests/tiny.py's Llama
             "large": (768, 12, 2048, 32000)}  # ~134M params, ~540 MB float32
    for name, shape in cases.items():
        if args.only in (None, name):
            bench(name, work, shape)


if __name__ == "__main__":
    main()
