"""Learner throughput of a block-causal model: composite sequences against per-timestep rows, side by side.

Both score the same record and the same sampled (trajectory, timestep) pairs and give the same loss and
gradient (tests/unit/test_composite.py). Per-timestep rows run one [prompt, x_t] row of P + C tokens per pair;
composite rows run one row per trajectory, [prompt, completion, k noisy blocks], P + C + k*BL tokens for its k
pairs. Both pack `micro_batch_size` pairs per forward/backward. Prints (trajectory, timestep) pairs per second
of both and their ratio, interleaved in one run.

    .venv/bin/python tests/benchmarks/bench_block_learner.py [--threads 1] [--gen 64 --block 8 --steps 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from common.record import TrajectoryBatch
from learner.agrpo import agrpo_pairs_loss
from learner.timesteps import sample_timesteps
from rollout.sampler import sample

VOCAB, MASK, EOS, PAD = 64, 63, 62, 61


def _run(model: torch.nn.Module, batch: TrajectoryBatch, pairs: tuple, composite: bool, mbs: int) -> int:
    model.zero_grad(set_to_none=True)
    stats = agrpo_pairs_loss(
        model,
        batch,
        torch.linspace(-1.0, 1.0, batch.size),
        *pairs,
        clip_eps=0.2,
        micro_batch_size=mbs,
        pad_id=PAD,
        banned_ids=(PAD,),
        composite=composite,
    )
    return stats.forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="Trajectories in the learner batch (one group).")
    parser.add_argument("--gen", type=int, default=64, help="Completion length C.")
    parser.add_argument("--block", type=int, default=8, help="Block length BL (= the model's block size).")
    parser.add_argument("--steps", type=int, default=32, help="Sampling steps N.")
    parser.add_argument("--prompt", type=int, default=24, help="Longest prompt (rows vary by up to 3 tokens).")
    parser.add_argument("--micro-batch-size", type=int, default=64, help="Pairs per forward/backward.")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = TinyModelConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        mlp_hidden_size=3 * args.d_model,
        max_sequence_length=1024,
        attention="block_causal",
        block_size=args.block,
    )
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
    cfg = SamplerConfig(gen_length=args.gen, block_length=args.block, steps=args.steps, temperature=1.0)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 60, (args.prompt - i % 4,), generator=gen).tolist() for i in range(args.rows)]
    batch = sample(model, prompts, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(1), banned_ids=(PAD,))
    last = torch.from_numpy(batch.last_step())
    print(
        f"block-causal tiny model d={args.d_model} layers={args.layers}; B={batch.size} trajectories, prompt <="
        f"{args.prompt}, C={args.gen}, BL={args.block}, N={args.steps}; micro_batch_size={args.micro_batch_size} "
        f"pairs; threads={args.threads}; median of {args.repeats}, interleaved"
    )
    print(f"{'k':>3} {'pairs':>6} {'passes':>8} {'per timestep/s':>15} {'composite/s':>12} {'speedup':>8}")
    for k in (4, 8):
        pairs = sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(k))
        n = len(pairs[0])
        passes = [_run(model, batch, pairs, composite, args.micro_batch_size) for composite in (False, True)]
        times: list[list[float]] = [[], []]
        for _ in range(args.repeats):
            for i, composite in enumerate((False, True)):
                start = time.perf_counter()
                _run(model, batch, pairs, composite, args.micro_batch_size)
                times[i].append(time.perf_counter() - start)
        rows_s, comp_s = (statistics.median(t) for t in times)
        print(
            f"{k:>3} {n:>6} {passes[0]:>3}/{passes[1]:<4} {n / rows_s:>15.1f} {n / comp_s:>12.1f} "
            f"{rows_s / comp_s:>7.2f}x"
        )


if __name__ == "__main__":
    main()
