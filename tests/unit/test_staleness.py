"""StalenessGate: the one formula learner_version - group_version <= max_staleness, and its counters."""

import pytest

from cluster.staleness import StalenessGate


def test_on_policy_gate_accepts_only_current_version() -> None:
    gate = StalenessGate(max_staleness=0)
    assert gate.admit(learner_version=3, group_version=3)
    assert not gate.admit(learner_version=3, group_version=2)
    assert (gate.accepted, gate.dropped) == (1, 1)
    assert gate.histogram == {0: 1, 1: 1}


def test_lagged_gate_and_counts_add_up() -> None:
    gate = StalenessGate(max_staleness=1)
    decisions = [gate.admit(5, v) for v in (5, 4, 3, 4, 1)]
    assert decisions == [True, True, False, True, False]
    assert gate.accepted + gate.dropped == 5
    assert gate.histogram == {0: 1, 1: 2, 2: 1, 4: 1}


def test_state_round_trip() -> None:
    gate = StalenessGate(max_staleness=2)
    for v in (0, 0, 1):
        gate.admit(3, v)
    other = StalenessGate(max_staleness=2)
    other.load_state_dict(gate.state_dict())
    assert (other.accepted, other.dropped, other.histogram) == (gate.accepted, gate.dropped, gate.histogram)


def test_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        StalenessGate(max_staleness=-1)
    with pytest.raises(ValueError, match="newer than learner version"):
        StalenessGate(max_staleness=1).admit(learner_version=1, group_version=2)
