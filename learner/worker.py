"""LearnerWorker: one DeepSpeed rank as a Ray actor, a thin shell around LearnerEngine and policy_update.

Rank 0 is also the sender of the weight broadcast. Randomness of an update (timestep draws, diffu-GRPO mask
seeds) is derived from (seed, step, rank), so an update depends only on its inputs and a resumed run repeats
the uninterrupted one exactly; the torch RNG (LoRA dropout) is checkpointed per rank.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from safetensors.torch import load_file

from common.checkpoint import load_state, save_state
from common.config import Config
from common.errors import CheckpointError
from common.metrics import RoleMetrics, run_label
from common.model.loading import load_policy, mask_predictor_logits, no_transformers_progress, resolve_dtype
from common.model.saving import save_model_directory
from common.record import RolloutGroup, TrajectoryBatch, group_advantages
from common.seeding import derived_seed
from common.weight_sync import SyncStats, backend_for, create_group, layout_hash, listening_socket, model_checksum
from learner.engine import LearnerEngine, init_learner_distributed
from learner.logprobs import LogitsFn
from learner.lora import ADAPTER_DIR, save_adapter
from learner.old_policy import WeightVersions
from learner.update import policy_update
from learner.weight_history import WeightHistory

ROLLOUT_WEIGHTS = "rollout_weights"
"""The checkpoint part (rank 0's directory) holding the kept older weight versions."""


class _EngineCall:
    """Makes a DeepSpeed engine's forward look like the model to `mask_predictor_logits`."""

    def __init__(self, engine: LearnerEngine, config: Any) -> None:
        self.engine, self.config = engine, config

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine.forward(*args, **kwargs)


def rng_state() -> dict[str, Any]:
    """The process's torch, numpy and python RNG states in checkpointable form."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class LearnerWorker:
    def __init__(self, config: dict[str, Any], rank: int, world_size: int) -> None:
        self.config = Config.model_validate(config)
        self.rank, self.world_size = rank, world_size
        gpus = self.config.cluster.gpus_per_learner
        self.device = torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(self.config.cluster.cpus_per_learner)))
        self.version = 0
        self.group: Any = None
        self.metrics = RoleMetrics(run_label(self.config))
        self.listeners: dict[int, socket.socket] = {}

    def reserve_address(self) -> tuple[str, int]:
        """This node's IP and a port listening there: the DeepSpeed world's rendezvous, or a weight-group store."""
        sock = listening_socket(ray.util.get_node_ip_address())
        host, port = sock.getsockname()[:2]
        self.listeners[port] = sock
        return host, port

    def _listen_fd(self, port: int) -> int | None:
        """The reserved socket of `port`, handed over to the store that serves it (rank 0 only)."""
        sock = self.listeners.pop(port, None)
        return sock.detach() if sock is not None else None

    def init_engine(self, master_addr: str, master_port: int) -> None:
        os.environ.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK="0",
        )
        init_learner_distributed(backend_for(self.device), listen_fd=self._listen_fd(master_port))
        cfg = self.config
        with no_transformers_progress():
            self.policy = load_policy(cfg.model, device=self.device, seed=cfg.seed)
        dtype = resolve_dtype(cfg.model.dtype, self.device)
        self.engine = LearnerEngine(
            self.policy.model, cfg.learner, self.rank, self.world_size, self.device, dtype, seed=cfg.seed
        )
        self.bucket_bytes = int(cfg.cluster.weight_sync_bucket_mb * 1024**2)
        self.reference = self._reference_logits(dtype)
        self.history = self._weight_history()

    def _weight_history(self) -> WeightHistory | None:
        """The last `max_staleness` weight versions, when stale groups need their exact pi_old (a correction, or
        the mismatch metrics); None on-policy (max_staleness 0), where every group has the current weights."""
        algo, staleness = self.config.algorithm, self.config.rollout.max_staleness
        wanted = algo.name == "agrpo" and (algo.rollout_correction != "none" or algo.measure_mismatch)
        if not wanted or staleness == 0:
            return None
        engine = self.engine
        return WeightHistory(engine.trainable_state, engine.load_trainable_state, staleness, collective=engine.zero3)

    def _reference_logits(self, dtype: torch.dtype) -> LogitsFn | None:
        """The frozen starting policy of the KL term (beta > 0), or None without one.

        With LoRA it is the trained module with its adapters switched off (no second copy). With full
        fine-tuning it is a frozen copy of `model.path`, a second model in memory as in d1 (TRL's reference
        model); after a resume it is still the starting policy, never the trained weights.
        """
        cfg = self.config
        beta = cfg.algorithm.beta if cfg.algorithm.name == "agrpo" else cfg.algorithm.diffu_grpo.beta
        if beta <= 0:
            return None
        shift = self.policy.logits_shift
        if cfg.learner.lora.enabled:
            module = self.engine.module

            def adapters_off(
                input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
            ) -> torch.Tensor:
                with module.disable_adapter():
                    return mask_predictor_logits(module, input_ids, attention_mask, shift, position_ids)

            return adapters_off
        frozen = load_policy(cfg.model, device=self.device, seed=cfg.seed).model.to(dtype=dtype)
        frozen.eval().requires_grad_(False)

        def reference(
            input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            return mask_predictor_logits(frozen, input_ids, attention_mask, shift, position_ids)

        return reference

    def _logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The policy's logits through DeepSpeed's forward (its ZeRO hooks), aligned as the sampler sees them
        (a block mask with `position_ids` comes back unshifted, see `mask_predictor_logits`)."""
        return mask_predictor_logits(
            _EngineCall(self.engine, self.policy.model.config),
            input_ids,
            attention_mask,
            self.policy.logits_shift,
            position_ids,
        )

    def train_step(
        self, groups: list[RolloutGroup], step: int, share_weight: float = 1.0, older: list[int] | None = None
    ) -> dict[str, float]:
        """One update on this rank's share of whole groups.

        `share_weight` = world_size x (this rank's groups / the step's groups): the loss is a mean over this rank's
        trajectories and DeepSpeed averages the ranks, so the weight makes the result the mean over all of them.
        `older` lists the weight versions below this rank's own of all the step's groups (every rank's share): each
        rank swaps to each of them in turn to recompute pi_old, a collective under ZeRO-3.
        """
        cfg = self.config
        start = time.perf_counter()
        if self.history is not None:
            self.history.record(self.version)
        sampled_with = WeightVersions(
            np.concatenate([np.full(g.trajectories.size, g.weight_version) for g in groups]),
            self.version,
            self.history,
            older,
        )
        batch = TrajectoryBatch.concat([g.trajectories for g in groups])
        rewards = torch.tensor(np.stack([g.rewards for g in groups]), dtype=torch.float32)
        advantages = group_advantages(rewards, cfg.algorithm.scale_advantages).reshape(-1)
        generator = torch.Generator().manual_seed(derived_seed(cfg.seed, 2, step, self.rank))
        inner = cfg.algorithm.diffu_grpo.inner_iterations if cfg.algorithm.name == "diffu_grpo" else 0
        seeds = [derived_seed(cfg.seed, 3, step, i) % 2**31 for i in range(inner)]
        self.engine.module.train()
        stats = policy_update(
            self.engine.module,
            batch,
            advantages,
            cfg,
            pad_id=self.policy.pad_id,
            banned_ids=self.policy.banned_ids,
            backward=lambda loss, last: self.engine.backward(loss * share_weight, last),
            optimizer_step=self.engine.step,
            generator=generator,
            mask_seeds=seeds,
            logits_fn=self._logits,
            ref_logits_fn=self.reference,
            sampled_with=sampled_with,
        )
        self.version += 1
        seconds = time.perf_counter() - start
        stats["seconds"] = seconds
        stats["timesteps_per_s"] = stats["pairs"] / seconds
        stats["tokens_per_s"] = stats["tokens"] / seconds
        if self.rank == 0:
            m = self.metrics
            m.set("agrpo_learner_loss", stats["loss"])
            m.set("agrpo_learner_grad_norm", stats["grad_norm"])
            m.set("agrpo_learner_lr", stats["lr"])
            m.set("agrpo_learner_clip_fraction", stats["clip_fraction"])
            m.set("agrpo_rollout_mismatch_mean", stats["rollout_mismatch_mean"])
            m.set("agrpo_rollout_mismatch_max", stats["rollout_mismatch_max"])
            m.set("agrpo_rollout_mismatch_kl", stats["rollout_mismatch_kl"])
            m.set("agrpo_rollout_mismatch_corrected_fraction", stats["rollout_correction_fraction"])
            m.set("agrpo_policy_drift_mean", stats["policy_drift_mean"])
            m.set("agrpo_policy_drift_max", stats["policy_drift_max"])
            m.observe("agrpo_learner_step_seconds", seconds)
            m.set("agrpo_learner_timesteps_per_second", stats["timesteps_per_s"] * self.world_size)
            m.set("agrpo_learner_tokens_per_second", stats["tokens_per_s"] * self.world_size)
        return stats

    # Weight broadcast (rank 0 sends; under ZeRO-3 every rank joins the per-bucket gathers).

    def weight_layout(self) -> int:
        return layout_hash(self.engine.full_weights.named())

    def join_weight_group(self, port: int, world_size: int, generation: int) -> None:
        host = ray.util.get_node_ip_address()
        self.group = create_group(
            backend_for(self.device), host, port, 0, world_size, generation, listen_fd=self._listen_fd(port)
        )

    def broadcast_weights(self) -> SyncStats:
        group = self.group if self.rank == 0 else None
        return self.engine.full_weights.send(group, self.version, self.bucket_bytes)

    def checksum(self) -> str:
        return model_checksum(list(self.engine.full_state_dict().values()))

    # Checkpoints: rank 0 writes the HF model directory; every rank writes its own optimizer state.

    def save_model(self, directory: str) -> None:
        """Collective under ZeRO-3 (call on every rank); rank 0 writes the model directory (common/model/saving.py:
        merged weights under LoRA) and, under LoRA, the PEFT adapter in its `adapter/` subdirectory."""
        state = self.engine.full_state_dict()
        adapters = self.engine.model_state() if self.config.learner.lora.enabled else None
        if self.rank == 0:
            if adapters is not None:
                path = self.config.model.path
                base = None if path == "tiny" else str(Path(path).expanduser().resolve())
                save_adapter(self.engine.module, adapters, Path(directory) / ADAPTER_DIR, base)
            with no_transformers_progress():
                save_model_directory(self.policy.model, self.policy.tokenizer, directory, state_dict=state)

    def save_state(self, directory: str) -> None:
        state: dict[str, Any] = {
            "version": self.version,
            "optimizer": self.engine.optimizer_state(),
            "rng": rng_state(),
        }
        if self.config.learner.lora.enabled:
            state["adapters"] = self.engine.model_state()
        save_state(Path(directory), "state", state)
        if self.history is not None and self.rank == 0:
            # Every rank keeps the same versions; rank 0 stores them once and every rank reads them back.
            save_state(Path(directory), ROLLOUT_WEIGHTS, self.history.state(self.version))

    def load_model(self, directory: str) -> None:
        """Load the full weights (every rank); under LoRA the adapters come from `load_state` instead."""
        if self.config.learner.lora.enabled:
            return
        files = sorted(Path(directory).glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"checkpoint model {directory}: no safetensors files")
        weights: dict[str, torch.Tensor] = {}
        for f in files:
            weights.update(load_file(str(f)))
        self.engine.load_model_state(weights)

    def load_state(self, directory: str) -> None:
        state = load_state(Path(directory), "state")
        if self.config.learner.lora.enabled:
            self.engine.load_model_state(state["adapters"])
        self.engine.load_optimizer_state(state["optimizer"])
        set_rng_state(state["rng"])
        self.version = int(state["version"])
        kept = Path(directory).parent / "learner-0"
        if self.history is not None and (kept / f"{ROLLOUT_WEIGHTS}.json").is_file():
            self.history.load_state(load_state(kept, ROLLOUT_WEIGHTS))
