"""A local run started directly (not through make, with a clean environment) listens on loopback only, starts
Ray's dashboard there and says where it is, and works while another Ray holds the default ports.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; the `cluster` package sets it before
anything imports ray. This test starts `agrpo train` in a subprocess without the variable and records every
listening socket of its whole process tree (driver, GCS, raylet, workers, agents, dashboard) while it runs.
Meanwhile this process holds Ray's default dashboard and dashboard-agent ports (8265, 52365) where they are
free, as a second cluster on the machine would: the run must still start, and its dashboard must answer at
the URL it printed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from tests.small_run import SMALL_RUN

BIN = Path(sys.executable).parent
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
RAY_DEFAULT_PORTS = (8265, 52365)  # dashboard, dashboard agent


def listeners(root: psutil.Process) -> set[tuple[str, str, int]]:
    found = set()
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return found
    for process in processes:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((process.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


def hold_ports(ports: tuple[int, ...]) -> list[socket.socket]:
    """Listen on each port that is free; a port already taken is held by someone else, which is the point."""
    held = []
    for port in ports:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    return held


def http_status(url: str) -> int | None:
    """The dashboard's answer: 200, or 401 while Ray's token protects it (a browser asks for the token)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def test_a_local_run_listens_on_loopback_only_and_serves_its_dashboard_there(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        str(BIN / "agrpo"),
        "train",
        f"run_dir={tmp_path / 'run'}",
        *SMALL_RUN,
        "learner.steps=2",
        "cluster.num_cpus=2",
        "metrics.plots=false",
    ]
    held = hold_ports(RAY_DEFAULT_PORTS)
    held_ports = {sock.getsockname()[1] for sock in held}
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
        reader.start()
        root = psutil.Process(process.pid)
        seen: set[tuple[str, str, int]] = set()
        dashboard: dict[str, int | None] = {}
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen |= listeners(root)
            url = next((m.group(1) for line in output if (m := re.search(r"Ray dashboard at (\S+)", line))), None)
            if url and url not in dashboard:
                dashboard[url] = http_status(f"{url}/api/version")
            time.sleep(0.3)
        process.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        for sock in held:
            sock.close()
    text = "".join(output)
    assert process.returncode == 0, text[-3000:]
    assert any(name.startswith(("gcs_server", "raylet")) for name, _, _ in seen), "the cluster was observed"
    exposed = sorted(s for s in seen if s[1] not in LOOPBACK)
    assert not exposed, f"listening beyond loopback: {exposed}"

    ((url, status),) = dashboard.items()
    assert url.startswith("http://127.0.0.1:") and status in (200, 401), (url, status, text[-2000:])
    port = int(url.rsplit(":", 1)[1])
    if 8265 in held_ports:
        assert port != 8265  # Ray moved to a free port and the printed URL says which
    assert any(p == port and ip in LOOPBACK for _, ip, p in seen)
    metrics = re.search(
        r"Prometheus metrics at (http://127\.0\.0\.1:\d+/metrics); Prometheus finds them through (\S+)", text
    )
    assert metrics, text[-2000:]
    assert metrics.group(2).endswith("prom_metrics_service_discovery.json")
