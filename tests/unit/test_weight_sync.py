"""Bucketed weight broadcast over a gloo group of its own: bytes arrive intact, versions only move forward."""

from __future__ import annotations

import multiprocessing as mp
import socket

import psutil
import pytest
import torch

from common.weight_sync import (
    SyncStats,
    WeightSyncError,
    create_group,
    layout_hash,
    listening_socket,
    model_checksum,
    pack_parameters,
    plan_buckets,
    receive_weights,
    send_weights,
    tensor_checksum,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_params(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (300,), (64, 33), (1,), (129, 17)]
    params = [(f"p{i}", torch.randn(s, generator=g)) for i, s in enumerate(shapes)]
    params.append(("p_bf16", torch.randn(40, generator=g).to(torch.bfloat16)))
    return params


def _run(rank: int, world: int, port: int, versions: list[int], start_version: int, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    group = create_group("gloo", "127.0.0.1", port, rank, world, generation=0, timeout_s=60)
    params = make_params(seed=100 if rank == 0 else rank)
    if rank == 2:
        packed = torch.nn.Module()
        for name, t in params:
            packed.register_parameter(name, torch.nn.Parameter(t, requires_grad=False))
        pack_parameters(packed)
        params = list(packed.named_parameters())
    held = start_version
    try:
        for version in versions:
            if rank == 0:
                stats = send_weights(group, params, version, bucket_bytes=4096)
            else:
                stats = receive_weights(group, params, held, bucket_bytes=4096)
                held = stats.version
            out.put(
                (
                    rank,
                    "ok",
                    stats.version,
                    stats.bytes,
                    stats.buckets,
                    model_checksum([t for _, t in params]),
                )
            )
    except WeightSyncError as err:
        out.put((rank, "error", str(err), 0, 0, ""))


def run_world(world: int, versions: list[int], start_version: int = -1) -> list[tuple]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_run, args=(r, world, port, versions, start_version, out)) for r in range(world)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(world * len(versions))]
    for p in procs:
        p.join(timeout=60)
    return results


def test_receivers_end_with_sender_weights_and_versions() -> None:
    results = run_world(world=3, versions=[1, 2])
    assert all(r[1] == "ok" for r in results)
    last = {r[0]: r for r in results if r[2] == 2}
    sender = model_checksum([t for _, t in make_params(100)])
    assert {r[5] for r in last.values()} == {sender}
    total = sum(t.numel() * t.element_size() for _, t in make_params(0))
    assert all(r[3] == total for r in results)
    assert last[1][4] == len(plan_buckets([(t.numel() * t.element_size(), t.dtype) for _, t in make_params(0)], 4096))


def test_receiver_refuses_an_older_version() -> None:
    results = run_world(world=2, versions=[3], start_version=5)
    receiver = next(r for r in results if r[0] == 1)
    assert receiver[1] == "error"
    assert "older than the version held (5)" in receiver[2]


def test_sync_stats_rate_is_derived_from_bytes_and_seconds() -> None:
    """The one stats type: the driver reads `bytes_per_s` from it, nobody recomputes it."""
    assert SyncStats(version=3, bytes=1000, seconds=0.5, buckets=2).bytes_per_s == 2000.0
    assert SyncStats(version=3, bytes=0, seconds=0.0, buckets=0).bytes_per_s == 0.0


def test_bucket_plan_respects_size_and_dtype() -> None:
    sizes = [
        (100, torch.float32),
        (100, torch.float32),
        (300, torch.float32),
        (50, torch.bfloat16),
        (10, torch.float32),
    ]
    assert plan_buckets(sizes, 250) == [[0, 1], [2], [3], [4]]
    assert plan_buckets(sizes, 10_000) == [[0, 1, 2], [3], [4]]


def test_checksum_detects_changed_moved_and_truncated_bytes() -> None:
    flat = torch.randn(5000)  # 20,000 bytes: four 4 KiB rows and a tail
    base = tensor_checksum(flat)
    assert torch.equal(tensor_checksum(flat.clone()), base)
    changed = flat.clone()
    changed[1234] += 1e-3
    assert not torch.equal(tensor_checksum(changed), base)
    rows_swapped = flat.clone()
    rows_swapped[:1024], rows_swapped[1024:2048] = flat[1024:2048].clone(), flat[:1024].clone()
    assert not torch.equal(tensor_checksum(rows_swapped), base)
    assert not torch.equal(tensor_checksum(torch.roll(flat, 1)), base)
    tail_swapped = flat.clone()
    tail_swapped[[4990, 4991]] = tail_swapped[[4991, 4990]]
    assert not torch.equal(tensor_checksum(tail_swapped), base)
    assert not torch.equal(tensor_checksum(torch.cat([flat, torch.zeros(2)])), base)
    assert not torch.equal(tensor_checksum(flat[1:]), tensor_checksum(flat[:-1]))


def test_layout_hash_sees_shape_dtype_and_name() -> None:
    layout = [("a", torch.empty(2, 3, dtype=torch.float32))]
    assert layout_hash(layout) == layout_hash([("a", torch.zeros(2, 3, dtype=torch.float32))])
    assert layout_hash(layout) != layout_hash([("a", torch.empty(3, 2, dtype=torch.float32))])
    assert layout_hash(layout) != layout_hash([("a", torch.empty(2, 3, dtype=torch.bfloat16))])
    assert layout_hash(layout) != layout_hash([("b", torch.empty(2, 3, dtype=torch.float32))])


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="expected 'gloo' or 'nccl'"):
        create_group("mpi", "127.0.0.1", free_port(), 0, 1, 0, timeout_s=5)


def test_store_listens_only_on_the_address_it_was_given() -> None:
    sock = listening_socket("127.0.0.1")
    port = sock.getsockname()[1]
    group = create_group("gloo", "127.0.0.1", port, 0, 1, generation=0, timeout_s=5, listen_fd=sock.detach())
    listening = {
        c.laddr.ip
        for c in psutil.Process().net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }
    assert listening == {"127.0.0.1"}
    params = make_params(0)
    assert send_weights(group, params, version=1, bucket_bytes=4096).bytes > 0
