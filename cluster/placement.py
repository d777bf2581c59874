"""Placement groups for the rollout and learner roles, checked against the cluster before anything waits.

A recipe that asks for more than the cluster has must fail at once with what is missing, not hang in a
pending placement group; `check_capacity` compares the demand with the cluster's totals first.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from common.config import Config
from common.errors import UserError


@dataclass
class RolePlacement:
    """One placement group per role; actor i of the role goes to bundle i."""

    name: str
    group: PlacementGroup
    bundles: list[dict[str, float]]

    def actor_options(self, index: int) -> dict[str, object]:
        """Ray `.options()` that put actor `index` of the role into its bundle with the bundle's resources."""
        bundle = self.bundles[index]
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.group, placement_group_bundle_index=index
            ),
            "num_cpus": bundle.get("CPU", 0.0),
            "num_gpus": bundle.get("GPU", 0.0),
        }


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus > 0 else {"CPU": cpus}


def role_bundles(config: Config) -> dict[str, list[dict[str, float]]]:
    """Bundles per role as the config asks: GPU bundles when gpus_per_* > 0, CPU bundles otherwise."""
    c = config.cluster
    return {
        "rollout": [_bundle(c.cpus_per_rollout_worker, c.gpus_per_rollout_worker)] * config.rollout.num_workers,
        "learner": [_bundle(c.cpus_per_learner, c.gpus_per_learner)] * config.learner.world_size,
        "reward": [_bundle(c.cpus_per_reward_actor, 0.0)] * config.rewards.pool_size,
    }


def check_capacity(demand: dict[str, list[dict[str, float]]], available: dict[str, float]) -> None:
    """Raise a UserError naming every resource the cluster lacks, with the per-role breakdown."""
    totals: dict[str, float] = {}
    for bundles in demand.values():
        for bundle in bundles:
            for key, amount in bundle.items():
                totals[key] = totals.get(key, 0.0) + amount
    missing = [key for key, amount in totals.items() if amount > available.get(key, 0.0) + 1e-9]
    if missing:
        parts = []
        for key in sorted(missing):
            roles = ", ".join(
                f"{role} {len(b)} x {b[0].get(key, 0.0):g}" for role, b in demand.items() if b and b[0].get(key)
            )
            parts.append(f"{totals[key]:g} {key} ({roles}) but the cluster has {available.get(key, 0.0):g}")
        raise UserError("the config needs " + "; ".join(parts) + ": lower the counts or add nodes")


def create_placements(config: Config, timeout_s: float = 120.0) -> dict[str, RolePlacement]:
    """Create and wait for the rollout and learner placement groups (reward actors are plain CPU actors)."""
    demand = role_bundles(config)
    check_capacity(demand, ray.cluster_resources())
    placements = {}
    for role in ("rollout", "learner"):
        group = placement_group(demand[role], strategy="PACK", name=f"{config.cluster.namespace}-{role}")
        placements[role] = RolePlacement(role, group, demand[role])
    for role, placement in placements.items():
        if not placement.group.wait(timeout_seconds=timeout_s):
            for p in placements.values():
                remove_placement_group(p.group)
            raise UserError(
                f"the {role} placement group {demand[role]} was not placed within {timeout_s:.0f} s: "
                f"the cluster has {ray.available_resources()} free"
            )
    return placements


def remove_placements(placements: dict[str, RolePlacement]) -> None:
    for placement in placements.values():
        remove_placement_group(placement.group)
