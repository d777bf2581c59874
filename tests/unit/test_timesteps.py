"""The timestep sampler: unbiased coefficients, coverage of the last step, strata, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from learner.timesteps import draw_uniforms, sample_timesteps, step_probabilities, timesteps_from_uniform

LAST = torch.tensor([0, 1, 3, 6, 7])
N = 8


def _entropy(seed: int = 0) -> torch.Tensor:
    """Step entropies over a wide range, so the proposal is far from uniform.

    They stay above 0.1: a step of (near) zero entropy is drawn with probability ~1e-8 and carries a
    ~1e8 weight, unbiased but far too heavy-tailed for a finite-sample check.
    """
    ent = 0.1 + torch.rand(len(LAST), N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    ent[3, 4] = 10.0
    return ent


def _terms(seed: int = 1) -> torch.Tensor:
    """Arbitrary per-step terms S_i(t) (values after L_i are junk the estimator must never touch)."""
    return torch.randn(len(LAST), N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _exact(terms: torch.Tensor) -> torch.Tensor:
    return torch.stack([terms[i, : int(L) + 1].mean() for i, L in enumerate(LAST)])


def _estimate(terms: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(LAST), dtype=torch.float64)
    return out.index_add_(0, rows, coef * terms[rows, steps])


def test_all_enumerates_every_step_with_mean_weight() -> None:
    rows, steps, coef = sample_timesteps(torch.tensor([0, 2, 1]), "all", "uniform", "uniform", None, torch.Generator())
    assert rows.tolist() == [0, 1, 1, 1, 2, 2]
    assert steps.tolist() == [0, 0, 1, 2, 0, 1]
    assert torch.allclose(coef, torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3, 0.5, 0.5], dtype=torch.float64))
    terms = _terms()
    rows, steps, coef = sample_timesteps(LAST, "all", "uniform", "uniform", None, torch.Generator())
    assert torch.allclose(_estimate(terms, rows, steps, coef), _exact(terms))


@pytest.mark.parametrize("weighting", ["uniform", "entropy"])
def test_uniform_to_step_map_is_unbiased_by_quadrature(weighting: str) -> None:
    """E_u[k * coef(t(u)) * S(t(u))] = mean_{t<=L} S(t): integrate over u on a fine midpoint grid.

    For uniform weighting a grid of 840 = lcm(1..8) points hits every step equally often, so the check is
    exact; for entropy weighting the error is bounded by the grid spacing times the largest term.
    """
    terms, ent = _terms(), _entropy()
    points = 840 if weighting == "uniform" else 200_000
    u = ((torch.arange(points, dtype=torch.float64) + 0.5) / points).expand(len(LAST), -1)
    steps, coef = timesteps_from_uniform(u, LAST, weighting, ent)
    assert bool((steps <= LAST[:, None]).all())
    integral = (coef * terms.gather(1, steps)).sum(dim=1)
    if weighting == "uniform":
        assert torch.allclose(integral, _exact(terms), atol=1e-12)
    else:
        bound = 2 * (coef * points).max() * terms.abs().max() * (N + 1) / points
        assert torch.allclose(integral, _exact(terms), atol=float(bound))


@pytest.mark.parametrize(
    ("scheme", "weighting"),
    [("uniform", "uniform"), ("low_discrepancy", "uniform"), ("uniform", "entropy"), ("low_discrepancy", "entropy")],
)
def test_sampled_estimates_are_unbiased(scheme: str, weighting: str) -> None:
    """The mean of many seeded draws matches the exact per-row average within 4.5 standard errors."""
    terms, ent = _terms(), _entropy()
    draws = torch.stack(
        [
            _estimate(terms, *sample_timesteps(LAST, 2, scheme, weighting, ent, torch.Generator().manual_seed(s)))
            for s in range(3000)
        ]
    )
    exact = _exact(terms)
    se = draws.std(dim=0) / math.sqrt(len(draws))
    assert bool((draws.std(dim=0)[LAST > 0] > 0).all())
    assert bool(((draws.mean(dim=0) - exact).abs() <= 4.5 * se + 1e-12).all())


def test_floor_of_u_times_last_step_would_be_caught() -> None:
    """The same check rejects the buggy floor(u * L_i) map, which never draws t = L_i."""
    terms = _terms()
    terms[:, :] = 0.0
    terms[3, 6] = 1.0
    draws = []
    for s in range(3000):
        u = draw_uniforms(len(LAST), 2, "low_discrepancy", torch.Generator().manual_seed(s))
        steps = torch.floor(u * LAST[:, None]).long()
        draws.append((terms.gather(1, steps) / 2).sum(dim=1))
    biased = torch.stack(draws).mean(dim=0)
    assert abs(float(biased[3]) - float(_exact(terms)[3])) > 0.1


@pytest.mark.parametrize("scheme", ["uniform", "low_discrepancy"])
@pytest.mark.parametrize("weighting", ["uniform", "entropy"])
def test_every_step_up_to_the_last_is_drawn_and_none_beyond(scheme: str, weighting: str) -> None:
    seen = torch.zeros(len(LAST), N, dtype=torch.long)
    for s in range(400):
        rows, steps, _ = sample_timesteps(LAST, 3, scheme, weighting, _entropy(), torch.Generator().manual_seed(s))
        assert bool((steps <= LAST[rows]).all()) and bool((steps >= 0).all())
        seen.index_put_((rows, steps), torch.ones_like(rows), accumulate=True)
    for i, last in enumerate(LAST.tolist()):
        assert bool((seen[i, : last + 1] > 0).all()), f"row {i} never drew some step <= {last}"
        assert int(seen[i, last + 1 :].sum()) == 0


def test_low_discrepancy_puts_one_draw_in_each_stratum() -> None:
    u = draw_uniforms(5, 3, "low_discrepancy", torch.Generator().manual_seed(0))
    strata = torch.floor(u.reshape(-1) * 15).long().sort().values
    assert strata.tolist() == list(range(15))
    iid = draw_uniforms(5, 3, "uniform", torch.Generator().manual_seed(0))
    assert torch.floor(iid.reshape(-1) * 15).long().unique().numel() < 15


def test_entropy_weighting_draws_in_proportion_and_reweights() -> None:
    ent = _entropy()
    probs = step_probabilities(LAST, ent)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(LAST), dtype=torch.float64))
    assert bool((probs[torch.arange(N)[None, :] > LAST[:, None]] == 0).all())
    zero = step_probabilities(LAST, torch.zeros(len(LAST), N))
    assert torch.allclose(zero[4], torch.full((N,), 1 / N, dtype=torch.float64)), "the 1e-8 floor keeps zero steps"
    counts = torch.zeros(N, dtype=torch.float64)
    for s in range(2000):
        rows, steps, coef = sample_timesteps(
            LAST, 4, "low_discrepancy", "entropy", ent, torch.Generator().manual_seed(s)
        )
        expected = 1.0 / (LAST[rows] + 1) / probs[rows, steps] / 4
        assert torch.allclose(coef, expected)
        counts += torch.bincount(steps[rows == 3], minlength=N).double()
    freq = counts / counts.sum()
    assert torch.allclose(freq, probs[3], atol=0.02)
    assert int(freq.argmax()) == 4


def test_draws_are_seeded() -> None:
    ent = _entropy()
    a = sample_timesteps(LAST, 4, "low_discrepancy", "entropy", ent, torch.Generator().manual_seed(7))
    b = sample_timesteps(LAST, 4, "low_discrepancy", "entropy", ent, torch.Generator().manual_seed(7))
    c = sample_timesteps(LAST, 4, "low_discrepancy", "entropy", ent, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    assert a[0].tolist() == [i for i in range(len(LAST)) for _ in range(4)]


def test_bad_arguments_are_rejected() -> None:
    """(k and the scheme names are the schema's rules, checked where the config is loaded.)"""
    g = torch.Generator()
    with pytest.raises(ValueError, match="step entropies"):
        sample_timesteps(LAST, 1, "uniform", "entropy", None, g)
    with pytest.raises(ValueError, match="step_entropy has 4 steps"):
        sample_timesteps(LAST, 1, "uniform", "entropy", torch.ones(len(LAST), 4), g)
