"""One learner rank's DeepSpeed engine: LoRA, AdamW + schedule, gradient accumulation, weights, state.

Gradient semantics. The loss code calls `backward(loss, last)` once per packed micro-batch, any number of
times per optimizer step, with `last=True` on the final one, then `step()`. Gradients of all micro-batches
add up on each rank; DeepSpeed then averages across ranks, so the global gradient is

    g = (1 / world_size) * sum_over_ranks sum_over_microbatches grad(loss_micro)

Each rank divides its loss by its *own* trajectory count, so every rank carries an equal share of the step
whatever its trajectory count; the driver hands each rank the same number of groups, which makes this the
mean over all trajectories. Gradient clipping (`grad_clip`) applies to the norm of `g`; `step()` reports that
norm before clipping.

How DeepSpeed is told where the step ends: `gradient_accumulation_steps` stays 1 (no 1/GAS loss scaling)
and the boundary is set per backward with `engine.set_gradient_accumulation_boundary(last)` (DeepSpeed
0.19.8 `runtime/engine.py`). ZeRO 0 and 1 all-reduce once, in the epilogue of the boundary backward
(`allreduce_gradients` -> `buffered_allreduce_fallback` / `reduce_gradients`). ZeRO 2 and 3 partition
gradients, so they reduce-scatter each micro-batch's gradients as they are produced and sum the reduced
shards; the result is the same mean (reduction is linear), with one reduction per micro-batch.

The optimizer is `torch.optim.AdamW` (DeepSpeed's FusedAdam/CPUAdam would JIT-compile for about a minute),
passed in with `zero_allow_untested_optimizer`; the learning rate is a torch `LambdaLR`: linear warmup over
`ceil(warmup_ratio * steps)` steps (the first step of a warmup runs at lr 0, as in HF/TRL), then cosine to 0
at `steps` (or constant). Training is bf16 only on CUDA with a bf16 dtype, float32 otherwise; no fp16.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from torch import nn

from common.config import LearnerConfig
from common.errors import CheckpointError, ConfigError
from common.weight_sync import pack_parameters
from learner import optim_state
from learner.full_weights import FullWeights, load_module_state, module_state
from learner.lora import apply_lora
from learner.optimizer import make_optimizer, make_scheduler

STATE_BUCKET_BYTES = 256 * 1024**2
_NEVER_PRINT = 10**12


def deepspeed_config(cfg: LearnerConfig, bf16: bool) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": _NEVER_PRINT,
        "wall_clock_breakdown": False,
    }


def init_learner_distributed(backend: str, timeout_s: float = 1800.0, listen_fd: int | None = None) -> None:
    """Join the learner world from MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK set by the caller.

    The world is initialised here, on a TCPStore that rank 0 serves from `listen_fd` when given (a socket
    listening on the node's Ray address only; torch's own store would listen on every interface); DeepSpeed
    then adopts the initialised world. DeepSpeed's first init on a CPU machine JIT-compiles its shared-memory
    comm op (about 40 s, then cached in ~/.cache/torch_extensions); 0.19.8 has no supported switch to skip it.
    """
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"learner backend {backend!r}: expected 'gloo' (CPU) or 'nccl' (GPU)")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK") if k not in os.environ]
    if missing:
        raise ConfigError(f"learner distributed init: environment variables {missing} are not set")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0,
        timeout=timeout,
        wait_for_workers=False,
        master_listen_fd=listen_fd if rank == 0 else None,
    )
    extra: dict[str, Any] = {}
    if backend == "nccl" and world_size > 1:
        extra["device_id"] = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # as DeepSpeed would bind it
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout, **extra)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timeout)


def uses_bf16(device: torch.device, dtype: torch.dtype) -> bool:
    """True for bf16 training; float32 is the only other supported dtype."""
    if dtype == torch.bfloat16 and device.type == "cuda":
        return True
    if dtype == torch.float32:
        return False
    raise ConfigError(
        f"model.dtype = {str(dtype).removeprefix('torch.')}: the learner trains in bfloat16 on CUDA or float32 "
        f"(device {device.type})"
    )


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on transformers' gradient checkpointing (`learner.gradient_checkpointing`), before LoRA wraps the model.

    Non-reentrant checkpointing: the reentrant kind gives no gradient to a block whose inputs need none, which
    is every block under LoRA (the embeddings are frozen), unless the inputs are forced to require grad.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"learner.gradient_checkpointing = true: {type(model).__name__} does not support gradient "
            "checkpointing; set it to false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; 4.x has only the old one
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class LearnerEngine:
    """DeepSpeed engine of one learner rank (call `init_learner_distributed` first).

    `model` must hold the same weights on every rank (e.g. built or loaded with the same seed); `seed` fixes
    the LoRA adapters' initial values.
    """

    def __init__(
        self,
        model: nn.Module,
        learner_cfg: LearnerConfig,
        rank: int,
        world_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        seed: int = 0,
    ) -> None:
        self.cfg = learner_cfg
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        bf16 = uses_bf16(self.device, dtype)
        self.lora = learner_cfg.lora.enabled
        if learner_cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if self.lora:
            model = apply_lora(model, learner_cfg.lora, seed)
        model = model.to(device=self.device, dtype=dtype)
        if not self.lora and learner_cfg.zero_stage == 0:
            # Weight-sync buckets then leave without a copy. ZeRO 1/2 flatten the parameters into buffers of
            # their own, in the same order, so they need no packing (and a model-sized copy here would only
            # raise peak memory); ZeRO-3 partitions them and the sync gathers anyway.
            pack_parameters(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable, learner_cfg)
        scheduler = make_scheduler(optimizer, learner_cfg)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(learner_cfg, bf16)
        )
        self.zero3 = learner_cfg.zero_stage == 3
        self._base = optim_state.base_optimizer(self.engine.optimizer)
        self.full_weights = FullWeights(self.engine.module, self.zero3)
        self._boundary_done = False
        self._forward_seen = False

    @property
    def module(self) -> nn.Module:
        """The trained module (a peft model when LoRA is on); call `forward` for DeepSpeed's hooks."""
        return self.engine.module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The policy's forward through DeepSpeed; each micro-batch's forward must precede its backward."""
        self._forward_seen = True
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate this micro-batch's gradients; `last` closes the step (see the module docstring)."""
        if self._boundary_done:
            raise RuntimeError("backward after the last micro-batch of a step: call step() first")
        if not self._forward_seen:
            # DeepSpeed's ZeRO optimizers start a new micro-batch in forward(); two backwards in a row would
            # make ZeRO-3 overwrite the first one's gradient instead of adding to it.
            raise RuntimeError("backward without a forward() since the previous backward: interleave them")
        self._forward_seen = False
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)
        self._boundary_done = last

    def step(self) -> dict[str, float]:
        """One optimizer update; returns the pre-clip global grad norm and the lr this update used."""
        if not self._boundary_done:
            raise RuntimeError("step() before a backward with last=True")
        lr = float(self._base.param_groups[0]["lr"])
        # A bare torch optimizer (ZeRO 0, float32) leaves no norm behind; the averaged grads are in place here.
        own_norm = self._local_grad_norm() if self.engine.optimizer is self._base else None
        self.engine.step()
        self._boundary_done = False
        norm = own_norm if own_norm is not None else float(self.engine.get_global_grad_norm())
        return {"grad_norm": norm, "lr": lr}

    def _local_grad_norm(self) -> float:
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0)) if grads else 0.0

    # The plain model's full weights (`self.full_weights`): sent to rollout workers, saved as HF checkpoints.

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain model's weights (merged under LoRA) on CPU, for `save_pretrained`; collective under ZeRO-3."""
        return self.full_weights.state_dict(STATE_BUCKET_BYTES)

    # The trainable weights of a version, kept to score stale groups under the weights that sampled them.

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the trained parameters under the module's names (LoRA: the adapters); collective
        under ZeRO-3."""
        return module_state(self.engine.module, self.zero3, trainable_only=True, bucket_bytes=STATE_BUCKET_BYTES)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put `trainable_state()` output back into the module's parameters, leaving DeepSpeed's fp32 masters and
        the optimizer alone (a temporary swap; restore the current weights before the next backward)."""
        names = [n for n, p in self.engine.module.named_parameters() if p.requires_grad]
        load_module_state(self.engine.module, state, self.zero3, names, STATE_BUCKET_BYTES)

    # Exact resume.

    def model_state(self) -> dict[str, torch.Tensor]:
        """What `load_model_state` takes: all weights (= full_state_dict) or, under LoRA, only the adapters.

        With LoRA the frozen base is not stored: a resumed engine is built from the same base checkpoint.
        """
        if not self.lora:
            return self.full_state_dict()
        return module_state(self.engine.module, self.zero3, trainable_only=True, bucket_bytes=STATE_BUCKET_BYTES)

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load `model_state()` output, then refresh DeepSpeed's fp32 masters from it. Call on every rank."""
        names = [n for n, p in self.engine.module.named_parameters() if p.requires_grad or not self.lora]
        load_module_state(self.engine.module, state, self.zero3, names, STATE_BUCKET_BYTES)
        refresh = getattr(self.engine.optimizer, "refresh_fp32_params", None)
        if refresh is not None:
            refresh()

    def optimizer_state(self) -> dict[str, Any]:
        """This rank's optimizer, scheduler and step counters; tensors, numbers, strings, lists, dicts only."""
        e = self.engine
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "zero_stage": self.cfg.zero_stage,
            "optimizer": optim_state.capture(e.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "counters": {
                "global_steps": e.global_steps,
                "global_samples": e.global_samples,
                "micro_steps": e.micro_steps,
                "skipped_steps": e.skipped_steps,
            },
        }

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Inverse of `optimizer_state`, after `load_model_state` (it overwrites the refreshed fp32 masters)."""
        saved = (state["rank"], state["world_size"], state["zero_stage"])
        here = (self.rank, self.world_size, self.cfg.zero_stage)
        if saved != here:
            raise CheckpointError(
                f"optimizer state saved by (rank, world_size, zero_stage) = {saved}, this engine is {here}; "
                "resume with the same learner.world_size and learner.zero_stage"
            )
        where = f"optimizer state of rank {self.rank}"
        optim_state.restore(self.engine.optimizer, state["optimizer"], where)
        self.scheduler.load_state_dict(state["scheduler"])
        for key, value in state["counters"].items():
            setattr(self.engine, key, value)
