"""Deployment files stay true to the code they deploy.

Recipes, cluster definitions, monitoring configs and the operations guide are read by people and by
Ray/KubeRay/Prometheus/Grafana, never by our runtime, so nothing else would notice if they drifted from
the config schema, the metric names the code registers, or the fields those tools require.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

from cluster.placement import check_capacity, role_bundles
from common.config import ClusterConfig, Config, load_config
from common.errors import UserError
from common.metrics import DEFINITIONS, RUN_TAG, RoleMetrics
from rewards.metrics import REWARD_DEFINITIONS, RayRewardMetrics
from rewards.registry import ENTRY_POINT_GROUP, build_reward_fn

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RECIPES = DEPLOY / "recipes"
CLUSTER = DEPLOY / "cluster"
OPERATIONS = REPO / "docs" / "operations.md"
LLADA_RECIPES = sorted(RECIPES.glob("llada8b-*.yaml"))
GSM8K = RECIPES / "llada8b-gsm8k.yaml"
BLOCK_RECIPE = RECIPES / "trado4b-math.yaml"
DEPLOY_DATA_FILES = sorted(p for ext in ("yaml", "yml", "json") for p in DEPLOY.rglob(f"*.{ext}"))
# Labels Ray adds to every exported series, usable in dashboard queries besides a metric's own tags.
RAY_LABELS = {"SessionName", "NodeAddress", "WorkerId", "Component", "Version", "instance", "job"}


def read(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def nodes_of(recipe: Path) -> int:
    """A recipe's node count is in its name; the GPU-fit test holds it to that."""
    return 2 if recipe.stem.endswith("-2node") else 1


def cluster_node_resources() -> list[tuple[dict[str, float], dict[str, float]]]:
    """(head, GPU worker) Ray resources of the launcher config and of the KubeRay cluster."""
    launcher = read(CLUSTER / "aws-gpu.yaml")["available_node_types"]
    kuberay = read(CLUSTER / "kuberay-raycluster.yaml")["spec"]

    def limits(group: dict[str, Any]) -> dict[str, float]:
        lim = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        return {"CPU": float(lim["cpu"]), "GPU": float(lim.get("nvidia.com/gpu", 0))}

    return [
        (launcher["head"]["resources"], launcher["gpu_worker"]["resources"]),
        (limits(kuberay["headGroupSpec"]), limits(kuberay["workerGroupSpecs"][0])),
    ]


# ---------------------------------------------------------------------------------------------- metrics


class _Created:
    """Stands in for ray.util.metrics: records the (kind, name, tag keys) of every metric object created."""

    def __init__(self) -> None:
        self.created: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _make(self, kind: str, name: str, tag_keys: tuple[str, ...], **_: object) -> object:
        self.created[name] = (kind, tag_keys)
        return self

    def Gauge(self, name: str, **kwargs: object) -> object:
        return self._make("gauge", name, **kwargs)

    def Counter(self, name: str, **kwargs: object) -> object:
        return self._make("counter", name, **kwargs)

    def Histogram(self, name: str, **kwargs: object) -> object:
        return self._make("histogram", name, **kwargs)


def registered_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (kind, tag keys) of every agrpo_* metric the runtime creates, read from the objects the code
    itself creates (the roles' table through `RoleMetrics`, the reward service's through `RayRewardMetrics`)."""
    factory = _Created()
    roles = RoleMetrics("r", factory=factory)
    for name in DEFINITIONS:
        roles._get(name)
    rewards = RayRewardMetrics("r", factory=factory)
    for name in REWARD_DEFINITIONS:
        rewards.metrics._get(name)
    return dict(factory.created)


def exported_names(name: str, kind: str) -> set[str]:
    """Ray 2.60's Prometheus form: `ray_` prefix; counters end in one `_total`; histograms split in three."""
    base = f"ray_{name}"
    if kind == "counter":
        return {base.removesuffix("_total") + "_total"}
    if kind == "histogram":
        return {base + suffix for suffix in ("_bucket", "_sum", "_count")}
    return {base}


def exported_table() -> dict[str, str]:
    """Exported series name -> registered metric name."""
    return {series: name for name, (kind, _) in registered_metrics().items() for series in exported_names(name, kind)}


def metric_identifiers(expr: str) -> list[str]:
    return re.findall(r"(?<![\w:])((?:ray_)?agrpo_\w*)", expr)


def label_names(expr: str) -> set[str]:
    """Labels used in `by (...)` / `without (...)` clauses and in `{...}` matchers."""
    names: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(part.strip() for part in group.split(",") if part.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = read(DEPLOY / "monitoring" / "grafana-dashboard.json")
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_metric_collection_sees_both_sources() -> None:
    metrics = registered_metrics()
    assert set(DEFINITIONS) < set(metrics)
    assert {name for name in metrics if name not in DEFINITIONS} == {
        name for name in metrics if name.startswith("agrpo_reward_") and name != "agrpo_reward_mean_by_task"
    }
    assert all(tags[0] == RUN_TAG for _, tags in metrics.values())


def test_exported_names_follow_ray_rules() -> None:
    assert exported_names("agrpo_reward_calls", "counter") == {"ray_agrpo_reward_calls_total"}
    assert exported_names("agrpo_rollout_groups_total", "counter") == {"ray_agrpo_rollout_groups_total"}
    assert exported_names("agrpo_staleness", "histogram") == {
        "ray_agrpo_staleness_bucket",
        "ray_agrpo_staleness_sum",
        "ray_agrpo_staleness_count",
    }
    assert metric_identifiers("sum by (le) (rate(ray_agrpo_x_bucket[5m])) / agrpo_y") == [
        "ray_agrpo_x_bucket",
        "agrpo_y",
    ]
    assert label_names('max by (le, plugin) (ray_agrpo_a{task="x", worker!~"1"})') == {"le", "plugin", "task", "worker"}


def test_dashboard_queries_only_registered_metrics_with_their_labels() -> None:
    table = exported_table()
    metrics = registered_metrics()
    problems = []
    for title, expr in dashboard_exprs():
        names = metric_identifiers(expr)
        if not names:
            problems.append(f"{title}: {expr!r} queries no agrpo metric")
        allowed = set(RAY_LABELS)
        for series in names:
            if series not in table:
                problems.append(f"{title}: {series} is not an exported agrpo metric")
                continue
            allowed.update(metrics[table[series]][1])
            if series.endswith("_bucket"):
                allowed.add("le")
        problems += [f"{title}: label {label!r} not on {names}" for label in label_names(expr) - allowed]
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_selects_and_keeps_apart_the_chosen_runs() -> None:
    """Each agrpo series is filtered by the `run` variable and every aggregation keeps `run`, so two runs on one
    cluster are two lines, never one max()."""
    problems = []
    for title, expr in dashboard_exprs():
        for series in re.findall(r"(?<![\w:])(ray_agrpo_\w+)(\{[^}]*\})?", expr):
            if 'run=~"$run"' not in series[1]:
                problems.append(f"{title}: {series[0]} is not filtered by run")
        for keys in re.findall(r"\b(?:max|min|sum|avg|count)\s*(?:by\s*\(([^)]*)\))?\s*\(", expr):
            if "run" not in [k.strip() for k in keys.split(",")]:
                problems.append(f"{title}: an aggregation drops run: {expr}")
    assert not problems, "\n".join(problems)


def test_dashboard_shows_every_registered_metric() -> None:
    table = exported_table()
    shown = {table[s] for _, expr in dashboard_exprs() for s in metric_identifiers(expr) if s in table}
    assert set(registered_metrics()) - shown == set()


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = read(DEPLOY / "monitoring" / "grafana-dashboard.json")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "run"]
    run = dashboard["templating"]["list"][1]
    assert metric_identifiers(run["definition"]) and run["includeAll"] and run["allValue"] == ".*"
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


def test_prometheus_uses_rays_service_discovery_file() -> None:
    config = read(DEPLOY / "monitoring" / "prometheus.yml")
    files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


def test_operations_metric_table_lists_exactly_the_registered_metrics() -> None:
    rows = re.findall(r"^\| `(agrpo_\w+)` \| (\w+) \|", OPERATIONS.read_text(), flags=re.MULTILINE)
    assert {name: kind for name, kind in rows} == {name: kind for name, (kind, _) in registered_metrics().items()}
    assert len(rows) == len(registered_metrics())


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("path", DEPLOY_DATA_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    data = read(path)
    assert isinstance(data, dict) and data


def test_deploy_holds_the_expected_files() -> None:
    names = {p.name for p in LLADA_RECIPES}
    assert names == {
        "llada8b-gsm8k.yaml",
        "llada8b-gsm8k-2node.yaml",
        "llada8b-math500.yaml",
        "llada8b-countdown.yaml",
        "llada8b-sudoku.yaml",
    }
    for name in ("aws-gpu.yaml", "runtime_env.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "Dockerfile"):
        assert (CLUSTER / name).is_file(), name


def is_config_key(key: str) -> bool:
    """True if `a.b.c` names a schema field; parts below a non-section field (a dict, a list) are free."""
    node: type[BaseModel] | None = Config
    for part in key.split("."):
        if node is None:
            return True
        field = node.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        node = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def test_docs_reference_existing_files_and_config_keys() -> None:
    sections = "|".join(name for name, f in Config.model_fields.items() if isinstance(f.default_factory, type))
    key_pattern = re.compile(rf"`((?:{sections})(?:\.\w+)+)(?:=[^`]*)?`")
    problems = []
    for doc in (OPERATIONS, DEPLOY / "README.md"):
        text = doc.read_text()
        refs = [
            REPO / ref
            for ref in re.findall(r"deploy/[\w./-]+\.(?:yaml|yml|json|toml|md)|deploy/cluster/Dockerfile", text)
        ]
        if doc.parent == DEPLOY:
            refs += [DEPLOY / ref for ref in re.findall(r"`((?:recipes|cluster|monitoring)/[\w.-]+)`", text)]
        problems += [f"{doc.name}: {ref.relative_to(REPO)} does not exist" for ref in refs if not ref.is_file()]
        for key in key_pattern.findall(text):
            if Path(key).suffix not in {".jsonl", ".json", ".yaml", ".md", ".py", ".png"} and not is_config_key(key):
                problems.append(f"{doc.name}: `{key}` is not a config key")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_validates_against_the_schema(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_released_recipe_numbers() -> None:
    """ALGORITHM.md section 3, 'Released recipe'."""
    c = load_config(GSM8K)
    assert (c.algorithm.name, c.algorithm.k, c.sampler.steps) == ("agrpo", 24, 128)
    assert (c.algorithm.timestep_sampling, c.algorithm.importance_sampling) == ("low_discrepancy", "entropy")
    assert (c.algorithm.clip_eps, c.algorithm.beta, c.algorithm.group_size) == (0.2, 0.0, 8)
    assert (c.sampler.gen_length, c.sampler.block_length, c.sampler.remasking) == (384, 12, "random")
    assert (c.sampler.temperature, c.sampler.top_p, c.sampler.top_k) == (0.6, 0.99, 150)
    assert c.sampler.steps % (c.sampler.gen_length // c.sampler.block_length) == 0
    lora = c.learner.lora
    assert (lora.enabled, lora.r, lora.alpha) == (True, 64, 64)
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    assert (c.learner.lr, c.learner.schedule, c.learner.warmup_ratio) == (5e-6, "cosine", 0.01)
    assert (c.learner.betas, c.learner.weight_decay, c.learner.grad_clip) == ((0.9, 0.99), 0.01, 1.0)
    assert (c.learner.zero_stage, c.model.dtype, c.rollout.max_staleness) == (2, "bfloat16", 0)
    assert c.learner.gradient_checkpointing  # not in the released recipe: memory only, the same gradients
    # 8 GPUs x per-GPU batch 8 x grad accumulation 2 = 128 sequences per optimizer step.
    assert c.learner.groups_per_step * c.algorithm.group_size == 8 * 8 * 2
    assert (c.data.task, c.data.template, c.rewards.scheme) == ("gsm8k", "agrpo", "agrpo")


# What a variant may change: the layout (with the same global batch) and the length of the run.
LAYOUT_KEYS = {"sampler.batch_size", "learner.steps", "learner.world_size", "learner.grad_accumulation"}


@pytest.mark.parametrize("path", LLADA_RECIPES, ids=lambda p: p.name)
def test_variants_keep_the_released_algorithm(path: Path) -> None:
    released, variant = load_config(GSM8K).model_dump(), load_config(path).model_dump()
    for section in ("model", "algorithm", "sampler", "learner"):
        for key, value in released[section].items():
            if f"{section}.{key}" not in LAYOUT_KEYS:
                assert variant[section][key] == value, f"{section}.{key}"
    learner = variant["learner"]
    assert learner["groups_per_step"] // (learner["world_size"] * learner["grad_accumulation"]) == 1
    assert variant["rewards"]["plugins"] == [{"name": variant["data"]["task"], "weight": 1.0, "kwargs": {}}]


@pytest.mark.parametrize("path", LLADA_RECIPES, ids=lambda p: p.name)
def test_recipe_paths_are_shared_filesystem_parameters(path: Path) -> None:
    c = load_config(path)
    assert c.model.path.startswith("/models/")
    assert c.data.path is not None and c.data.path.startswith("/data/") and "{split}" in c.data.path
    assert c.run_dir.startswith("/checkpoints/")
    moved = load_config(path, ["model.path=/mnt/m/LLaDA", "data.path=/mnt/d/{split}.jsonl", "run_dir=/mnt/r"])
    assert (moved.model.path, moved.data.path, moved.run_dir) == ("/mnt/m/LLaDA", "/mnt/d/{split}.jsonl", "/mnt/r")


@pytest.mark.parametrize("path", LLADA_RECIPES, ids=lambda p: p.name)
def test_recipe_header_states_hardware_and_estimated_cost(path: Path) -> None:
    header = path.read_text().split("\nseed:")[0]
    assert "Hardware:" in header
    assert re.search(r"Cost \(ESTIMATE[^)]*\):.*GPU-hours", header, flags=re.DOTALL)


@pytest.mark.parametrize("path", LLADA_RECIPES, ids=lambda p: p.name)
def test_recipe_fills_exactly_its_gpu_nodes(path: Path) -> None:
    """The demand fits the GPU worker nodes of the cluster definitions, using every GPU; one GPU less fails."""
    c = load_config(path)
    nodes = nodes_of(path)
    demand = role_bundles(c)
    gpus = sum(b.get("GPU", 0.0) for bundles in demand.values() for b in bundles)
    assert c.cluster.gpus_per_rollout_worker == 1 and c.cluster.gpus_per_learner == 1
    for head, worker in cluster_node_resources():
        capacity = {"CPU": head["CPU"] + nodes * worker["CPU"], "GPU": nodes * worker["GPU"]}
        assert gpus == capacity["GPU"]
        check_capacity(demand, capacity)
        with pytest.raises(UserError, match=rf"needs {gpus:g} GPU \(rollout .* learner .*\) but the cluster has"):
            check_capacity(demand, {**capacity, "GPU": gpus - 1})


@pytest.mark.parametrize("path", LLADA_RECIPES, ids=lambda p: p.name)
def test_recipe_rewards_resolve_and_unsafe_loading_stays_off(path: Path) -> None:
    c = load_config(path)
    assert build_reward_fn(c.rewards) is not None
    assert c.rewards.modules == []
    assert not c.model.allow_pickle and not c.model.trust_remote_code


def test_block_diffusion_recipe_is_a_one_node_parameterised_run() -> None:
    """The real block-diffusion checkpoint recipe: hardware and cost stated, paths are parameters, the 8 GPUs of
    one node filled, TraDo's block of 4 with the cache, LoRA on Qwen3 module names, nothing unsafe."""
    header = BLOCK_RECIPE.read_text().split("\nseed:")[0]
    assert "Hardware:" in header and re.search(r"Cost \(ESTIMATE[^)]*\):.*GPU-hours", header, flags=re.DOTALL)
    c = load_config(BLOCK_RECIPE)
    assert c.model.path.startswith("/models/") and c.run_dir.startswith("/checkpoints/")
    assert c.data.path is not None and c.data.path.startswith("/data/") and "{split}" in c.data.path
    assert (c.sampler.block_length, c.sampler.kv_cache, c.sampler.remasking) == (4, "auto", "random")
    assert set(c.learner.lora.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    gpus = sum(b.get("GPU", 0.0) for bundles in role_bundles(c).values() for b in bundles)
    for head, worker in cluster_node_resources():
        assert gpus == worker["GPU"]
        check_capacity(role_bundles(c), {"CPU": head["CPU"] + worker["CPU"], "GPU": worker["GPU"]})
    assert build_reward_fn(c.rewards) is not None
    assert not c.model.allow_pickle and not c.model.trust_remote_code


def test_reward_plugins_load_only_by_configured_name() -> None:
    installed = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "length_penalty"]
    if not installed:
        pytest.skip("the example plugin package deploy/examples/agrpo_example_reward is not installed")
    module = installed[0].value.split(":")[0]
    sys.modules.pop(module, None)
    build_reward_fn(load_config(GSM8K).rewards)
    assert module not in sys.modules
    build_reward_fn(load_config(GSM8K, ["rewards.plugins=[{name: gsm8k}, {name: length_penalty}]"]).rewards)
    assert module in sys.modules


def test_dashboard_binds_to_loopback_by_default() -> None:
    assert ClusterConfig().dashboard_host == "127.0.0.1"


# ---------------------------------------------------------------------------------------------- clusters


def gpu_limit(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    """The fields KubeRay needs, GPU limits on workers, and the shared volume at the recipes' paths."""
    claim = read(CLUSTER / "kuberay-pvc.yaml")["metadata"]["name"]
    head = spec["headGroupSpec"]
    groups = [("head", head), *((g["groupName"], g) for g in spec["workerGroupSpecs"])]
    assert spec["workerGroupSpecs"], where
    for name, group in groups:
        assert isinstance(group["rayStartParams"], dict), f"{where} {name}"
        pod = group["template"]["spec"]
        containers = pod["containers"]
        assert containers and all(c["image"] for c in containers), f"{where} {name}"
        mounts = {m["mountPath"] for c in containers for m in c.get("volumeMounts", [])}
        assert {"/models", "/data", "/checkpoints"} <= mounts, f"{where} {name}"
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {claim}, f"{where} {name}"
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
    assert sum(gpu_limit(c) for c in head["template"]["spec"]["containers"]) == 0, where
    for group in spec["workerGroupSpecs"]:
        assert group["replicas"] >= 1 and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(gpu_limit(c) == 8 for c in group["template"]["spec"]["containers"]), where


def test_kuberay_raycluster_manifest() -> None:
    manifest = read(CLUSTER / "kuberay-raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    check_ray_cluster_spec(manifest["spec"], "RayCluster")
    assert manifest["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_kuberay_rayjob_manifest() -> None:
    manifest = read(CLUSTER / "kuberay-rayjob.yaml")
    spec = manifest["spec"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert spec["entrypoint"].startswith("python -m cluster.train --config deploy/recipes/llada8b-gsm8k.yaml")
    recipe = spec["entrypoint"].split("--config ")[1].split()[0]
    assert (REPO / recipe).is_file()
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and all(isinstance(v, str) for v in runtime_env["env_vars"].values())
    check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob")


def test_ray_cluster_launcher_config() -> None:
    config = read(CLUSTER / "aws-gpu.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert max(t["resources"].get("GPU", 0) for t in types.values()) == 8
    assert any('pip install -q -e "$HOME/agrpo"' in command for command in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    for flag in ("--head", "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--metrics-export-port=8080"):
        assert flag in head
    assert "--metrics-export-port=8080" in " ".join(config["worker_start_ray_commands"])


def test_runtime_env() -> None:
    env = read(CLUSTER / "runtime_env.yaml")
    assert env["working_dir"] == "."
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env["env_vars"]
