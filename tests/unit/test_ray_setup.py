"""Connecting to Ray: an unreachable or malformed address fails in seconds with a message, not a hang."""

from __future__ import annotations

import time

import pytest
import ray

from cluster.ray_setup import ray_cluster
from common.config import ClusterConfig
from common.errors import UserError


def test_unreachable_cluster_address_fails_with_a_clear_message() -> None:
    assert not ray.is_initialized()
    start = time.monotonic()
    with (
        pytest.raises(UserError, match="cannot reach the Ray cluster at '127.0.0.1:1'"),
        ray_cluster(ClusterConfig(address="127.0.0.1:1")),
    ):
        pass
    with (
        pytest.raises(UserError, match="expected host:port, ray://host:port or auto"),
        ray_cluster(ClusterConfig(address="nonsense")),
    ):
        pass
    assert time.monotonic() - start < 20
    assert not ray.is_initialized()


def test_no_local_cluster_when_it_would_listen_on_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    """If ray was imported before the loopback variable was set, starting a local cluster is refused."""
    import cluster.ray_setup

    monkeypatch.setattr(cluster.ray_setup, "LOCAL_RAY_ON_LOOPBACK", False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError, match="would listen on every network interface"), ray_cluster(ClusterConfig()):
        pass
    assert not ray.is_initialized()
