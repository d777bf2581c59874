"""Connect the driver to Ray: an existing cluster when there is one, a local loopback cluster otherwise."""

from __future__ import annotations

import os
import socket

import ray

from common.config import ClusterConfig
from common.errors import UserError


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS address for a long time."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"cluster.address {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r} ({err.strerror or err}); start one with "
            "`ray start --head` or unset cluster.address to run on a local cluster"
        ) from None


def connect(cluster: ClusterConfig) -> str:
    """Return how we connected. Under `ray job submit` RAY_ADDRESS is set and `auto` finds the cluster."""
    if ray.is_initialized():
        return "existing session"
    address = cluster.address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    if address:
        probe(address)
        try:
            ray.init(address=address, namespace=cluster.namespace, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"cannot reach the Ray cluster at {address!r} ({first}); start one with `ray start --head` "
                "or unset cluster.address to run on a local cluster"
            ) from None
        return f"cluster at {address}"
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(
        num_cpus=cluster.num_cpus,
        num_gpus=cluster.num_gpus,
        object_store_memory=cluster.object_store_memory,
        include_dashboard=False,
        dashboard_host=cluster.dashboard_host,
        namespace=cluster.namespace,
        log_to_driver=True,
        configure_logging=False,
    )
    return "local cluster"
