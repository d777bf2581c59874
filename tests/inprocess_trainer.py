"""A single-process training loop for tests: sample -> reward -> advantages -> loss -> AdamW step.

It wires the same pieces the distributed system uses (rollout/sampler.py, the AGRPO or diffu-GRPO
loss, group advantages) without Ray or DeepSpeed, so learning can be checked end to end in a unit
test. Rewards come from a plain Python function of the completion token ids.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from common.config import Config
from common.record import TrajectoryBatch, group_advantages
from learner.agrpo import model_device
from learner.logprobs import LogitsFn, model_logits
from learner.optimizer import make_optimizer, make_scheduler
from learner.update import policy_update
from rollout.sampler import sample

RewardFn = Callable[[list[int]], float]


class InProcessTrainer:
    """Owns the optimizer and the random streams; `step()` runs one rollout batch and its update(s).

    Each step takes `learner.groups_per_step` prompts (cycling through `prompts`), samples G completions
    of each, and splits the groups into `learner.grad_accumulation` chunks whose gradients accumulate
    into one optimizer step (diffu-GRPO: one optimizer step per inner iteration). With beta > 0 the
    reference is a frozen copy of the model as it was at construction, unless one is given.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        prompts: Sequence[Sequence[int]],
        reward_fn: RewardFn,
        *,
        mask_id: int,
        eos_id: int,
        pad_id: int,
        banned_ids: Sequence[int] = (),
        reference: nn.Module | None = None,
    ) -> None:
        if not prompts:
            raise ValueError("InProcessTrainer needs at least one prompt")
        self.model = model.eval()
        self.config = config
        self.prompts = [list(p) for p in prompts]
        self.reward_fn = reward_fn
        self.mask_id, self.eos_id, self.pad_id = mask_id, eos_id, pad_id
        self.banned_ids = tuple(banned_ids)
        learner = config.learner
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], learner)
        self.scheduler = make_scheduler(self.optimizer, learner)
        device = model_device(model)
        self.sample_generator = torch.Generator(device=device).manual_seed(config.seed)
        self.loss_generator = torch.Generator().manual_seed(config.seed + 1)
        self.mask_seeds = np.random.default_rng(config.seed + 2)
        self.reference_fn: LogitsFn | None = None
        if self._beta() > 0:
            ref = reference if reference is not None else copy.deepcopy(model)
            ref.eval().requires_grad_(False)
            self.reference_fn = model_logits(ref)
        self.steps_done = 0
        self._next_prompt = 0

    def _beta(self) -> float:
        algo = self.config.algorithm
        return algo.beta if algo.name == "agrpo" else algo.diffu_grpo.beta

    def _take_prompts(self) -> list[list[int]]:
        out = []
        for _ in range(self.config.learner.groups_per_step):
            out.append(self.prompts[self._next_prompt % len(self.prompts)])
            self._next_prompt += 1
        return out

    def _rollout(self) -> tuple[TrajectoryBatch, torch.Tensor]:
        group = self.config.algorithm.group_size
        prompts = [p for p in self._take_prompts() for _ in range(group)]
        batch = sample(
            self.model,
            prompts,
            self.config.sampler,
            self.mask_id,
            self.eos_id,
            self.pad_id,
            self.sample_generator,
            banned_ids=self.banned_ids,
        )
        rewards = torch.tensor([float(self.reward_fn(row.tolist())) for row in batch.completion_ids])
        return batch, rewards

    def _optimizer_step(self) -> dict[str, float]:
        lr = float(self.optimizer.param_groups[0]["lr"])
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.learner.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm), "lr": lr}

    def step(self) -> dict[str, float]:
        """One rollout batch and its update; returns reward, loss and learner statistics."""
        start = time.perf_counter()
        batch, rewards = self._rollout()
        sampled = time.perf_counter()
        algo = self.config.algorithm
        advantages = group_advantages(rewards.view(-1, algo.group_size), algo.scale_advantages).reshape(-1)
        seeds = []
        if algo.name == "diffu_grpo":
            seeds = [int(s) for s in self.mask_seeds.integers(0, 2**31 - 1, algo.diffu_grpo.inner_iterations)]
        self.optimizer.zero_grad(set_to_none=True)
        stats = policy_update(
            self.model,
            batch,
            advantages,
            self.config,
            pad_id=self.pad_id,
            banned_ids=self.banned_ids,
            backward=lambda loss, last: loss.backward(),
            optimizer_step=self._optimizer_step,
            generator=self.loss_generator,
            mask_seeds=seeds,
            ref_logits_fn=self.reference_fn,
        )
        self.steps_done += 1
        return {
            "step": float(self.steps_done),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **stats,
            "sample_seconds": sampled - start,
            "learn_seconds": time.perf_counter() - sampled,
        }
