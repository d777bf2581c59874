"""Learner throughput: packed (trajectory, timestep) micro-batches against one pass per sampled timestep.

Our loss packs all B*k (trajectory, timestep) pairs into forward/backward passes of up to
`micro_batch_size` rows. Two unpacked baselines run beside it on the same model, record and draws:

- per timestep: one forward/backward per sampled (trajectory, timestep) pair, B*k passes. This is the
  issue's target (packed >= 1.5x); it is the only baseline that differs from packing at k = 1.
- per index: the reference AGRPO loop's shape, one pass per Monte Carlo index j over the B rows at their
  j-th sampled step, k passes. At k = 1 it is the same single pass as packing.

Prints timesteps (pairs) per second and the packed/baseline ratios, measured interleaved in one run.
Run: `.venv/bin/python tests/benchmarks/bench_learner.py`.
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
    print(
        f"{'k':>3} {'pairs':>6} {'passes':>12} {'per timestep/s':>15} {'per index/s':>12} {'packed/s':>9} "
        f"{'vs timestep':>12} {'vs index':>9}"
    )
    for k in (1, 4, 8):
        pairs = sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(k))
        n = len(pairs[0])
        per_pair = [torch.tensor([i]) for i in range(n)]
        per_index = [torch.arange(j, n, k) for j in range(k)]
        packed = [torch.arange(n)]
        (pair_s, pair_passes), (index_s, index_passes), (packed_s, packed_passes) = _timed(
            model,
            batch,
            pairs,
            [(per_pair, 1), (per_index, batch.size), (packed, args.micro_batch_size)],
            args.repeats,
        )
        passes = f"{pair_passes}/{index_passes}/{packed_passes}"
        print(
            f"{k:>3} {n:>6} {passes:>12} {n / pair_s:>15.1f} {n / index_s:>12.1f} {n / packed_s:>9.1f} "
            f"{pair_s / packed_s:>11.2f}x {index_s / packed_s:>8.2f}x"
        )


if __name__ == "__main__":
    main()
