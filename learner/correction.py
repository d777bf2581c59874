"""Rollout/learner mismatch: measured on every scored token, corrected by truncated importance weights or masks.

Three distributions meet in a loss (verl's decoupled mode, AReaL's decoupled PPO):

- the behaviour policy mu: what the rollout actually drew each token from (an approximate cache, another
  engine, other numerics); its log-prob is the record's `logprob`;
- the old policy pi_old: the rollout's *weights* as the learner computes them, with the exact recipe of
  learner/logprobs.py and no gradient;
- the current policy pi_theta: the weights being trained.

`none` uses mu as PPO's old policy (the ratio pi_theta / mu then carries the numerics mismatch, and clipping
cuts tokens for it). The correcting modes anchor the PPO ratio at pi_old and weight each token by a function of
rho = pi_old / mu, detached:

    tis       w = min(rho, cap)
    mask      w = rho if low <= rho <= high else 0      (IcePop's M(rho))
    seq_*     the same with rho replaced by the trajectory's geometric mean exp(mean log rho) over its scored tokens

With no cap binding, E_mu[w * grad min(r A, clip(r) A)] at pi_theta = pi_old is E_mu[(pi_theta / mu) A grad log
pi_theta]: the exact policy gradient, tokens drawn by mu. `measure` reports, over the tokens whose pi_old is known,
|log pi_old - log mu| (mean, max), the k3 estimate of KL(mu || pi_old) and the fraction of tokens capped or
masked; and the policy drift |log pi_theta - log pi_old| at the update's first forward (0 for a token sampled
with the weights being trained, the learner's own version; with max_staleness 1 it is one update's move).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from common.config import AlgorithmConfig


@dataclass(frozen=True)
class Correction:
    """`algorithm.rollout_correction` and its bounds."""

    mode: str = "none"
    cap: float = 2.0
    low: float = 0.5
    high: float = 2.0

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig) -> Correction:
        return cls(algorithm.rollout_correction, algorithm.tis_cap, algorithm.mask_low, algorithm.mask_high)

    @property
    def corrects(self) -> bool:
        return self.mode != "none"

    @property
    def sequence(self) -> bool:
        """One ratio per trajectory: a loss micro-batch must then hold whole trajectories."""
        return self.mode.startswith("seq_")


def importance_weights(
    log_ratio: torch.Tensor, known: torch.Tensor, trajectory: torch.Tensor, correction: Correction
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached per-token weights and which tokens the cap or mask changed.

    `log_ratio` is log pi_old - log mu per token, `known` where pi_old was computed (elsewhere the weight is 1),
    `trajectory` each token's trajectory index (for the sequence-level modes, over the tokens given here).
    """
    log_ratio = log_ratio.detach()
    ones = torch.ones_like(log_ratio)
    if not correction.corrects:
        return ones, torch.zeros_like(known)
    log_ratio = torch.where(known, log_ratio, torch.zeros_like(log_ratio))
    if correction.sequence:
        slots = int(trajectory.max()) + 1 if trajectory.numel() else 0
        total = torch.zeros(slots, dtype=log_ratio.dtype, device=log_ratio.device).index_add_(0, trajectory, log_ratio)
        count = torch.zeros(slots, dtype=log_ratio.dtype, device=log_ratio.device).index_add_(
            0, trajectory, known.to(log_ratio.dtype)
        )
        log_ratio = (total / count.clamp(min=1.0))[trajectory]
    ratio = torch.exp(log_ratio)
    if correction.mode.endswith("tis"):
        adjusted = known & (ratio > correction.cap)
        return torch.where(known, ratio.clamp(max=correction.cap), ones), adjusted
    keep = (ratio >= correction.low) & (ratio <= correction.high)
    adjusted = known & ~keep
    return torch.where(known, torch.where(keep, ratio, torch.zeros_like(ratio)), ones), adjusted


@dataclass
class OldPolicy:
    """What a loss call knows of pi_old for its pairs.

    A trajectory sampled with the weights being trained (`fresh`) needs no extra pass: pi_old is the loss's own
    forward, detached (same weights, same inputs). For the others, `logprob` (num_pairs, C) holds pi_old of the
    tokens each pair scores, recomputed under the weights that sampled them (learner/old_policy.py), NaN where
    it was not (then the behaviour log-prob stands in, as under `none`, and the token is not measured).
    """

    fresh: np.ndarray
    logprob: torch.Tensor | None = None

    @classmethod
    def all_fresh(cls, size: int) -> OldPolicy:
        return cls(np.ones(size, dtype=bool))

    def for_tokens(
        self, own: torch.Tensor, trajectory: torch.Tensor, pair: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """pi_old of a micro-batch's tokens: `own` (the loss pass's log-probs, detached) where the trajectory is
        fresh, the recomputed value (at its pair and completion position) elsewhere, NaN where unknown."""
        fresh = torch.from_numpy(np.asarray(self.fresh, dtype=bool)).to(own.device)[trajectory]
        if self.logprob is None:
            return torch.where(fresh, own, torch.full_like(own, float("nan")))
        other = self.logprob[pair.cpu(), position.cpu()].to(own.device)
        return torch.where(fresh, own, other)


@dataclass
class MismatchStats:
    """Sums over scored tokens; `merge` adds micro-batches, accumulation chunks and ranks exactly."""

    tokens: int = 0
    abs_sum: float = 0.0
    max: float = 0.0
    k3_sum: float = 0.0
    adjusted: int = 0
    drift_tokens: int = 0
    drift_sum: float = 0.0
    drift_max: float = 0.0

    def merge(self, other: MismatchStats) -> MismatchStats:
        out = MismatchStats()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(out, f.name, max(a, b) if f.name.endswith("max") else a + b)
        return out

    def summary(self) -> dict[str, float]:
        """The metrics.jsonl fields; means and maxima are NaN over no tokens."""
        nan = float("nan")
        n, d = self.tokens, self.drift_tokens
        return {
            "rollout_mismatch_mean": self.abs_sum / n if n else nan,
            "rollout_mismatch_max": self.max if n else nan,
            "rollout_mismatch_kl": self.k3_sum / n if n else nan,
            "rollout_correction_fraction": self.adjusted / n if n else nan,
            "rollout_mismatch_tokens": float(n),
            "policy_drift_mean": self.drift_sum / d if d else nan,
            "policy_drift_max": self.drift_max if d else nan,
            "policy_drift_tokens": float(d),
        }

    @classmethod
    def from_summary(cls, line: dict[str, float]) -> MismatchStats:
        """Back from `summary` (to reduce over ranks)."""
        n, d = int(line["rollout_mismatch_tokens"]), int(line["policy_drift_tokens"])
        return cls(
            tokens=n,
            abs_sum=line["rollout_mismatch_mean"] * n if n else 0.0,
            max=line["rollout_mismatch_max"] if n else 0.0,
            k3_sum=line["rollout_mismatch_kl"] * n if n else 0.0,
            adjusted=round(line["rollout_correction_fraction"] * n) if n else 0,
            drift_tokens=d,
            drift_sum=line["policy_drift_mean"] * d if d else 0.0,
            drift_max=line["policy_drift_max"] if d else 0.0,
        )


def reduce_summaries(lines: list[dict[str, float]]) -> dict[str, float]:
    """The mismatch fields of several `summary` lines (ranks) as one."""
    total = MismatchStats()
    for line in lines:
        total = total.merge(MismatchStats.from_summary(line))
    return total.summary()


def measure(
    logprob: torch.Tensor, old: torch.Tensor, behaviour: torch.Tensor, known: torch.Tensor, adjusted: torch.Tensor
) -> MismatchStats:
    """One micro-batch's sums over the tokens whose pi_old is `known`: the numerics |log pi_old - log mu| and the
    drift |log pi_theta - log pi_old| (0 for tokens sampled with the weights being trained)."""
    logprob, old, behaviour = logprob.detach(), old.detach(), behaviour.detach()
    diff = (old - behaviour)[known]
    drift = (logprob - old)[known]
    k3 = torch.exp(diff) - diff - 1.0
    return MismatchStats(
        tokens=int(diff.numel()),
        abs_sum=float(diff.abs().sum()),
        max=float(diff.abs().max()) if diff.numel() else 0.0,
        k3_sum=float(k3.sum()),
        adjusted=int(adjusted.sum()),
        drift_tokens=int(drift.numel()),
        drift_sum=float(drift.abs().sum()),
        drift_max=float(drift.abs().max()) if drift.numel() else 0.0,
    )
