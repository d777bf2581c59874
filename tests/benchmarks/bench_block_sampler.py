"""Rollout throughput of a block-causal model: the exact KV cache against full forwards, side by side in one run.

Both variants sample the same prompts with the same seed and give the same record (tests/unit/test_kv_cache.py);
only the work differs. Without the cache every step runs the whole sequence, P + C tokens per row; with it a
step runs the current block, BL tokens, against the cached keys and values of the prompt and the committed
blocks, plus one prefill of the prompt and one commit pass per block. Prints completion tokens per second of
both, their ratio, and the ratio of tokens the model processes (the ideal speedup, which grows like C / BL).

    .venv/bin/python tests/benchmarks/bench_block_sampler.py [--batch 8] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
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
GRID = [(c, bl, steps) for c in (64, 256) for bl in (4, 32) for steps in (c, c // 2)]


def _seconds(model: torch.nn.Module, prompts: list[list[int]], cfg: SamplerConfig) -> float:
    start = time.perf_counter()
    sample(model, prompts, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="Prompts per sampler call.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved timings per variant (median).")
    parser.add_argument("--d-model", type=int, default=128, help="Hidden size of the tiny block model.")
    parser.add_argument("--layers", type=int, default=4, help="Transformer blocks of the tiny block model.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, PAD, size=int(rng.integers(16, 48))).tolist() for _ in range(args.batch)]
    width = max(len(p) for p in prompts)
    print(
        f"block-causal tiny model d={args.d_model} layers={args.layers}; batch {args.batch}, prompts 16-47 tokens; "
        f"temperature 1, top_k 50, random remasking, no early exit; threads={args.threads}; median of {args.repeats}"
    )
    print(
        f"{'C':>4} {'BL':>3} {'steps':>5} {'uncached tok/s':>15} {'cached tok/s':>13} {'speedup':>8} {'work ratio':>11}"
    )
    for gen, block, steps in GRID:
        shape = TinyModelConfig(
            d_model=args.d_model,
            n_layers=args.layers,
            n_heads=4,
            n_kv_heads=4,
            mlp_hidden_size=3 * args.d_model,
            max_sequence_length=512,
            attention="block_causal",
            block_size=block,
        )
        model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
        configs = {
            kv: SamplerConfig(
                gen_length=gen,
                block_length=block,
                steps=steps,
                temperature=1.0,
                top_k=50,
                early_exit=False,
                kv_cache=kv,
            )
            for kv in ("off", "auto")
        }
        _seconds(model, prompts, configs["auto"].model_copy(update={"gen_length": block, "steps": 1}))
        times: dict[str, list[float]] = {kv: [] for kv in configs}
        for _ in range(args.repeats):
            for kv, cfg in configs.items():
                times[kv].append(_seconds(model, prompts, cfg))
        off, auto = (statistics.median(times[kv]) for kv in ("off", "auto"))
        tokens = args.batch * gen
        blocks = gen // block
        work = steps * (width + gen) / (width + (steps + blocks - 1) * block)
        print(
            f"{gen:>4} {block:>3} {steps:>5} {tokens / off:>15.0f} {tokens / auto:>13.0f} {off / auto:>7.2f}x "
            f"{work:>10.1f}x"
        )


if __name__ == "__main__":
    main()
