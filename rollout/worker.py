"""RolloutWorker: a Ray actor holding a policy copy that samples whole groups and receives new weights.

Ray runs an actor's calls one at a time in submission order, so a `receive_weights` call queued behind
`sample_groups` calls takes effect only between sampler calls, never in the middle of one: the weight
swap happens at a step boundary by construction. Every group is tagged with the version it was sampled
with, which the driver's staleness gate checks.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray
import torch

from common.config import Config, SamplerConfig
from common.metrics import RoleMetrics, run_label
from common.model.loading import load_policy, mask_predictor_logits, no_transformers_progress
from common.record import RolloutGroup
from common.text import decode_completion, encode_text
from common.weight_sync import (
    SyncStats,
    backend_for,
    create_group,
    layout_hash,
    model_checksum,
    pack_parameters,
    receive_weights,
)
from rewards.templates import render_prompt
from rollout.accuracy import evaluate
from rollout.sampler import sample


class NoWeightsError(RuntimeError):
    """The worker (new or restarted) has not received weights yet; the driver syncs it and retries."""


def select_device(gpus: float) -> torch.device:
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


class RolloutWorker:
    """One policy copy; `sample_groups` turns prompt requests into rollout groups."""

    def __init__(self, config: dict[str, Any], index: int) -> None:
        self.config = Config.model_validate(config)
        self.index = index
        self.device = select_device(self.config.cluster.gpus_per_rollout_worker)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(self.config.cluster.cpus_per_rollout_worker)))
        with no_transformers_progress():
            self.policy = load_policy(self.config.model, device=self.device, seed=self.config.seed)
        self.policy.model.eval()
        pack_parameters(self.policy.model)
        self.version = -1
        self.group: Any = None
        self.metrics = RoleMetrics(run_label(self.config))
        self.tags = {"worker": str(index)}
        self.metrics.zero("agrpo_rollout_groups_total", self.tags)
        self.sampling_seconds = 0.0

    def identity(self) -> dict[str, Any]:
        """Identity and the weight layout hash the driver compares with the learner's before any sync."""
        return {
            "index": self.index,
            "pid": os.getpid(),
            "node_ip": ray.util.get_node_ip_address(),
            "version": self.version,
            "layout": layout_hash(self._params()),
        }

    def _params(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.policy.model.named_parameters())

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, generation: int) -> None:
        self.group = create_group(backend_for(self.device), host, port, rank, world_size, generation)

    def receive_weights(self) -> SyncStats:
        """Until this returns the worker holds no valid weights: a failed receive may have landed part of them."""
        bucket = int(self.config.cluster.weight_sync_bucket_mb * 1024**2)
        held, self.version = self.version, -1
        stats = receive_weights(self.group, self._params(), held, bucket)
        self.version = stats.version
        self.metrics.set("agrpo_weight_version", stats.version, self.tags)
        return stats

    def seconds_sampling(self) -> float:
        """Seconds spent sampling since start (the pipeline benchmark's busy fraction)."""
        return self.sampling_seconds

    def checksum(self) -> str:
        return model_checksum([t for _, t in self._params()])

    def sample_groups(self, requests: list[dict[str, Any]]) -> list[RolloutGroup]:
        """Each request is {index, item, seed}: G completions of the item's prompt, one group per request."""
        if self.version < 0:
            raise NoWeightsError(f"rollout-{self.index} has no weights from the learner yet")
        cfg = self.config
        g = cfg.algorithm.group_size
        tok = self.policy.tokenizer
        prompts, texts = [], []
        for req in requests:
            text = render_prompt(cfg.data.task, req["item"], cfg.data.template, tok)
            ids = encode_text(tok, text, f"{cfg.data.task} item {req['index']} prompt")
            prompts.extend([ids] * g)
            texts.append(text)
        generator = torch.Generator(device=self.device).manual_seed(int(requests[0]["seed"]))
        start = time.perf_counter()
        batch = sample(
            self.policy.model,
            prompts,
            cfg.sampler,
            self.policy.mask_id,
            self.policy.eos_id,
            self.policy.pad_id,
            generator,
            banned_ids=self.policy.banned_ids,
            logits_fn=lambda ids, mask: mask_predictor_logits(self.policy, ids, mask),
        )
        elapsed = time.perf_counter() - start
        self.sampling_seconds += elapsed
        self.metrics.set("agrpo_rollout_sampler_steps_per_second", cfg.sampler.steps / elapsed, self.tags)
        self.metrics.set("agrpo_rollout_tokens_per_forward", len(prompts) * cfg.sampler.gen_length, self.tags)
        self.metrics.inc("agrpo_rollout_groups_total", len(requests), self.tags)
        groups = []
        for i, req in enumerate(requests):
            rows = np.arange(i * g, (i + 1) * g)
            traj = batch.select(rows)
            groups.append(
                RolloutGroup(
                    prompt_index=int(req["index"]),
                    trajectories=traj,
                    weight_version=self.version,
                    seed=int(req["seed"]),
                    reference=dict(req["item"]),
                    texts=[decode_completion(tok, row, self.policy.eos_id) for row in traj.completion_ids],
                    prompt=texts[i],
                )
            )
        return groups

    def evaluate(self, items: list[dict[str, Any]], sampler: dict[str, Any], seed: int) -> dict[str, Any]:
        """Held-out accuracy of the weights this worker holds (see rollout/accuracy.py)."""
        if self.version < 0:
            raise NoWeightsError(f"rollout-{self.index} has no weights from the learner yet")
        cfg = SamplerConfig.model_validate(sampler)
        data = self.config.data
        return evaluate(
            self.policy,
            items,
            data.task,
            data.template,
            cfg,
            cfg.batch_size,
            seed,
            protocol=self.config.evaluation.protocol,
            grade_timeout_s=self.config.rewards.grade_timeout_s,
        )
