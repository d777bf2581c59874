"""Overrides that shrink the tiny recipe to a few seconds per step, shared by integration and e2e tests.

Arithmetic has the shortest answers (8-token completions suffice), the model is smaller, and a step is
4 groups of 4; CPU shares leave room for two rollout workers and two learner ranks on 2 CPUs.
"""

from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "deploy" / "recipes" / "tiny.yaml"

SMALL_RUN = [
    "model.path=tiny",
    "model.build_if_missing=never",
    "data.task=arithmetic",
    "data.generator={}",
    "rewards.plugins=[{name: arithmetic}]",
    "evaluation.num_items=16",
    "model.tiny.d_model=64",
    "model.tiny.n_layers=2",
    "model.tiny.mlp_hidden_size=128",
    "sampler.gen_length=8",
    "sampler.block_length=8",
    "sampler.steps=4",
    "algorithm.group_size=4",
    "algorithm.k=2",
    "learner.groups_per_step=4",
    "learner.steps=6",
    "data.num_train=64",
    "data.num_eval=16",
    "cluster.cpus_per_rollout_worker=0.4",
    "cluster.cpus_per_learner=0.4",
    "cluster.cpus_per_reward_actor=0.2",
]
