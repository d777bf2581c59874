"""Connect the driver to Ray: an existing cluster when one is named, a local loopback cluster otherwise.

A local cluster gets Ray's dashboard on `cluster.dashboard_host` (unless `cluster.dashboard` is false); the
driver prints its URL, where the node's Prometheus metrics are served, and the service-discovery file Ray
writes for Prometheus (deploy/monitoring/prometheus.yml reads it), so a run can be watched while it trains.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from cluster import LOCAL_RAY_ON_LOOPBACK
from common.config import ClusterConfig
from common.errors import UserError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"


def split_address(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"cluster.address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS address for a long time, and it
    rewrites a loopback address to the machine's network address unless Ray runs on loopback."""
    if address == "auto":
        return
    host, port = split_address(address)
    if host in LOOPBACK_HOSTS and not address.startswith("ray://") and not LOCAL_RAY_ON_LOOPBACK:
        raise UserError(
            f"cluster.address {address!r} is on loopback, but ray was imported before "
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so Ray would look for the cluster at this machine's "
            "network address and hang: set the variable in the environment, or give the head's network address"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r} ({err.strerror or err}); start one with "
            "`ray start --head` or unset cluster.address to run on a local cluster"
        ) from None


def running_cluster() -> str | None:
    """The GCS address of a cluster `ray start` left running on this machine (Ray's own record of it), if
    it answers; a local run does not join it unless told to (`cluster.address=auto`)."""
    try:
        from ray._private.utils import read_ray_address

        address = read_ray_address()
        if not address:
            return None
        with socket.create_connection(split_address(address), timeout=1.0):
            return address
    except (OSError, UserError, ImportError):
        return None


def local_cluster_lines(
    dashboard_url: str | None, node_ip: str, metrics_port: int, session_dir: Path, temp_dir: Path, token: bool
) -> list[str]:
    """What a local run prints about its cluster: the dashboard, the node's metrics, Prometheus' targets."""
    metrics = f"Prometheus metrics at http://{node_ip}:{metrics_port}/metrics"
    if not dashboard_url:
        return [f"{metrics} (cluster.dashboard is false: no dashboard, no service-discovery file)"]
    sign_in = " (sign in with the token `ray get-auth-token` prints)" if token else ""
    return [
        f"Ray dashboard at http://{dashboard_url}{sign_in}",
        f"{metrics}; Prometheus finds them through {session_dir / SERVICE_DISCOVERY_FILE} "
        f"(linked from {temp_dir / SERVICE_DISCOVERY_FILE}, which deploy/monitoring/prometheus.yml reads)",
    ]


def announce_local_cluster(dashboard_url: str | None) -> None:
    node = ray._private.worker.global_worker.node
    lines = local_cluster_lines(
        dashboard_url,
        node.node_ip_address,
        node.metrics_export_port,
        Path(node.get_session_dir_path()),
        Path(node.get_temp_dir_path()),
        os.environ.get("RAY_AUTH_MODE") == "token",
    )
    for line in lines:
        print(f"agrpo: {line}", file=sys.stderr)


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
        other = running_cluster()
        if other:
            print(
                f"agrpo: a Ray cluster is running at {other}; this run starts its own local cluster "
                "(cluster.address=auto runs on that one instead)",
                file=sys.stderr,
            )
        context = ray.init(
            num_cpus=cluster.num_cpus,
            num_gpus=cluster.num_gpus,
            object_store_memory=cluster.object_store_memory,
            include_dashboard=cluster.dashboard,
            dashboard_host=cluster.dashboard_host,
            namespace=cluster.namespace,
            log_to_driver=True,
            configure_logging=False,
        )
        announce_local_cluster(context.dashboard_url if cluster.dashboard else None)
    try:
        yield
    finally:
        ray.shutdown()
