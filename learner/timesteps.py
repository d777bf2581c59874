"""Which (trajectory, timestep) pairs the AGRPO loss evaluates, and with what weight.

The objective averages a per-step term S_i(t) over t = 0..L_i for each trajectory. Evaluating every step
costs one forward/backward per step, so AGRPO draws k steps per trajectory and weights each drawn pair by
a coefficient chosen so that, for ANY per-step term,

    E[ sum over row i's pairs of coef * S_i(t) ] = (1/(L_i+1)) * sum_{t=0}^{L_i} S_i(t).

Everything here is pure and driven by an explicit generator, so a learner rank can reproduce its draws.
The uniform-to-step map is exposed on its own (`timesteps_from_uniform`) because unbiasedness is a
property of that map alone: with u ~ U(0,1) marginally (true for both i.i.d. and low-discrepancy draws),
P(t) * coef(t) * k = 1/(L_i+1) for every t <= L_i.
"""

from __future__ import annotations

from typing import Literal

import torch

ENTROPY_FLOOR = 1e-8
"""Added to every step's entropy so steps of zero entropy keep a non-zero probability (unbiasedness)."""

Scheme = Literal["uniform", "low_discrepancy"]
Weighting = Literal["uniform", "entropy"]


def draw_uniforms(num_rows: int, k: int, scheme: Scheme, generator: torch.Generator) -> torch.Tensor:
    """(num_rows, k) numbers in [0, 1), each marginally U(0, 1).

    Low-discrepancy (arXiv 2409.02908, app. G.2) puts exactly one of the S = num_rows * k numbers in each
    stratum [s/S, (s+1)/S) and shuffles the strata over the batch, so the batch covers the unit interval
    evenly while each number on its own is still uniform, which keeps the estimator unbiased.
    """
    total = num_rows * k
    u = torch.rand(total, generator=generator, dtype=torch.float64)
    if scheme == "low_discrepancy":
        u = (torch.randperm(total, generator=generator).to(torch.float64) + u) / total
    return u.view(num_rows, k)


def step_probabilities(last_step: torch.Tensor, step_entropy: torch.Tensor) -> torch.Tensor:
    """(B, N) sampling distribution p_i(t) ∝ 1e-8 + entropy of step t for t <= L_i, zero after L_i."""
    steps = torch.arange(step_entropy.shape[1], device=step_entropy.device)
    valid = steps[None, :] <= last_step[:, None]
    weights = torch.where(valid, step_entropy.to(torch.float64).clamp(min=0.0) + ENTROPY_FLOOR, 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def timesteps_from_uniform(
    u: torch.Tensor,
    last_step: torch.Tensor,
    weighting: Weighting,
    step_entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map (B, k) uniforms to steps and coefficients (both (B, k)).

    Uniform weighting: t = floor(u * (L_i+1)), coef = 1/k. (floor(u * L_i), used by the first public
    version, never reaches t = L_i and biases the estimate.) Entropy weighting: t is the inverse CDF of
    p_i at u and coef = (1/(L_i+1)) / p_i(t) / k, the importance weight back to the uniform average.
    """
    k = u.shape[1]
    span = (last_step.to(torch.float64) + 1.0)[:, None]
    if weighting == "uniform":
        steps = torch.floor(u * span).long()
        steps = torch.minimum(steps, last_step[:, None])
        coef = torch.full(u.shape, 1.0 / k, dtype=torch.float64, device=u.device)
        return steps, coef
    if step_entropy is None:
        raise ValueError("entropy weighting needs the (B, N) step entropies of the rollout")
    probs = step_probabilities(last_step, step_entropy)
    cdf = probs.cumsum(dim=1)
    steps = torch.searchsorted(cdf, u.contiguous(), right=True)
    # Rounding can leave cdf[L_i] a hair below 1; a u above it belongs to the last valid step.
    steps = torch.minimum(steps, last_step[:, None])
    coef = (1.0 / span) / probs.gather(1, steps) / k
    return steps, coef


def sample_timesteps(
    last_step: torch.Tensor,
    k: int | Literal["all"],
    scheme: Scheme,
    weighting: Weighting,
    step_entropy: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat (rows, steps, coef) of the pairs to evaluate; row-major, so a row's pairs are contiguous.

    `k="all"` enumerates t = 0..L_i with coef 1/(L_i+1): the exact sum the estimator targets.
    """
    last_step = last_step.long()
    if last_step.ndim != 1:
        raise ValueError(f"last_step has shape {tuple(last_step.shape)}: expected (B,)")
    if bool((last_step < 0).any()):
        raise ValueError("last_step must be >= 0 for every trajectory")
    if step_entropy is not None and bool((last_step >= step_entropy.shape[1]).any()):
        raise ValueError(f"last_step reaches {int(last_step.max())}: step_entropy has {step_entropy.shape[1]} steps")
    num_rows = last_step.shape[0]
    if k == "all":
        counts = last_step + 1
        rows = torch.repeat_interleave(torch.arange(num_rows), counts)
        starts = torch.cumsum(counts, 0) - counts
        steps = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
        coef = torch.repeat_interleave(1.0 / counts.to(torch.float64), counts)
        return rows, steps, coef
    u = draw_uniforms(num_rows, k, scheme, generator)
    steps, coef = timesteps_from_uniform(u, last_step, weighting, step_entropy)
    rows = torch.arange(num_rows).repeat_interleave(k)
    return rows, steps.reshape(-1), coef.reshape(-1)
