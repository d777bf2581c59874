"""Sampler throughput and trajectory-record size, side by side in one run.

Prints, for the built-in tiny model and a wider one, completion tokens per second at generation lengths
64/128/256 and several step counts (fewer steps = more tokens committed per forward pass), and the bytes
of the trajectory record per sample against a C x vocab boolean mask of the truncation sets.

    .venv/bin/python tests/benchmarks/bench_sampler.py [--batch 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from rollout.sampler import sample

VOCAB, MASK, EOS, PAD = 512, 511, 510, 509
LLADA_VOCAB = 126_464
MODELS = {
    "tiny d128x4": TinyModelConfig(max_sequence_length=512),
    "d256x4": TinyModelConfig(d_model=256, n_heads=8, n_kv_heads=8, mlp_hidden_size=768, max_sequence_length=512),
}
SETTINGS = [(64, 32, 16), (64, 32, 64), (128, 32, 32), (128, 32, 128), (256, 32, 64), (256, 32, 256)]


def _time_sample(model: torch.nn.Module, prompts: list[list[int]], cfg: SamplerConfig) -> float:
    start = time.perf_counter()
    sample(model, prompts, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0))
    return time.perf_counter() - start


@torch.inference_mode()
def _time_forwards(model: torch.nn.Module, prompts: list[list[int]], gen: int, steps: int) -> float:
    """The model alone: `steps` forward passes over the padded batch, the floor for the sampler."""
    width = max(len(p) for p in prompts) + gen
    ids = torch.full((len(prompts), width), MASK)
    attention = torch.ones_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - gen - len(p) : width - gen] = torch.tensor(p)
        attention[i, : width - gen - len(p)] = 0
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=attention)
    return time.perf_counter() - start


def throughput(batch: int) -> None:
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, PAD, size=int(rng.integers(16, 48))).tolist() for _ in range(batch)]
    print(f"\nthroughput: batch {batch}, temperature 1.0, top_k 50, random remasking, prompts 16-47 tokens")
    print(
        f"{'model':<12} {'C':>4} {'block':>5} {'steps':>5} {'tok/step':>8} {'sampler s':>9} "
        f"{'tokens/s':>9} {'fwd-only s':>10} {'overhead':>8}"
    )
    for name, shape in MODELS.items():
        model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
        warm = SamplerConfig(gen_length=16, block_length=16, steps=2, temperature=1.0, top_k=50)
        _time_sample(model, prompts, warm)
        for gen, block, steps in SETTINGS:
            cfg = SamplerConfig(
                gen_length=gen, block_length=block, steps=steps, temperature=1.0, top_k=50, early_exit=False
            )
            seconds = _time_sample(model, prompts, cfg)
            forwards = _time_forwards(model, prompts, gen, steps)
            print(
                f"{name:<12} {gen:>4} {block:>5} {steps:>5} {gen // steps:>8} {seconds:>9.2f} "
                f"{batch * gen / seconds:>9.0f} {forwards:>10.2f} {seconds / forwards:>8.2f}"
            )


def record_size() -> None:
    """Bytes per sample measured on real records, next to the boolean mask they replace."""
    model = build_tiny_model(TinyModelConfig(), VOCAB, MASK, EOS, PAD, seed=0).eval()
    prompt = list(range(100))
    print(f"\nrecord size per sample (prompt 100 tokens); mask = C x vocab bool at vocab {LLADA_VOCAB}")
    print(f"{'C':>4} {'truncation':<18} {'record B':>9} {'mask B':>11} {'ratio':>8}")
    for gen in (64, 256):
        for label, top_k, top_p in (("none", 0, 1.0), ("top_k 150", 150, 1.0), ("top_k 150 top_p .99", 150, 0.99)):
            cfg = SamplerConfig(
                gen_length=gen, block_length=32, steps=gen // 4, temperature=1.0, top_k=top_k, top_p=top_p
            )
            record = sample(model, [prompt], cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0))
            mask_bytes = gen * LLADA_VOCAB * np.dtype(np.bool_).itemsize
            print(f"{gen:>4} {label:<18} {record.nbytes():>9} {mask_bytes:>11} {record.nbytes() / mask_bytes:>8.4%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="Prompts per sampler call.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    throughput(args.batch)
    record_size()


if __name__ == "__main__":
    main()
