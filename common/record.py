"""The compact trajectory record of the diffusion sampler.

A rollout is a Markov chain of unmasking steps. Recording, per completion position, the step at which
it was committed (`unmask_step`) identifies every intermediate state exactly: x_t is the completion with
every position whose unmask_step >= t replaced by MASK. States are rebuilt from this, never stored, so a
record costs O(C) (or O(C * top_k) with truncation) per trajectory instead of O(C * vocab).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.config import SamplerConfig

NO_TOKEN = -1
"""Padding value of `allowed_ids` rows that hold fewer ids than the widest row."""


@dataclass
class TrajectoryBatch:
    """B trajectories sampled with one sampler setting; arrays are numpy so Ray ships them cheaply.

    `allowed_ids[b, j]` lists the token ids that survived top-k/top-p truncation when position j was
    committed (padded with NO_TOKEN); it is None when sampling used no truncation. Positions filled with
    EOS by the early exit are flagged in `filled`: they were not sampled, carry no log-prob and are
    committed at a step after the last non-EOS commit, so no loss term ever includes them.
    `banned_ids` are the ids the sampler could never draw besides MASK (sorted), which the learner must
    ban too for the ratio to be 1; None in a record saved before they were kept.
    """

    prompt_ids: list[np.ndarray]
    completion_ids: np.ndarray
    unmask_step: np.ndarray
    logprob: np.ndarray
    entropy: np.ndarray
    filled: np.ndarray
    allowed_ids: np.ndarray | None
    sampler: SamplerConfig
    mask_id: int
    eos_id: int
    banned_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        b, c = self.completion_ids.shape
        if len(self.prompt_ids) != b:
            raise ValueError(f"{len(self.prompt_ids)} prompts for {b} completions")
        for name in ("unmask_step", "logprob", "entropy", "filled"):
            if getattr(self, name).shape != (b, c):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {(b, c)}")
        if self.allowed_ids is not None and self.allowed_ids.shape[:2] != (b, c):
            raise ValueError(f"allowed_ids has shape {self.allowed_ids.shape}, expected ({b}, {c}, K)")

    @property
    def size(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def gen_length(self) -> int:
        return int(self.completion_ids.shape[1])

    @property
    def num_steps(self) -> int:
        return self.sampler.steps

    def last_step(self) -> np.ndarray:
        """L_i: the last step that committed a non-EOS token (0 for an all-EOS completion)."""
        non_eos = (self.completion_ids != self.eos_id) & ~self.filled
        steps = np.where(non_eos, self.unmask_step.astype(np.int64), -1)
        return np.maximum(steps.max(axis=1), 0)

    def step_entropy(self) -> np.ndarray:
        """(B, N) sum of rollout entropies of the tokens committed at each step (entropy sampling)."""
        out = np.zeros((self.size, self.num_steps), dtype=np.float64)
        rows = np.repeat(np.arange(self.size), self.gen_length)
        steps = self.unmask_step.reshape(-1).astype(np.int64)
        ent = np.where(self.filled, 0.0, self.entropy).reshape(-1)
        keep = (steps >= 0) & (steps < self.num_steps)
        np.add.at(out, (rows[keep], steps[keep]), ent[keep])
        return out

    def block_of_step(self, steps: np.ndarray) -> np.ndarray:
        """The completion block sampled at each step (blocks share the steps evenly, left to right)."""
        per_block = self.sampler.steps // (self.gen_length // self.sampler.block_length)
        return np.asarray(steps, dtype=np.int64) // per_block

    def state_at(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Completion tokens x_t of `rows` at `steps`: positions committed at or after t are MASK."""
        unmask = self.unmask_step[rows].astype(np.int64)
        return np.where(unmask >= steps[:, None], self.mask_id, self.completion_ids[rows])

    def nbytes(self) -> int:
        """Bytes of the record's arrays (what a Ray transfer moves, give or take pickling)."""
        arrays = [self.completion_ids, self.unmask_step, self.logprob, self.entropy, self.filled]
        arrays += list(self.prompt_ids)
        if self.allowed_ids is not None:
            arrays.append(self.allowed_ids)
        return int(sum(a.nbytes for a in arrays))

    def select(self, rows: np.ndarray | list[int]) -> TrajectoryBatch:
        """A batch of a subset of rows, in the given order."""
        idx = np.asarray(rows, dtype=np.int64)
        return TrajectoryBatch(
            prompt_ids=[self.prompt_ids[i] for i in idx],
            completion_ids=self.completion_ids[idx],
            unmask_step=self.unmask_step[idx],
            logprob=self.logprob[idx],
            entropy=self.entropy[idx],
            filled=self.filled[idx],
            allowed_ids=None if self.allowed_ids is None else self.allowed_ids[idx],
            sampler=self.sampler,
            mask_id=self.mask_id,
            eos_id=self.eos_id,
            banned_ids=self.banned_ids,
        )

    @staticmethod
    def concat(batches: list[TrajectoryBatch]) -> TrajectoryBatch:
        """Stack batches sampled with the same settings (e.g. groups for one learner step)."""
        first = batches[0]
        for b in batches[1:]:
            if b.sampler != first.sampler or b.gen_length != first.gen_length or b.banned_ids != first.banned_ids:
                raise ValueError("cannot concatenate trajectories sampled with different settings")
        allowed = None
        if first.allowed_ids is not None:
            width = max(b.allowed_ids.shape[2] for b in batches)  # type: ignore[union-attr]
            allowed = np.concatenate(
                [
                    np.pad(
                        b.allowed_ids,  # type: ignore[arg-type]
                        ((0, 0), (0, 0), (0, width - b.allowed_ids.shape[2])),  # type: ignore[union-attr]
                        constant_values=NO_TOKEN,
                    )
                    for b in batches
                ]
            )
        return TrajectoryBatch(
            prompt_ids=[p for b in batches for p in b.prompt_ids],
            completion_ids=np.concatenate([b.completion_ids for b in batches]),
            unmask_step=np.concatenate([b.unmask_step for b in batches]),
            logprob=np.concatenate([b.logprob for b in batches]),
            entropy=np.concatenate([b.entropy for b in batches]),
            filled=np.concatenate([b.filled for b in batches]),
            allowed_ids=allowed,
            sampler=first.sampler,
            mask_id=first.mask_id,
            eos_id=first.eos_id,
            banned_ids=first.banned_ids,
        )


@dataclass
class RolloutGroup:
    """G completions of one prompt, sampled on one worker with one weight version.

    Once scored, each sample has its reward, its error (None when it scored cleanly) and, per reward plugin
    that failed on it, that plugin's error (`plugin_errors[i]`: label -> reason; empty when none failed).
    """

    prompt_index: int
    trajectories: TrajectoryBatch
    weight_version: int
    seed: int
    reference: dict[str, Any] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    rewards: np.ndarray | None = None
    reward_errors: list[str | None] = field(default_factory=list)
    plugin_errors: list[dict[str, str]] = field(default_factory=list)
    prompt: str = ""
    """The prompt text the completions continue (for the completion tables of the trackers)."""
    reward_components: list[dict[str, float]] = field(default_factory=list)
    """Per sample, each reward plugin's own score under its label (and the plugins' components)."""


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """A_i = R_i - mean_group(R), optionally / std; rewards has shape (num_groups, G)."""
    adv = rewards - rewards.mean(dim=-1, keepdim=True)
    if scale_by_std:
        adv = adv / (rewards.std(dim=-1, keepdim=True) + eps)
    return adv


_ARRAYS = ("completion_ids", "unmask_step", "logprob", "entropy", "filled", "allowed_ids")


def group_to_state(group: RolloutGroup) -> dict[str, Any]:
    """A checkpointable form (tensors, numbers, strings) of a sampled and rewarded group."""
    t = group.trajectories
    arrays = {name: torch.from_numpy(np.array(getattr(t, name))) for name in _ARRAYS if getattr(t, name) is not None}
    return {
        "prompt_index": group.prompt_index,
        "weight_version": group.weight_version,
        "seed": group.seed,
        "reference": json.dumps(group.reference),
        "texts": list(group.texts),
        "rewards": None if group.rewards is None else torch.from_numpy(np.asarray(group.rewards)),
        "reward_errors": list(group.reward_errors),
        "plugin_errors": [dict(errors) for errors in group.plugin_errors],
        "prompt": group.prompt,
        "reward_components": json.dumps(group.reward_components),
        "prompt_ids": [torch.from_numpy(np.array(p)) for p in t.prompt_ids],
        "arrays": arrays,
        "sampler": t.sampler.model_dump(mode="json"),
        "mask_id": t.mask_id,
        "eos_id": t.eos_id,
        "banned_ids": None if t.banned_ids is None else list(t.banned_ids),
    }


def group_from_state(state: dict[str, Any]) -> RolloutGroup:
    arrays = {name: v.numpy() for name, v in state["arrays"].items()}
    batch = TrajectoryBatch(
        prompt_ids=[p.numpy() for p in state["prompt_ids"]],
        completion_ids=arrays["completion_ids"],
        unmask_step=arrays["unmask_step"],
        logprob=arrays["logprob"],
        entropy=arrays["entropy"],
        filled=arrays["filled"],
        allowed_ids=arrays.get("allowed_ids"),
        sampler=SamplerConfig.model_validate(state["sampler"]),
        mask_id=int(state["mask_id"]),
        eos_id=int(state["eos_id"]),
        banned_ids=None if state.get("banned_ids") is None else tuple(int(i) for i in state["banned_ids"]),
    )
    rewards = state["rewards"]
    return RolloutGroup(
        prompt_index=int(state["prompt_index"]),
        trajectories=batch,
        weight_version=int(state["weight_version"]),
        seed=int(state["seed"]),
        reference=json.loads(state["reference"]),
        texts=list(state["texts"]),
        rewards=None if rewards is None else rewards.numpy(),
        reward_errors=list(state["reward_errors"]),
        plugin_errors=[dict(errors) for errors in state.get("plugin_errors", [])],  # absent before they were kept
        prompt=str(state.get("prompt", "")),
        reward_components=json.loads(state.get("reward_components", "[]")),
    )
