"""`ray job submit` of the tiny recipe to a Ray head started on 127.0.0.1, as a user would run it.

Checks the job succeeds, the run directory, the named actors in the state API, and agrpo_ metrics with
values in Ray's Prometheus export. The head is started with `--block` in its own process group and that
group is terminated at the end, so only the cluster this test started is stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.small_run import RECIPE, SMALL_RUN

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def scrape(port: int) -> dict[str, float]:
    """agrpo_ series in Ray's export, name -> last value seen."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(ray_agrpo_\w+?)(?:\{[^}]*\})?\s+([-+0-9.eE]+|NaN)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


@pytest.fixture
def ray_head():
    # Ray's unix sockets live in the temp dir, whose path must stay short (about 100 characters at most).
    temp_dir = tempfile.mkdtemp(prefix="agrpo-ray-", dir="/tmp")
    ports = {"gcs": free_port(), "dashboard": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_metrics_report_interval_ms": "1000",
        "RAY_AUTH_MODE": "disabled",
    }
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={ports['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dashboard']}",
            f"--metrics-export-port={ports['metrics']}",
            "--num-cpus=2",
            f"--object-store-memory={150 * 1024**2}",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{ports['dashboard']}"

    def dashboard_up() -> bool:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(dashboard_up, 120, "the Ray dashboard")
        yield {"address": address, "env": env, **ports}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_tiny_recipe(ray_head: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    entrypoint = [
        sys.executable,
        "-m",
        "cluster.train",
        "--config",
        str(RECIPE),
        f"run_dir={run_dir}",
        *SMALL_RUN,
        "learner.steps=25",
        "data.num_train=128",
    ]
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"], "--no-wait", "--", *entrypoint],
        env=ray_head["env"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert submit.returncode == 0, submit.stderr
    job_id = re.search(r"raysubmit_\w+", submit.stdout + submit.stderr).group(0)

    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    client = JobSubmissionClient(ray_head["address"])
    seen: dict[str, float] = {}

    def finished() -> bool:
        seen.update(scrape(ray_head["metrics"]))
        return client.get_job_status(job_id) in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}

    wait_for(finished, 600, f"job {job_id}")
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "agrpo train: done 25 steps" in logs

    names = {a.name for a in list_actors(address=ray_head["address"], limit=1000)}
    assert {"rollout-0", "learner-0", "reward-0"} <= names

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 25
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "step-00000025" / "model" / "model.safetensors").is_file()

    wait_for(lambda: len(seen.update(scrape(ray_head["metrics"])) or seen) >= 5, 60, "five agrpo_ metrics")
    assert len(seen) >= 5, seen
    assert seen.get("ray_agrpo_learner_step", 0) > 0, seen
