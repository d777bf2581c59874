"""The whole loop on a local Ray cluster: rollout workers, learner ranks (DeepSpeed, gloo), reward actor.

Each run is a few steps of the tiny recipe; assertions are on weights, counters and files, never on
accuracy or time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from peft import PeftModel
from safetensors.torch import load_file

from cluster.held_out import HeldOutEvaluator
from cluster.rollout_dispatch import RolloutDispatcher
from cluster.train import open_run, run_steps, train
from cluster.training_run import TrainingRun
from cluster.weight_broadcaster import worker_identities
from common.config import Config, load_config
from common.model.loading import load_policy, mask_predictor_logits
from learner.group import LearnerGroup, LearnerRankDied
from tests.small_run import RECIPE, SMALL_RUN


def small_config(run_dir: Path, *overrides: str) -> Config:
    """The tiny recipe shrunk to seconds (tests/small_run.py), then the test's own overrides."""
    return load_config(RECIPE, [f"run_dir={run_dir}", *SMALL_RUN, *overrides])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, namespace="agrpo")
    yield
    ray.shutdown()


def run_to_end(config: Config) -> tuple[TrainingRun, dict[str, list[str]]]:
    """A whole run, reading each role's weight checksum from the actors before they are torn down (on every
    learner rank: under ZeRO-3 gathering the weights is a collective)."""
    with open_run(config) as run:
        run_steps(run)
        checksums = {
            "learner": run.learners.call("checksum"),
            "rollout": ray.get([w.checksum.remote() for w in run.workers]),
        }
    return run, checksums


def model_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors"))


def all_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def metrics_lines(run_dir: Path) -> list[dict]:
    """The per-step training lines (the step-0 line only holds the base model's accuracy)."""
    return [line for line in all_lines(run_dir) if "prompts" in line]


@pytest.mark.parametrize("staleness", [0, 1])
def test_two_workers_two_ranks_end_on_learner_weights(local_ray, tmp_path: Path, staleness: int) -> None:
    config = small_config(
        tmp_path,
        "rollout.num_workers=2",
        "learner.world_size=2",
        "learner.steps=3",
        f"rollout.max_staleness={staleness}",
    )
    run, checksums = run_to_end(config)
    assert checksums["rollout"] == [checksums["learner"][0]] * 2
    assert checksums["learner"] == [checksums["learner"][0]] * 2
    gate = run.staleness
    assert gate.accepted + gate.dropped == 3 * 4
    assert sum(gate.histogram.values()) == 3 * 4
    assert max(gate.histogram) <= staleness
    assert run.rollouts.counters.groups_dispatched == run.rewards.counters.groups_rewarded == 3 * 4
    if staleness == 1:
        assert gate.histogram.get(1, 0) > 0, "with staleness 1 later batches overlap the update"
    lines = metrics_lines(tmp_path)
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert all(0 <= line["staleness_mean"] <= staleness for line in lines), [line["staleness_mean"] for line in lines]
    assert [s.version for s in run.broadcaster.history] == [0, 1, 2, 3]
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "step-00000003" / "manifest.json").is_file()


def counters(run: TrainingRun) -> dict:
    return {**vars(run.rollouts.counters), **vars(run.rewards.counters), **run.staleness.state_dict()}


def test_resume_is_exact(local_ray, tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted, _ = run_to_end(small_config(whole, "checkpoint.every_steps=100"))
    train(small_config(split, "checkpoint.every_steps=100", "checkpoint.stop_at=3"))
    assert not (split / "checkpoints" / "step-00000006").exists()
    resumed, _ = run_to_end(small_config(split, "checkpoint.every_steps=100", "checkpoint.resume=auto"))
    assert counters(resumed) == counters(uninterrupted)
    assert counters(resumed)["groups_dispatched"] == counters(resumed)["accepted"] == 6 * 4
    a, b = model_weights(whole, 6), model_weights(split, 6)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [line["prompts"] for line in metrics_lines(whole)] == [line["prompts"] for line in metrics_lines(split)]
    assert [line["step"] for line in metrics_lines(split)] == [1, 2, 3, 4, 5, 6]


def test_tis_with_staleness_scores_stale_groups_under_their_weights_and_resumes_exactly(
    local_ray, tmp_path: Path
) -> None:
    """max_staleness 1, two ZeRO-3 ranks: stale groups get pi_old from the weights that sampled them (swapping
    them in is a collective), so with exact rollouts the numerics read ~0 while the drift does not; the kept
    versions go into the checkpoint, and a resumed run repeats the uninterrupted one."""
    settings = [
        "algorithm.rollout_correction=tis",
        "learner.world_size=2",
        "learner.zero_stage=3",
        # The untrained policy never answers right; the length penalty gives its groups advantages to follow.
        "rewards.plugins=[{name: arithmetic}, {name: length_penalty, kwargs: {max_chars: 4}}]",
        "learner.lr=0.02",
        "learner.warmup_ratio=0",
    ]
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_to_end(small_config(whole, "checkpoint.every_steps=100", *settings))
    train(small_config(split, "checkpoint.every_steps=100", "checkpoint.stop_at=3", *settings))
    assert (split / "checkpoints" / "step-00000003" / "learner-0" / "rollout_weights.json").is_file()
    run_to_end(small_config(split, "checkpoint.every_steps=100", "checkpoint.resume=auto", *settings))
    a, b = model_weights(whole, 6), model_weights(split, 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = metrics_lines(whole)
    assert all(line["rollout_mismatch_max"] < 1e-4 for line in lines), [line["rollout_mismatch_max"] for line in lines]
    assert all(line["rollout_correction_fraction"] == 0 for line in lines)
    assert all(line["rollout_mismatch_tokens"] > 0 for line in lines)
    # Batch 1 is sampled with version 0 and trained at version 0; every later one is one version behind.
    assert lines[0]["policy_drift_max"] == 0 and all(line["policy_drift_max"] > 1e-3 for line in lines[1:])
    keys = ["rollout_mismatch_tokens", "policy_drift_max", "loss"]
    assert [line[k] for line in metrics_lines(split) for k in keys] == [line[k] for line in lines for k in keys]


def test_block_causal_model_trains_through_the_whole_loop(local_ray, tmp_path: Path) -> None:
    """Rollouts through the exact KV cache, learner updates on composite rows (DeepSpeed, LoRA), evaluation:
    on-policy, the learner recomputes the rollout's log-probs, and the workers end on the learner's weights."""
    config = small_config(
        tmp_path,
        "model.tiny.attention=block_causal",
        "model.tiny.block_size=4",
        "sampler.block_length=4",
        "rollout.max_staleness=0",
        "learner.steps=2",
        "learner.lora.enabled=true",
        "learner.lora.r=4",
        # The untrained policy never answers right; the length penalty gives its groups advantages to follow.
        "rewards.plugins=[{name: arithmetic}, {name: length_penalty, kwargs: {max_chars: 4}}]",
        "learner.warmup_ratio=0",
    )
    _, checksums = run_to_end(config)
    assert checksums["rollout"] == checksums["learner"]
    lines = metrics_lines(tmp_path)
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["rollout_mismatch_max"] < 1e-4 for line in lines), [line["rollout_mismatch_max"] for line in lines]
    model_dir = tmp_path / "checkpoints" / "step-00000002" / "model"
    assert json.loads((model_dir / "config.json").read_text())["attention"] == "block_causal"
    assert_adapter_applies_to_the_base(config, model_dir)


def assert_adapter_applies_to_the_base(config: Config, model_dir: Path) -> None:
    """A LoRA checkpoint's `model/adapter/` is a PEFT adapter: on the base it gives the merged model's logits."""
    adapter = json.loads((model_dir / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["base_model_name_or_path"]) == (config.learner.lora.r, None)  # tiny: no directory
    merged = load_policy(config.model.model_copy(update={"path": str(model_dir)}))  # checks the manifest too
    base = load_policy(config.model, seed=config.seed).model
    ids = torch.randint(9, 100, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, before = mask_predictor_logits(merged, ids), mask_predictor_logits(base, ids)
        got = mask_predictor_logits(PeftModel.from_pretrained(base, str(model_dir / "adapter")).eval(), ids)
    assert not torch.allclose(before, want, atol=1e-4), "the adapters did not train"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_incompatible_checkpoint_is_refused(local_ray, tmp_path: Path) -> None:
    train(small_config(tmp_path, "learner.steps=1"))
    with pytest.raises(Exception, match="different algorithm.group_size"):
        train(small_config(tmp_path, "learner.steps=2", "checkpoint.resume=auto", "algorithm.group_size=2"))


@pytest.mark.parametrize("lora", [False, True])
def test_kl_term_uses_the_starting_policy_as_reference(local_ray, tmp_path: Path, lora: bool) -> None:
    """diffu-GRPO with its KL term (as tiny-diffu-grpo.yaml): full fine-tuning keeps a frozen copy of the
    starting policy, LoRA switches the adapters off; the KL starts at 0 and grows once the policy moves."""
    config = small_config(
        tmp_path,
        "algorithm.name=diffu_grpo",
        "algorithm.diffu_grpo.beta=0.04",
        # The untrained policy never answers right; the length penalty gives its groups advantages to follow.
        "rewards.plugins=[{name: arithmetic}, {name: length_penalty, kwargs: {max_chars: 4}}]",
        "learner.lr=0.02",
        "learner.warmup_ratio=0",
        "learner.steps=3",
        f"learner.lora.enabled={str(lora).lower()}",
    )
    train(config)
    kl = [line["kl"] for line in metrics_lines(tmp_path) if "kl" in line]
    assert len(kl) == 3
    assert all(value >= 0 for value in kl)
    assert kl[-1] > 1e-4, kl


def test_killed_rollout_worker_is_restarted_and_nothing_is_lost(
    local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rollout-1 dies just before batch 3 reaches it: the chunk fails on the restarted, weightless
    worker, which the driver must re-sync before dispatching the chunk again."""
    config = small_config(tmp_path, "rollout.num_workers=2", "learner.steps=8", "rollout.max_staleness=1")
    dispatch = RolloutDispatcher.dispatch
    killed = []

    def kill_then_dispatch(self: RolloutDispatcher, batch: int, requests: list[dict]) -> None:
        if batch == 3:
            worker = self.workers[1]
            before = worker_identities([worker])[0]["pid"]
            ray.kill(worker, no_restart=False)
            # ray.kill is asynchronous: wait for the new process, or the chunk could still finish on the old one.
            while worker_identities([worker])[0]["pid"] == before:
                time.sleep(0.05)
            killed.append(batch)
        dispatch(self, batch, requests)

    monkeypatch.setattr(RolloutDispatcher, "dispatch", kill_then_dispatch)
    run, checksums = run_to_end(config)
    assert killed == [3]
    counters = run.rollouts.counters
    assert counters.worker_restarts >= 1
    assert counters.chunks_redispatched >= 1
    assert counters.groups_dispatched == counters.groups_sampled == run.rewards.counters.groups_rewarded == 8 * 4
    assert run.staleness.accepted + run.staleness.dropped == 8 * 4
    trained = [p for line in metrics_lines(tmp_path) for p in line["prompts"]]
    assert len(trained) == len(set(trained)) == 8 * 4 - run.staleness.dropped
    assert checksums["rollout"] == [checksums["learner"][0]] * 2


def test_embedded_default_builds_its_base_then_trains_and_writes_every_artifact(
    local_ray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agrpo train` on a reduced recipe: SFT base built once and cached, evaluations, plots, checkpoints."""
    base = tmp_path / "base-arithmetic"
    overrides = [
        f"model.path={base}",
        "model.build_if_missing=sft",
        "sft.steps=5",
        "sft.batch_size=8",
        "sft.num_items=32",
        "learner.steps=4",
        "evaluation.every_steps=2",
        "evaluation.num_items=16",
    ]
    result = train(small_config(tmp_path / "run", *overrides))
    assert (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file()
    assert "building it with agrpo sft" in capsys.readouterr().err
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/step-00000004/manifest.json"):
        assert (run / name).is_file(), name
    for plot in ("reward_accuracy.png", "loss.png", "staleness.png", "weight_sync.png"):
        assert (run / "plots" / plot).is_file(), plot
    assert [step for step, _ in result.evaluations] == [0, 2, 4]
    assert [line["step"] for line in all_lines(run) if "accuracy" in line] == [0, 2, 4]
    assert 0.0 <= result.base_accuracy <= 1.0 and 0.0 <= result.final_accuracy <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["evaluations"] == result.evaluations and summary["steps"] == 4
    assert summary["final_accuracy"] == result.final_accuracy and summary["wall_seconds"] > 0

    train(small_config(tmp_path / "run2", *overrides))
    assert "building it with agrpo sft" not in capsys.readouterr().err


def test_dead_learner_rank_stops_the_run_naming_the_rank_and_the_resume(
    local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(tmp_path, "learner.steps=6", "checkpoint.every_steps=2")
    submit = LearnerGroup.update

    def kill_before_step_3(self: LearnerGroup, groups: list, step: int) -> object:
        if step == 3:
            ray.kill(self.ranks[0], no_restart=True)
        return submit(self, groups, step)

    monkeypatch.setattr(LearnerGroup, "update", kill_before_step_3)
    with pytest.raises(LearnerRankDied) as info:
        train(config)
    message = str(info.value)
    assert "learner rank 0 died" in message
    assert "resume with `--resume`" in message and "step-00000002" in message


def test_zero3_with_two_ranks_runs_to_the_end(local_ray, tmp_path: Path) -> None:
    """Gathering ZeRO-3 weights is a collective: the sync, the checkpoint and the checksums involve every rank."""
    config = small_config(tmp_path, "learner.world_size=2", "learner.zero_stage=3", "learner.steps=2")
    run, checksums = run_to_end(config)
    assert checksums["learner"] == [checksums["learner"][0]] * 2
    assert checksums["rollout"] == [checksums["learner"][0]]
    assert [s.version for s in run.broadcaster.history] == [0, 1, 2]
    assert (tmp_path / "checkpoints" / "step-00000002" / "manifest.json").is_file()


def test_a_worker_killed_during_the_final_evaluation_is_restarted_and_the_run_ends(
    local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation is asked again of the restarted, re-synced worker; the final checkpoint is already written."""
    config = small_config(
        tmp_path, "learner.steps=2", "data.num_eval=400", "evaluation.num_items=400", "evaluation.batch_size=1"
    )
    original = HeldOutEvaluator.run
    killed: list[int] = []

    def kill_while_evaluating(self: HeldOutEvaluator, step: int) -> float:
        if step == 2 and not killed:
            pid = worker_identities([self.worker])[0]["pid"]
            killed.append(pid)
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        return original(self, step)

    monkeypatch.setattr(HeldOutEvaluator, "run", kill_while_evaluating)
    with open_run(config) as run:
        run_steps(run)
        assert worker_identities([run.workers[0]])[0]["pid"] != killed[0]
        assert run.rollouts.counters.worker_restarts == 1, "the kill landed while the worker was evaluating"
        assert [step for step, _ in run.evaluator.history] == [0, 2]
    assert (tmp_path / "checkpoints" / "step-00000002" / "manifest.json").is_file()
    assert [line["step"] for line in all_lines(tmp_path) if "accuracy" in line] == [0, 2]
