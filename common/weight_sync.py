"""The weight-sync wire protocol: learner rank 0 broadcasts its weights to the rollout workers.

Both sides import it (learner/ sends, rollout/ receives); the driver's half is cluster/weight_broadcaster.py
and the learner's ZeRO-3/LoRA half is learner/full_weights.py. docs/weight_sync.md has the whole lifecycle.

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
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

CHECKSUM_ROW = 512


@dataclass(frozen=True)
class SyncStats:
    """What one sync moved and how fast: the one result of a sync, from the wire to metrics.jsonl.

    A learner rank that only joins the sender's gathers reports its version with 0 bytes, 0 buckets.
    """

    version: int
    bytes: int
    seconds: float
    buckets: int

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


class WeightSyncError(RuntimeError):
    """A received bucket did not match its checksum, or the layouts of sender and receiver differ."""


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, its gloo twin on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def listening_socket(host: str) -> socket.socket:
    """A socket listening on `host` only, for a TCPStore to serve from.

    A TCPStore that opens its own port listens on every interface; handing it this socket keeps the learner's
    rendezvous and weight-group stores on the node's Ray address (127.0.0.1 on a loopback-only cluster), and
    the port stays reserved between choosing it and the store taking it over.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen()
    return sock


def create_group(
    backend: str,
    host: str,
    port: int,
    rank: int,
    world_size: int,
    generation: int,
    timeout_s: float = 300.0,
    listen_fd: int | None = None,
) -> dist.ProcessGroup:
    """Rank 0 (the learner) hosts the store, from `listen_fd` when given (a socket listening on `host` only).

    The generation names the group's keys, so a stale member of an older generation can never pair with it.
    """
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(
        host,
        port,
        world_size,
        is_master=rank == 0,
        timeout=timeout,
        wait_for_workers=False,
        master_listen_fd=listen_fd if rank == 0 else None,
    )
    prefixed = dist.PrefixStore(f"agrpo-weights-{generation}", store)
    if backend == "gloo":
        return dist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(prefixed, rank, world_size)
    raise ValueError(f"weight-sync backend {backend!r}: expected 'gloo' or 'nccl'")


def layout_hash(named: Sequence[tuple[str, torch.Tensor]]) -> int:
    """63-bit hash of names, shapes and dtypes: sender and receiver must agree before any bytes move.

    Each side reports it to the driver, which compares them before the first sync; the header carries it too.
    """
    text = "|".join(f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in named)
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


def bucket_plan(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[int]]:
    """`plan_buckets` over these tensors: sender, receivers and the learner's other ranks all plan with it."""
    return plan_buckets([(t.numel() * t.element_size(), t.dtype) for t in tensors], bucket_bytes)


def tensor_checksum(flat: torch.Tensor) -> torch.Tensor:
    """Three int64 values (wrapping, identical on every device) over the raw bytes read as int64 words.

    Words are laid out in rows of CHECKSUM_ROW (4 KiB): the total, the row sums weighted by row, and the
    byte count. A changed word changes the total; a shifted, truncated or misplaced span changes the
    weighted sum or the count. Word order inside one row is not checked: the weighted column sums that would
    catch it cost three times the single contiguous reduction used here, and on CPU that time comes straight
    out of the transfer (docs/benchmarks.md, weight sync).
    """
    raw = flat.contiguous().view(torch.uint8)
    if raw.storage_offset() % 8:
        raw = raw.clone()  # int64 words need an 8-byte aligned start; the sum depends only on the bytes
    body = raw.numel() - raw.numel() % (8 * CHECKSUM_ROW)
    row_sums = raw[:body].view(torch.int64).view(-1, CHECKSUM_ROW).sum(dim=1)
    tail = raw[body:].long()
    rows = torch.arange(1, row_sums.numel() + 1, device=raw.device, dtype=torch.long)
    tail_weights = torch.arange(1, tail.numel() + 1, device=raw.device, dtype=torch.long) + row_sums.numel()
    count = torch.tensor(raw.numel(), device=raw.device, dtype=torch.long)
    return torch.stack([row_sums.sum() + tail.sum(), (row_sums * rows).sum() + (tail * tail_weights).sum(), count])


def model_checksum(tensors: Sequence[torch.Tensor]) -> str:
    """A hex digest of every tensor's bytes, to assert that all roles hold the same weights."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> dist.Work:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def contiguous_span(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """A flat view over `tensors` if they lie back to back in one storage, else None (then a copy is needed)."""
    first = tensors[0]
    end = first.data_ptr()
    for t in tensors:
        if not t.is_contiguous() or t.dtype != first.dtype or t.data_ptr() != end:
            return None
        end += t.numel() * t.element_size()
    total = sum(t.numel() for t in tensors)
    return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (total,))


def pack_parameters(module: torch.nn.Module) -> None:
    """Lay each dtype's parameters back to back in one buffer (in `named_parameters` order).

    Buckets are runs of consecutive same-dtype parameters, so on a packed model every bucket is one
    contiguous span: the sender broadcasts it without a copy and a receiver gets it in place.
    """
    params = [p for _, p in module.named_parameters()]
    for dtype in dict.fromkeys(p.dtype for p in params):
        group = [p for p in params if p.dtype == dtype]
        buffer = torch.empty(sum(p.numel() for p in group), dtype=dtype, device=group[0].device)
        offset = 0
        with torch.no_grad():
            for p in group:
                view = buffer[offset : offset + p.numel()].view_as(p)
                view.copy_(p)
                p.data = view
                offset += p.numel()


def send_weights(
    group: dist.ProcessGroup,
    named: Sequence[tuple[str, torch.Tensor]],
    version: int,
    bucket_bytes: int,
    gather: Callable[[list[torch.Tensor]], AbstractContextManager[object]] | None = None,
) -> SyncStats:
    """Broadcast `named` from rank 0; `gather` materialises sharded (ZeRO-3) parameters bucket by bucket.

    Bucket i is on the wire while bucket i+1 is gathered, flattened and checksummed (two in flight).
    """
    start = time.perf_counter()
    plan = bucket_plan([t for _, t in named], bucket_bytes)
    device = named[0][1].device if named else torch.device("cpu")
    header = torch.tensor([version, len(plan), layout_hash(named)], dtype=torch.long, device=device)
    _broadcast(group, header).wait()
    total = 0
    # Each entry keeps its tensors alive until the asynchronous broadcasts that read them are done.
    in_flight: list[tuple[list[dist.Work], tuple[torch.Tensor, torch.Tensor]]] = []
    for indices in plan:
        tensors = [named[i][1] for i in indices]
        with gather(tensors) if gather else nullcontext():
            span = None if gather else contiguous_span(tensors)
            flat = span if span is not None else torch.cat([t.detach().reshape(-1) for t in tensors])
        checksum = tensor_checksum(flat)
        in_flight.append(([_broadcast(group, checksum), _broadcast(group, flat)], (checksum, flat)))
        total += flat.numel() * flat.element_size()
        while len(in_flight) > 1 or (in_flight and indices is plan[-1]):
            for work in in_flight.pop(0)[0]:
                work.wait()
    return SyncStats(version, total, time.perf_counter() - start, len(plan))


def receive_weights(
    group: dist.ProcessGroup,
    params: Sequence[tuple[str, torch.Tensor]],
    current_version: int,
    bucket_bytes: int,
) -> SyncStats:
    """Receive into `params`, verifying layout, version order and every bucket's checksum.

    Buckets that are contiguous spans (see `pack_parameters`) are received in place, so the caller must
    treat its weights as invalid if this raises: a bucket that fails its checksum has already landed.
    """
    start = time.perf_counter()
    plan = bucket_plan([t for _, t in params], bucket_bytes)
    device = params[0][1].device if params else torch.device("cpu")
    header = torch.zeros(3, dtype=torch.long, device=device)
    _broadcast(group, header).wait()
    version, n_buckets, sender_hash = (int(x) for x in header.tolist())
    # The driver compares layout hashes before a sync starts; these checks only guard against its bugs.
    if sender_hash != layout_hash(params) or n_buckets != len(plan):
        raise WeightSyncError(
            f"version {version}: sender layout differs from this model; learner and rollout workers must "
            "hold the same architecture and use the same bucket size"
        )
    # Past this point every bucket is received even when something is wrong, so the sender never hangs;
    # the error is raised once the collective is complete. An old version lands in scratch buffers.
    stale = version < current_version
    problem = f"version {version} is older than the version held ({current_version})" if stale else None
    total = 0
    pending: list[_Incoming] = []
    for indices in plan:
        tensors = [params[i][1] for i in indices]
        span = None if stale else contiguous_span(tensors)
        flat = (
            span
            if span is not None
            else torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=device)
        )
        expected = torch.zeros(3, dtype=torch.long, device=device)
        works = [_broadcast(group, expected), _broadcast(group, flat)]
        pending.append(_Incoming(params[indices[0]][0], tensors, expected, flat, span is not None, works))
        total += flat.numel() * flat.element_size()
        if len(pending) > 1:
            problem = pending.pop(0).land(version, problem)
    for incoming in pending:
        problem = incoming.land(version, problem)
    if problem:
        raise WeightSyncError(problem)
    return SyncStats(version, total, time.perf_counter() - start, len(plan))


@dataclass
class _Incoming:
    """A bucket whose receive was posted; `land` waits, verifies and (if staged) copies it into place."""

    first: str
    tensors: list[torch.Tensor]
    expected: torch.Tensor
    flat: torch.Tensor
    in_place: bool
    works: list[dist.Work]

    def land(self, version: int, problem: str | None) -> str | None:
        for work in self.works:
            work.wait()
        if problem is None and not torch.equal(tensor_checksum(self.flat), self.expected):
            return f"version {version}: checksum mismatch in the bucket starting at {self.first}"
        if problem is None and not self.in_place:
            with torch.no_grad():
                for t, chunk in zip(self.tensors, _split(self.flat, self.tensors), strict=True):
                    t.copy_(chunk.view_as(t))
        return problem


def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset : offset + t.numel()]
        offset += t.numel()
