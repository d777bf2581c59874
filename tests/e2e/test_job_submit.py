"""`ray job submit` of the tiny recipe to a Ray head started on 127.0.0.1, scraped by a real Prometheus.

One head serves the module, at Ray's default metrics report interval (10 s), with every port chosen free (the
dashboard agent's too: a default port held by another Ray on this machine would leave the head unable to take
jobs). Prometheus runs with deploy/monitoring/prometheus.yml, reading the service-discovery file of this head.
The tests check that the job succeeds, its run directory and trackers, the named actors, that every panel query
of deploy/monitoring/grafana-dashboard.json returns data for the run, that held-out accuracy (set twice in the
run) stayed in Prometheus the whole time, and that `cluster.address=127.0.0.1:PORT` reaches the loopback head.
The head and Prometheus run in their own process groups, and only those groups are stopped at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.small_run import RECIPE, SMALL_RUN

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MONITORING = ROOT / "deploy" / "monitoring"
RUN_NAME = "e2e-run"
STEPS = 150  # with the pause plugin about a minute of training: several of Ray's 10 s report intervals
RATE_WINDOW = "1m"  # what Grafana's $__rate_interval is at a 10 s scrape interval (4 x 10 s, rounded up)


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


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def stop_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_head():
    # Ray's unix sockets live in the temp dir, whose path must stay short (about 100 characters at most).
    temp_dir = tempfile.mkdtemp(prefix="agrpo-ray-", dir="/tmp")
    ports = {name: free_port() for name in ("gcs", "dashboard", "metrics", "agent", "client")}
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # the job's plugins
    env.pop("RAY_metrics_report_interval_ms", None)  # Ray's default interval: what users get
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
            f"--dashboard-agent-listen-port={ports['agent']}",
            f"--ray-client-server-port={ports['client']}",
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
    try:
        wait_for(lambda: answers(f"{address}/api/version"), 120, "the Ray dashboard")
        yield {"address": address, "env": env, "temp_dir": Path(temp_dir), **ports}
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(ray_head: dict, tmp_path_factory: pytest.TempPathFactory):
    """deploy/monitoring/prometheus.yml as shipped, but reading this head's service-discovery file (Ray keeps it
    in the head's temp dir, /tmp/ray for a head started without --temp-dir)."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (.ci/run installs the Debian package)")
        pytest.skip("prometheus is not installed: apt-get install prometheus (.ci/run does)")
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (sd,) = config["scrape_configs"][0]["file_sd_configs"]
    sd["files"] = [str(ray_head["temp_dir"] / Path(sd["files"][0]).name)]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={work / 'data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{url}/-/ready"), 60, "Prometheus")
        yield url
    finally:
        stop_group(process)


def prometheus_query(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 5})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def scraped_after(url: str, moment: float) -> bool:
    with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=10) as response:
        targets = json.loads(response.read())["data"]["activeTargets"]
    stamps = []
    for target in targets:  # RFC 3339 in UTC with nanoseconds, e.g. 2026-01-02T03:04:05.123456789Z
        whole, fraction = re.match(r"([\d-]+T[\d:]+)(\.\d+)?", target["lastScrape"]).groups()
        stamps.append(datetime.fromisoformat(whole + "+00:00").timestamp() + float(fraction or 0))
    return bool(stamps) and min(stamps) > moment


def has_values(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def dashboard_queries() -> list[tuple[str, str]]:
    """Every panel query, with the dashboard's variables as Grafana fills them for this run."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$run", RUN_NAME).replace("$__rate_interval", RATE_WINDOW))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def job(ray_head: dict, prometheus: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("job") / "run"
    entrypoint = [
        sys.executable,
        "-m",
        "cluster.train",
        "--config",
        str(RECIPE),
        f"run_dir={run_dir}",
        *SMALL_RUN,
        f"learner.steps={STEPS}",
        "data.num_train=128",
        f"metrics.run_name={RUN_NAME}",
        "metrics.loggers=[jsonl, tensorboard]",
        "metrics.completions_every=50",
        "evaluation.every_steps=0",  # held-out accuracy at the first and the last step only
        # a step of real-world length (0.3 s) instead of the tiny model's 0.07 s, so the run spans report intervals
        "rewards.plugins=[{name: arithmetic}, {name: 'tests.plugins_for_tests:pause', weight: 0.0}]",
        "metrics.completions_rows=4",
    ]
    start = time.time()
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

    client = JobSubmissionClient(ray_head["address"])
    done = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    wait_for(lambda: client.get_job_status(job_id) in done, 600, f"job {job_id}")
    end = time.time()
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    # What the run's processes set before they ended reaches the metrics agent within one report interval (10 s);
    # wait until Prometheus has scraped every target after that.
    wait_for(lambda: scraped_after(prometheus, end + 10), 60, "a scrape after the job")
    return {"run_dir": run_dir, "logs": logs, "start": start, "end": end, "prometheus": prometheus}


def test_ray_job_submit_tiny_recipe(ray_head: dict, job: dict) -> None:
    from ray.util.state import list_actors

    assert f"agrpo train: done {STEPS} steps" in job["logs"]
    names = {a.name for a in list_actors(address=ray_head["address"], limit=1000)}
    assert {"rollout-0", "learner-0", "reward-0"} <= names

    run_dir = job["run_dir"]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == STEPS
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / f"step-{STEPS:08d}" / "model" / "model.safetensors").is_file()
    # the trackers: completion tables every 50 steps (whole groups of 4), TensorBoard event files
    completions = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert sorted({c["step"] for c in completions}) == [50, 100, 150]
    assert all(len([c for c in completions if c["step"] == s]) == 4 for s in (50, 150))
    assert {"prompt", "completion", "reward", "reward/arithmetic", "advantage"} <= set(completions[0])
    assert completions[0]["prompt"] and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_every_dashboard_panel_has_data_for_the_run(job: dict) -> None:
    empty = [
        f"{title}: {expr}"
        for title, expr in dashboard_queries()
        if not has_values(prometheus_query(job["prometheus"], expr, job["start"], time.time()))
    ]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_accuracy_set_at_the_first_and_last_step_stays_in_prometheus_throughout(job: dict) -> None:
    """Held-out accuracy is set at the first and the last step, a minute apart; Ray alone would drop it from its export
    20 s after each set. Every 20 s window from its first sample to the run's end must hold a sample."""
    (series,) = prometheus_query(job["prometheus"], f'ray_agrpo_accuracy{{run="{RUN_NAME}"}}', job["start"], job["end"])
    stamps = [float(t) for t, _ in series["values"]]
    steps = prometheus_query(job["prometheus"], f'ray_agrpo_learner_step{{run="{RUN_NAME}"}}', job["start"], job["end"])
    last_step_seen = max(float(t) for s in steps for t, _ in s["values"])
    assert last_step_seen - stamps[0] > 30, "the run outlasts what Ray alone keeps of a gauge (20 s)"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps, default=0) <= 20 and stamps[-1] >= last_step_seen - 20, (stamps, last_step_seen)


def test_a_loopback_cluster_address_connects_in_seconds(ray_head: dict) -> None:
    """Ray used to rewrite 127.0.0.1 to the machine's network address and hang for minutes; a run started
    without the loopback variable in its environment (the `cluster` package sets it) now connects at once."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    script = (
        "import cluster, ray\n"
        "from cluster.ray_setup import ray_cluster\n"
        "from common.config import ClusterConfig\n"
        f"with ray_cluster(ClusterConfig(address='127.0.0.1:{ray_head['gcs']}')):\n"
        "    print('connected to', ray.get_runtime_context().gcs_address)\n"
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"connected to 127.0.0.1:{ray_head['gcs']}" in result.stdout
    assert time.monotonic() - start < 60
