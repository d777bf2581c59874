"""Weight broadcast from learner rank 0 to the rollout workers over a process group of its own.

The group is built from a TCPStore + PrefixStore, never through `init_process_group`, so DeepSpeed's world
(the learner ranks) is left untouched: on GPUs it is an NCCL group, on CPU its gloo twin. Every sync sends a
header (version, bucket count, layout hash), then per bucket a checksum and the flat bucket. Receivers verify
each bucket before copying it into their parameters; a mismatch raises and leaves the receiver flagged as
out of date so the driver re-syncs it instead of letting it sample with mixed weights.

A worker that joins or restarts cannot join a live group, so the driver builds a new group generation
(a new store on a new port) with every current member and sends the current weights before the worker samples.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

CHECKSUM_ROW = 1024


@dataclass(frozen=True)
class SyncStats:
    """What one sync moved and how fast, reported per version."""

    version: int
    bytes: int
    seconds: float
    buckets: int

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else float("inf")


class WeightSyncError(RuntimeError):
    """A received bucket did not match its checksum, or the layouts of sender and receiver differ."""


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, its gloo twin on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def create_group(
    backend: str, host: str, port: int, rank: int, world_size: int, generation: int, timeout_s: float = 300.0
) -> dist.ProcessGroup:
    """Rank 0 (the learner) hosts the store; a new generation gets a fresh prefix on the same store."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout, wait_for_workers=False)
    prefixed = dist.PrefixStore(f"agrpo-weights-{generation}", store)
    if backend == "gloo":
        return dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(prefixed, rank, world_size)
    raise ValueError(f"weight-sync backend {backend!r}: expected 'gloo' or 'nccl'")


def layout_hash(named: Sequence[tuple[str, torch.Size, torch.dtype]]) -> int:
    """63-bit hash of names, shapes and dtypes: sender and receiver must agree before any bytes move."""
    text = "|".join(f"{n}:{tuple(s)}:{d}" for n, s, d in named)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def plan_buckets(sizes: Sequence[tuple[int, torch.dtype]], bucket_bytes: int) -> list[list[int]]:
    """Contiguous runs of tensor indices of one dtype, each at most `bucket_bytes` (or one big tensor)."""
    buckets: list[list[int]] = []
    current: list[int] = []
    current_bytes, current_dtype = 0, None
    for i, (nbytes, dtype) in enumerate(sizes):
        if current and (dtype != current_dtype or current_bytes + nbytes > bucket_bytes):
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += nbytes
        current_dtype = dtype
    if current:
        buckets.append(current)
    return buckets


def tensor_checksum(flat: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over the raw bytes (plain and position-weighted): cheap on GPU, exact, order-aware."""
    raw = flat.contiguous().view(torch.uint8)
    pad = (-raw.numel()) % (4 * CHECKSUM_ROW)
    if pad:
        raw = torch.cat([raw, raw.new_zeros(pad)])
    words = raw.view(torch.int32).view(-1, CHECKSUM_ROW).long()
    weights = torch.arange(1, CHECKSUM_ROW + 1, device=words.device, dtype=torch.long)
    return torch.stack([words.sum(), (words * weights).sum()])


def model_checksum(tensors: Sequence[torch.Tensor]) -> str:
    """A hex digest of every tensor's bytes, to assert that all roles hold the same weights."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> None:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def send_weights(
    group: dist.ProcessGroup,
    named: Sequence[tuple[str, torch.Tensor]],
    version: int,
    bucket_bytes: int,
    gather: Callable[[list[torch.Tensor]], AbstractContextManager[object]] | None = None,
) -> SyncStats:
    """Broadcast `named` from rank 0; `gather` materialises sharded (ZeRO-3) parameters bucket by bucket."""
    start = time.perf_counter()
    layout = [(n, t.shape, t.dtype) for n, t in named]
    plan = plan_buckets([(t.numel() * t.element_size(), t.dtype) for _, t in named], bucket_bytes)
    device = named[0][1].device if named else torch.device("cpu")
    header = torch.tensor([version, len(plan), layout_hash(layout)], dtype=torch.long, device=device)
    _broadcast(group, header)
    total = 0
    for indices in plan:
        tensors = [named[i][1] for i in indices]
        with gather(tensors) if gather else nullcontext():
            flat = _flatten(tensors)
        _broadcast(group, tensor_checksum(flat))
        _broadcast(group, flat)
        total += flat.numel() * flat.element_size()
    return SyncStats(version, total, time.perf_counter() - start, len(plan))


def receive_weights(
    group: dist.ProcessGroup,
    params: Sequence[tuple[str, torch.Tensor]],
    current_version: int,
    bucket_bytes: int,
) -> SyncStats:
    """Receive into `params` in place, verifying layout, version order and every bucket's checksum."""
    start = time.perf_counter()
    layout = [(n, t.shape, t.dtype) for n, t in params]
    plan = plan_buckets([(t.numel() * t.element_size(), t.dtype) for _, t in params], bucket_bytes)
    device = params[0][1].device if params else torch.device("cpu")
    header = torch.zeros(3, dtype=torch.long, device=device)
    _broadcast(group, header)
    version, n_buckets, sender_hash = (int(x) for x in header.tolist())
    # The driver compares layout hashes before a sync starts; these checks only guard against its bugs.
    if sender_hash != layout_hash(layout) or n_buckets != len(plan):
        raise WeightSyncError(
            f"version {version}: sender layout differs from this model; learner and rollout workers must "
            "hold the same architecture and use the same bucket size"
        )
    # Past this point every bucket is received even when something is wrong, so the sender never hangs;
    # the error is raised once the collective is complete.
    problem = None
    if version < current_version:
        problem = f"version {version} is older than the version held ({current_version})"
    expected = torch.zeros(2, dtype=torch.long, device=device)
    total = 0
    for indices in plan:
        tensors = [params[i][1] for i in indices]
        flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=device)
        _broadcast(group, expected)
        _broadcast(group, flat)
        total += flat.numel() * flat.element_size()
        if problem is None and not torch.equal(tensor_checksum(flat), expected):
            problem = f"version {version}: checksum mismatch in the bucket starting at {params[indices[0]][0]}"
        if problem is None:
            with torch.no_grad():
                for t, chunk in zip(tensors, _split(flat, tensors), strict=True):
                    t.copy_(chunk.view_as(t))
    if problem:
        raise WeightSyncError(problem)
    return SyncStats(version, total, time.perf_counter() - start, len(plan))


def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset : offset + t.numel()]
        offset += t.numel()
