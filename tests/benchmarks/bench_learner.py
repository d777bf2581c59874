"""Learner throughput: packed (trajectory, timestep) micro-batches against one pass per sampled timestep.

The reference AGRPO loop runs one forward/backward per Monte Carlo sample index, each over the B rows
at their sampled step. Our loss packs all B*k pairs into passes of up to `micro_batch_size` rows. Both
variants run here on the same model, record and draws, side by side, and print timesteps (pairs) per
second and the ratio. Run: `.venv/bin/python tests/benchmarks/bench_learner.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Runnable as a plain script (`make bench`) without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from common.record import TrajectoryBatch
from learner.agrpo import agrpo_pairs_loss
from learner.timesteps import sample_timesteps
from rollout.sampler import sample

VOCAB, MASK, EOS, PAD = 64, 63, 62, 61


def _batch(model: torch.nn.Module, rows: int, prompt_len: int, cfg: SamplerConfig) -> TrajectoryBatch:
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 60, (prompt_len - i % 4,), generator=gen).tolist() for i in range(rows)]
    return sample(model, prompts, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(1), banned_ids=(PAD,))


def _run(
    model: torch.nn.Module,
    batch: TrajectoryBatch,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    groups: list[torch.Tensor],
    micro_batch_size: int,
) -> int:
    """Forward/backward every group of pairs; returns the number of forward passes."""
    adv = torch.linspace(-1.0, 1.0, batch.size)
    model.zero_grad(set_to_none=True)
    passes = 0
    for idx in groups:
        stats = agrpo_pairs_loss(
            model,
            batch,
            adv,
            pairs[0][idx],
            pairs[1][idx],
            pairs[2][idx],
            clip_eps=0.2,
            micro_batch_size=micro_batch_size,
            pad_id=PAD,
            banned_ids=(PAD,),
        )
        passes += stats.forward_passes
    return passes


def _timed(
    model: torch.nn.Module,
    batch: TrajectoryBatch,
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    variants: list[tuple[list[torch.Tensor], int]],
    repeats: int,
) -> list[tuple[float, int]]:
    """Median seconds and forward passes of each variant; repeats interleave the variants (fair under load)."""
    times: list[list[float]] = [[] for _ in variants]
    passes = [_run(model, batch, pairs, groups, mbs) for groups, mbs in variants]
    for _ in range(repeats):
        for i, (groups, mbs) in enumerate(variants):
            start = time.perf_counter()
            _run(model, batch, pairs, groups, mbs)
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), p) for t, p in zip(times, passes, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="Trajectories in the learner batch (one group).")
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=128, help="Hidden size of the tiny model.")
    parser.add_argument("--layers", type=int, default=4, help="Transformer blocks of the tiny model.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = TinyModelConfig(d_model=args.d_model, n_layers=args.layers, mlp_hidden_size=3 * args.d_model)
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
    cfg = SamplerConfig(gen_length=32, block_length=8, steps=16, temperature=1.0, remasking="random")
    batch = _batch(model, args.rows, 24, cfg)
    last = torch.from_numpy(batch.last_step())
    print(
        f"model d={shape.d_model} layers={shape.n_layers}; B={batch.size} trajectories, prompt <=24, "
        f"gen {cfg.gen_length}, {cfg.steps} steps; micro_batch_size={args.micro_batch_size}; "
        f"threads={args.threads}"
    )
    print(f"{'k':>3} {'pairs':>6} {'passes':>13} {'per-timestep/s':>15} {'packed/s':>10} {'ratio':>6}")
    for k in (1, 4, 8):
        pairs = sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(k))
        n = len(pairs[0])
        per_step = [torch.arange(j, n, k) for j in range(k)]
        packed = [torch.arange(n)]
        (slow, slow_passes), (fast, fast_passes) = _timed(
            model, batch, pairs, [(per_step, batch.size), (packed, args.micro_batch_size)], args.repeats
        )
        passes = f"{slow_passes} vs {fast_passes}"
        print(f"{k:>3} {n:>6} {passes:>13} {n / slow:>15.1f} {n / fast:>10.1f} {slow / fast:>5.2f}x")


if __name__ == "__main__":
    main()
