"""Connecting to Ray: an unreachable or malformed address fails in seconds with a message, not a hang."""

from __future__ import annotations

import socket
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


def test_a_loopback_address_is_refused_at_once_when_ray_would_rewrite_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the loopback variable Ray looks for 127.0.0.1:PORT at the machine's network address and hangs;
    the message says what to do instead of hanging (the e2e test connects to a loopback head for real)."""
    import cluster.ray_setup

    monkeypatch.setattr(cluster.ray_setup, "LOCAL_RAY_ON_LOOPBACK", False)
    start = time.monotonic()
    with (
        pytest.raises(UserError, match=r"cluster.address '127.0.0.1:6379' is on loopback, but ray was imported before"),
        ray_cluster(ClusterConfig(address="127.0.0.1:6379")),
    ):
        pass
    assert time.monotonic() - start < 5
    assert not ray.is_initialized()


def test_a_running_cluster_is_reported_only_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray._private.utils

    from cluster.ray_setup import running_cluster

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        live = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *_: live)
        assert running_cluster() == live
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *_: "127.0.0.1:1")
    assert running_cluster() is None
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda *_: None)
    assert running_cluster() is None
