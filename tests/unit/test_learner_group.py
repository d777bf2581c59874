"""How a step's groups are shared among learner ranks, including a short or empty step."""

from __future__ import annotations

from learner.group import split_groups
from tests.unit.test_staleness import group


def test_equal_shares_are_contiguous() -> None:
    groups = [group(0, i) for i in range(8)]
    shares = split_groups(groups, 4)
    assert shares is not None
    assert [[g.prompt_index for g in share] for share in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_a_short_step_keeps_every_group_and_shares_differ_by_at_most_one() -> None:
    groups = [group(0, i) for i in range(7)]
    shares = split_groups(groups, 3)
    assert shares is not None
    assert [len(share) for share in shares] == [3, 2, 2]
    assert [g.prompt_index for share in shares for g in share] == list(range(7))


def test_fewer_groups_than_ranks_is_no_update() -> None:
    assert split_groups([group(0, 0)], 2) is None
    assert split_groups([], 1) is None
    assert [len(share) for share in split_groups([group(0, 0)], 1) or []] == [1]
