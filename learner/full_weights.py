"""The learner's half of the weight sync: the full weights a plain model holds, whatever ZeRO-3 or LoRA do.

Rollout workers and HF checkpoints need one tensor per parameter of the *plain* model: full (not a ZeRO-3
shard), merged (`W + (alpha / r) * B @ A` when LoRA is on), named and ordered like the plain model's
`named_parameters`. Materialising all of that at once would cost a second copy of the model, so each entry
is a *handle*: a tensor with the right name, shape, dtype and device that holds data only inside
`gather(handles)`. Inside, ZeRO-3 parameters are all-gathered (`deepspeed.zero.GatheredParameters`) and LoRA
weights merged, and each handle's `.data` points at the full value; on exit the handles are emptied again
and ZeRO-3 re-partitions. Outside `gather` a handle reads as NaN, so a forgotten `gather` cannot pass as
real weights. Entries that need neither (no ZeRO-3, no adapter) are the parameters themselves.

`FullWeights.send` hands the handles to `common.weight_sync.send_weights` on rank 0. Under ZeRO-3 `gather` is
a collective, so every learner rank calls `send`: the other ranks enter the same per-bucket gathers in the
same order and send nothing. `state_dict` (for `save_pretrained`) reads the same handles.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import deepspeed
import torch
import torch.distributed as dist
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

from common.errors import CheckpointError
from common.weight_sync import SyncStats, bucket_plan, plan_buckets, send_weights
from learner.lora import ADAPTER, is_adapter_param, lora_layers_by_weight, plain_name


@dataclass
class _Entry:
    name: str
    param: nn.Parameter
    layer: LoraLayer | None
    handle: torch.Tensor
    empty: torch.Tensor | None  # the NaN stand-in of a lazy handle; None when the handle is the parameter

    def sources(self) -> list[nn.Parameter]:
        if self.layer is None:
            return [self.param]
        return [self.param, self.layer.lora_A[ADAPTER].weight, self.layer.lora_B[ADAPTER].weight]

    def value(self) -> torch.Tensor:
        if self.layer is None:
            return self.param.data
        return self.param.data + self.layer.get_delta_weight(ADAPTER).to(self.param.dtype)


def _full_shape(param: nn.Parameter) -> torch.Size:
    return getattr(param, "ds_shape", param.shape)


class FullWeights:
    """Handles for the plain model's parameters of `module` (a plain model or a peft LoRA model)."""

    def __init__(self, module: nn.Module, zero3: bool) -> None:
        self.zero3 = zero3
        peft = isinstance(module, PeftModel)
        merged = lora_layers_by_weight(module) if peft else {}
        self._entries: list[_Entry] = []
        for name, param in module.named_parameters():
            if peft and is_adapter_param(name):
                continue
            layer = merged.get(id(param))
            if zero3 or layer is not None:
                empty = torch.full((), float("nan"), dtype=param.dtype, device=param.device)
                empty = empty.expand(_full_shape(param))
                handle = empty.view_as(empty)
            else:
                empty, handle = None, param.detach()
            self._entries.append(_Entry(plain_name(name) if peft else name, param, layer, handle, empty))
        self._by_handle = {id(e.handle): e for e in self._entries}

    @property
    def lazy(self) -> bool:
        """True when some handle holds data only inside `gather` (ZeRO-3 or LoRA)."""
        return any(e.empty is not None for e in self._entries)

    def named(self) -> list[tuple[str, torch.Tensor]]:
        """(plain name, handle) in the plain model's `named_parameters` order."""
        return [(e.name, e.handle) for e in self._entries]

    @contextmanager
    def gather(self, handles: Sequence[torch.Tensor]) -> Iterator[None]:
        """Inside: every handle in `handles` holds its full, merged value (read-only use)."""
        entries = []
        for t in handles:
            entry = self._by_handle.get(id(t))
            if entry is None:
                raise ValueError("gather: tensor is not a handle returned by FullWeights.named()")
            entries.append(entry)
        lazy = [e for e in entries if e.empty is not None]
        params = [p for e in lazy for p in e.sources()]
        with _collect(params, self.zero3, modifier_rank=None), torch.no_grad():
            try:
                for e in lazy:
                    e.handle.data = e.value()
                yield
            finally:
                for e in lazy:
                    e.handle.data = e.empty

    def send(self, group: dist.ProcessGroup | None, version: int, bucket_bytes: int) -> SyncStats:
        """Broadcast the full weights as `version` over `group` (rank 0); the other ranks pass None.

        Every learner rank calls this with the same bucket size: under ZeRO-3 the others enter rank 0's
        per-bucket gathers and send nothing. Without lazy handles (no ZeRO-3, no LoRA) `send_weights` gets no
        gather and broadcasts buckets that are contiguous spans of the parameters without a copy.
        """
        if group is not None:
            return send_weights(group, self.named(), version, bucket_bytes, gather=self.gather if self.lazy else None)
        if self.zero3:
            handles = [e.handle for e in self._entries]
            for indices in bucket_plan(handles, bucket_bytes):
                with self.gather([handles[i] for i in indices]):
                    pass
        return SyncStats(version, 0, 0.0, 0)

    def state_dict(self, bucket_bytes: int) -> dict[str, torch.Tensor]:
        """CPU copies of every full, merged weight (a collective under ZeRO-3)."""
        out: dict[str, torch.Tensor] = {}
        for indices in bucket_plan([e.handle for e in self._entries], bucket_bytes):
            handles = [self._entries[i].handle for i in indices]
            with self.gather(handles):
                for i in indices:
                    out[self._entries[i].name] = self._entries[i].handle.detach().to("cpu", copy=True)
        return out


def _param_buckets(params: Sequence[nn.Parameter], bucket_bytes: int) -> list[list[int]]:
    return plan_buckets([(_full_shape(p).numel() * p.element_size(), p.dtype) for p in params], bucket_bytes)


def _collect(params: list[nn.Parameter], zero3: bool, modifier_rank: int | None) -> AbstractContextManager[object]:
    if not zero3:
        return nullcontext()
    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def module_state(module: nn.Module, zero3: bool, trainable_only: bool, bucket_bytes: int) -> dict[str, torch.Tensor]:
    """CPU copies of the module's own parameters under its own names (a collective under ZeRO-3)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad or not trainable_only]
    out: dict[str, torch.Tensor] = {}
    for indices in _param_buckets([p for _, p in named], bucket_bytes):
        with _collect([named[i][1] for i in indices], zero3, modifier_rank=None):
            out.update((named[i][0], named[i][1].detach().to("cpu", copy=True)) for i in indices)
    return out


def load_module_state(
    module: nn.Module, state: dict[str, torch.Tensor], zero3: bool, names: list[str], bucket_bytes: int
) -> None:
    """Copy `state` into the parameters `names` of `module`; the keys must be exactly `names`."""
    missing, unexpected = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    if missing or unexpected:
        raise CheckpointError(
            f"model state: {len(missing)} missing keys (first: {missing[:1]}), {len(unexpected)} unexpected "
            f"keys (first: {unexpected[:1]}); it must hold exactly the engine's model_state() keys"
        )
    params = dict(module.named_parameters())
    targets = [params[n] for n in names]
    for name, param in zip(names, targets, strict=True):
        if tuple(state[name].shape) != tuple(_full_shape(param)):
            raise CheckpointError(
                f"model state: {name} has shape {tuple(state[name].shape)}, the model {tuple(_full_shape(param))}"
            )
    for indices in _param_buckets(targets, bucket_bytes):
        # modifier_rank=0: rank 0's values are broadcast and re-partitioned; every rank holds the same state.
        with _collect([targets[i] for i in indices], zero3, modifier_rank=0), torch.no_grad():
            for i in indices:
                targets[i].data.copy_(state[names[i]].to(device=targets[i].device, dtype=targets[i].dtype))
