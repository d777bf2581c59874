"""CollapseGuard: windowed success rate against its best, quiet at the start and while healthy."""

from cluster.collapse import CollapseGuard, divergence


def test_healthy_and_noisy_runs_pass() -> None:
    guard = CollapseGuard(window=4, ratio=0.3)
    rates = [0.1, 0.2, 0.15, 0.3, 0.0, 0.35, 0.4, 0.2, 0.45, 0.5]
    assert all(guard.update(r) is None for r in rates)


def test_collapse_is_reported_once_the_window_mean_drops() -> None:
    guard = CollapseGuard(window=3, ratio=0.3)
    for r in [0.5, 0.6, 0.55]:
        assert guard.update(r) is None
    assert guard.update(0.1) is None
    assert guard.update(0.0) is None
    message = guard.update(0.0)
    assert message is not None
    assert "mean over the last 3 steps is 0.033" in message
    assert "its best 0.550" in message


def test_quiet_while_the_policy_never_succeeded_and_when_disabled() -> None:
    guard = CollapseGuard(window=2, ratio=0.5)
    assert all(guard.update(r) is None for r in [0.04, 0.0, 0.0, 0.0])
    off = CollapseGuard(window=0, ratio=0.5)
    assert all(off.update(r) is None for r in [1.0, 1.0, 0.0, 0.0, 0.0])


def test_state_round_trip_resumes_the_same_decisions() -> None:
    a = CollapseGuard(window=3, ratio=0.3)
    for r in [0.5, 0.6, 0.55, 0.1]:
        a.update(r)
    b = CollapseGuard(window=3, ratio=0.3)
    b.load_state_dict(a.state_dict())
    assert [a.update(r) for r in [0.0, 0.0]] == [b.update(r) for r in [0.0, 0.0]]


def test_divergence_is_a_non_finite_loss_or_gradient_norm() -> None:
    assert divergence({"loss": 0.3, "grad_norm": 12.0, "success_rate": 0.0}) is None
    assert divergence({"skipped": "1 groups for 2 learner ranks"}) is None  # a step without an update
    assert divergence({"loss": float("nan"), "grad_norm": 1.0}) == "the learner diverged (loss = nan)"
    assert (
        divergence({"loss": float("inf"), "grad_norm": float("nan")})
        == "the learner diverged (loss = inf, grad_norm = nan)"
    )
