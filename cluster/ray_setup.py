"""Connect the driver to Ray: an existing cluster when there is one, a local loopback cluster otherwise."""

from __future__ import annotations

import os

import ray

from common.config import ClusterConfig
from common.errors import UserError


def connect(cluster: ClusterConfig) -> str:
    """Return how we connected. Under `ray job submit` RAY_ADDRESS is set and `auto` finds the cluster."""
    if ray.is_initialized():
        return "existing session"
    address = cluster.address or ("auto" if os.environ.get("RAY_ADDRESS") else None)
    if address:
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
