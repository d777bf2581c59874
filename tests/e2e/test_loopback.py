"""A local run started directly (not through make, with a clean environment) listens on loopback only.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; the `cluster` package sets it before
anything imports ray. This test starts `agrpo train` in a subprocess without the variable and records every
listening socket of its whole process tree (driver, GCS, raylet, workers, agents) while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.small_run import SMALL_RUN

BIN = Path(sys.executable).parent
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


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


def test_a_local_run_started_without_make_listens_on_loopback_only(tmp_path: Path) -> None:
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
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(process.pid)
    seen: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        seen |= listeners(root)
        time.sleep(0.3)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]
    assert any(name.startswith(("gcs_server", "raylet")) for name, _, _ in seen), "the cluster was observed"
    exposed = sorted(s for s in seen if s[1] not in LOOPBACK)
    assert not exposed, f"listening beyond loopback: {exposed}"
