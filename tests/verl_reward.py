"""A reward plugin as another package would ship it, for the generic-task test: registered only by an entry point
of a distribution the test creates on the fly, and importing nothing of agrpo's.

It reads the columns verl's rows carry (`data_source`, `reward_model.ground_truth`, `extra_info.index`), so a
column lost between the data file and the reward actors fails the call, and the test counts failures.
"""

from __future__ import annotations

from typing import Any


def sum_reward(completion: str, reference: dict[str, Any], target_chars: int = 4) -> float:
    """1 for the ground truth as the whole answer, minus how far the length is from `target_chars` (so an
    untrained model's groups still differ and have advantages to follow)."""
    truth = reference["reward_model"]["ground_truth"]
    if reference["data_source"] != "toy/sums" or reference["extra_info"]["index"] < 0:
        raise ValueError(f"unexpected row {reference}")
    answer = completion.split("<answer>")[-1].split("</answer>")[0].strip()
    return float(answer == truth) - abs(len(completion) - target_chars) / 8
