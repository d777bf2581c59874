"""Connect the driver to Ray: an existing cluster when there is one, a local loopback cluster otherwise."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from cluster import LOCAL_RAY_ON_LOOPBACK
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


@contextmanager
def ray_cluster(cluster: ClusterConfig) -> Iterator[None]:
    """Connected to Ray inside the block: the session already open, the cluster at `cluster.address` (or
    `auto` under `ray job submit`, which sets RAY_ADDRESS), or a local loopback cluster started here. A
    connection this block opened is closed on exit (which stops a local cluster)."""
    if ray.is_initialized():
        yield
        return
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
    else:
        if not LOCAL_RAY_ON_LOOPBACK:
            raise UserError(
                "a local Ray cluster started now would listen on every network interface, because ray was "
                "imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set: set it in the environment, or start "
                "a cluster yourself (`ray start --head --node-ip-address 127.0.0.1`) and set cluster.address"
            )
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
    try:
        yield
    finally:
        ray.shutdown()
