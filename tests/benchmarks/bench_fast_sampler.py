"""Rollout throughput of a full-attention model: exact, prefix, dual, and dual + threshold, side by side in one run.

All variants sample the same prompts with the same seed. `exact` runs the whole sequence every step
(`kv_cache: off`); `prefix` and `dual` refresh an approximate KV cache with one full forward at each block start
and run the block and everything after it (prefix) or the block alone (dual) at the other steps; `dual +
threshold` adds Fast-dLLM's parallel decoding (every position whose confidence reaches tau, at least one), so
its step count is the model's, not the config's. Prints completion tokens per second, the ratio to exact at the
same step count, the measured forward passes per sample (NFE) and tokens committed per step, and the rollout /
learner log-prob mismatch of each approximate variant: |behaviour log-prob - exact log-prob| of every sampled
token in the state it was sampled in (the learner's recomputation, one full forward per state), mean and max.

A randomly initialised model is nearly uniform and never reaches tau = 0.9, so its output head is scaled
(`--head-scale`) until threshold decoding commits a few tokens per step, as a trained model does; the speed of
the other variants does not depend on it, the speed of threshold decoding is set by the tokens per step it
prints, and the mismatch of a random model says little about a trained one's.

    .venv/bin/python tests/benchmarks/bench_fast_sampler.py [--batch 8] [--threads 1] [--repeats 3]
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
from common.record import TrajectoryBatch
from rollout.sampler import sample
from tests.logprob_mismatch import mismatch

VOCAB, MASK, EOS, PAD = 512, 511, 510, 509
VARIANTS = {
    "exact": {"kv_cache": "off"},
    "prefix": {"kv_cache": "prefix"},
    "dual": {"kv_cache": "dual"},
    "dual+threshold": {"kv_cache": "dual", "unmask": "threshold"},
}


def _run(model: torch.nn.Module, prompts: list[list[int]], cfg: SamplerConfig) -> tuple[float, TrajectoryBatch]:
    start = time.perf_counter()
    record = sample(model, prompts, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(0), (PAD,))
    return time.perf_counter() - start, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="Prompts per sampler call.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved timings per variant (median).")
    parser.add_argument("--d-model", type=int, default=256, help="Hidden size of the full-attention tiny model.")
    parser.add_argument("--layers", type=int, default=4, help="Transformer blocks.")
    parser.add_argument("--head-scale", type=float, default=32.0, help="Factor on the output head (confidence).")
    parser.add_argument("--threshold", type=float, default=0.9, help="tau of dual + threshold.")
    parser.add_argument("--lengths", default="256,64", help="Completion lengths C (block 32, steps C and C/4).")
    parser.add_argument("--no-mismatch", action="store_true", help="Skip the log-prob mismatch (it costs a full run).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, PAD, size=int(rng.integers(16, 48))).tolist() for _ in range(args.batch)]
    shape = TinyModelConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=3 * args.d_model,
        max_sequence_length=512,
    )
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
    with torch.no_grad():
        model.model.transformer["ff_out"].weight.mul_(args.head_scale)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"full-attention tiny LLaDA model d={args.d_model} layers={args.layers} ({params / 1e6:.1f}M parameters, "
        f"vocab {VOCAB}, head x{args.head_scale:g}); batch {args.batch}, prompts 16-47 tokens; block 32, temperature 1, "
        f"low_confidence, no early exit, tau {args.threshold}; threads={args.threads}; median of {args.repeats}"
    )
    print(
        f"{'C':>4} {'steps':>5} {'variant':>15} {'tok/s':>7} {'x exact':>8} {'NFE':>6} {'tok/step':>8} "
        f"{'mismatch mean':>13} {'max':>7}"
    )
    for gen in (int(c) for c in args.lengths.split(",")):
        for steps in (gen, gen // 4):
            configs = {
                name: SamplerConfig(
                    gen_length=gen,
                    block_length=32,
                    steps=steps,
                    temperature=1.0,
                    remasking="low_confidence",
                    early_exit=False,
                    threshold=args.threshold,
                    **options,
                )
                for name, options in VARIANTS.items()
            }
            times: dict[str, list[float]] = {name: [] for name in configs}
            records: dict[str, TrajectoryBatch] = {}
            for _ in range(args.repeats):
                for name, cfg in configs.items():
                    seconds, records[name] = _run(model, prompts, cfg)
                    times[name].append(seconds)
            exact = statistics.median(times["exact"])
            for name, record in records.items():
                seconds = statistics.median(times[name])
                assert record.forward_passes is not None
                nfe = float(record.forward_passes.mean())
                per_step = gen / float(record.row_steps().mean())
                if name == "exact" or args.no_mismatch:
                    shown = f"{'-':>13} {'-':>7}"
                else:
                    mean, worst = mismatch(model, record, PAD, (PAD,))
                    shown = f"{mean:>13.4f} {worst:>7.3f}"
                print(
                    f"{gen:>4} {steps:>5} {name:>15} {args.batch * gen / seconds:>7.0f} {exact / seconds:>7.2f}x "
                    f"{nfe:>6.1f} {per_step:>8.2f} {shown}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
