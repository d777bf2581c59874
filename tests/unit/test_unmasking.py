"""Which positions a step commits: threshold decoding, leftmost order, tie-breaks; variable step counts downstream."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from common.config import SamplerConfig
from common.record import TrajectoryBatch
from learner.timesteps import sample_timesteps
from rollout.sampler import sample
from rollout.unmasking import select_positions, threshold_counts
from tests.logprob_mismatch import mismatch
from tests.unit.block_helpers import EOS, MASK, PAD, PROMPTS, block_model
from tests.unit.test_approximate_cache import full_model

NEG = float("-inf")


def test_threshold_counts_reach_tau_and_stay_within_one_and_the_cap() -> None:
    conf = torch.tensor([[0.95, 0.91, 0.5, 0.99], [0.2, 0.3, 0.1, 0.4], [0.9, 0.0, 0.0, 0.0]])
    open_ = torch.tensor([[True, True, True, True], [True, True, True, True], [True, False, False, False]])
    assert threshold_counts(conf, open_, 0.9, 0).tolist() == [3, 1, 1]
    assert threshold_counts(conf, open_, 0.9, 2).tolist() == [2, 1, 1]
    assert threshold_counts(conf, open_ & torch.tensor([False, True, True, True]), 0.9, 0).tolist() == [2, 1, 1]


def test_position_tie_break_prefers_the_leftmost() -> None:
    score = torch.tensor([[0.5, 0.7, 0.5, 0.5, NEG], [NEG, 0.5, 0.5, 0.9, 0.5]], dtype=torch.bfloat16)
    picked = select_positions(score, torch.tensor([2, 3]), "position")
    assert picked.tolist() == [[True, True, False, False, False], [False, True, True, True, False]]


def test_reference_tie_break_is_topk_over_the_unpadded_row() -> None:
    """Ties at the selection boundary are settled as torch.topk settles them over the row's own sequence."""
    torch.manual_seed(0)
    block, length, offset = 32, 300, 100
    score = torch.full((3, block), 0.5, dtype=torch.bfloat16)
    score[1, ::3] = 0.75
    score[2, :] = torch.arange(block, dtype=torch.bfloat16)  # no ties: the same set either way
    counts = torch.tensor([3, 13, 5])
    picked = select_positions(score, counts, "reference", torch.full((3,), length), torch.full((3,), offset))
    for r in range(3):
        full = torch.full((length,), NEG, dtype=torch.bfloat16)
        full[offset : offset + block] = score[r]
        expected = torch.zeros(block, dtype=torch.bool)
        expected[torch.topk(full, int(counts[r])).indices - offset] = True
        assert picked[r].tolist() == expected.tolist()
    assert picked.sum(dim=1).tolist() == counts.tolist()
    by_position = select_positions(score, counts, "position")
    assert by_position[2].tolist() == picked[2].tolist()


def _cfg(**kw: Any) -> SamplerConfig:
    values: dict[str, Any] = {"gen_length": 16, "block_length": 8, "steps": 8, "kv_cache": "off", "early_exit": False}
    values.update(kw)
    return SamplerConfig(**values)


def _sample(model: torch.nn.Module, cfg: SamplerConfig, seed: int = 0) -> TrajectoryBatch:
    return sample(model, PROMPTS * 2, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(seed), (PAD,))


def _every_position_once(record: TrajectoryBatch) -> None:
    assert not (record.completion_ids == MASK).any() and (record.unmask_step >= 0).all()
    for i in range(record.size):
        steps = record.unmask_step[i][~record.filled[i]].astype(np.int64)
        assert set(steps.tolist()) == set(range(record.row_steps()[i])), "each step commits at least one position"


@torch.no_grad()
@pytest.mark.parametrize(("tau", "cap"), [(0.5, 0), (0.5, 3)])
def test_threshold_decoding_commits_what_reaches_tau_at_least_one_at_most_the_cap(tau: float, cap: int) -> None:
    """Greedy, so each step's confidences can be recomputed from the rebuilt state: the committed set is the
    positions reaching tau (the most confident alone when none does), the most confident `cap` of them."""
    model = full_model()
    cfg = _cfg(temperature=0.0, remasking="low_confidence", unmask="threshold", threshold=tau, max_unmask_per_step=cap)
    record = _sample(model, cfg)
    _every_position_once(record)
    sizes = []
    for i, prompt in enumerate(PROMPTS * 2):
        for t in range(int(record.row_steps()[i])):
            state = record.state_at(np.array([i]), np.array([t]))[0]
            logits = model(torch.tensor([[*prompt, *state.tolist()]])).logits[0, len(prompt) :].float()
            logits[:, [MASK, PAD]] = NEG
            conf = torch.softmax(logits.double(), -1).max(-1).values
            committed = np.flatnonzero(record.unmask_step[i] == t)
            block = committed[0] // cfg.block_length
            open_cols = [j for j in range(block * 8, block * 8 + 8) if record.unmask_step[i, j] >= t]
            ranked = sorted(open_cols, key=lambda j: -float(conf[j]))
            n = max(1, sum(float(conf[j]) >= tau for j in open_cols))
            n = min(n, cap) if cap else n
            assert sorted(committed.tolist()) == sorted(ranked[:n])
            sizes.append(n)
    assert max(sizes) > 1 and min(sizes) == 1, "the setting should commit one position at some steps, more at others"
    assert len(set(record.row_steps().tolist())) > 1, "rows should take different numbers of steps"


@pytest.mark.parametrize("unmask", ["fixed", "threshold"])
def test_leftmost_commits_the_block_left_to_right(unmask: str) -> None:
    record = _sample(full_model(), _cfg(temperature=1.0, remasking="leftmost", unmask=unmask, threshold=0.5))
    _every_position_once(record)
    for i in range(record.size):
        assert (np.diff(record.unmask_step[i].astype(np.int64)) >= 0).all(), "steps never decrease left to right"
    if unmask == "fixed":
        np.testing.assert_array_equal(record.unmask_step, np.repeat(np.arange(8), 2)[None].repeat(record.size, 0))


@pytest.mark.parametrize("block_causal", [False, True], ids=["full", "block_causal"])
def test_variable_step_counts_flow_into_the_learner(block_causal: bool) -> None:
    """L_i, the timestep draw and the recomputed log-probs (per-row states, composite sequences for a block model)
    follow each row's own steps: the exact sampler's record is recomputed to float rounding."""
    model = block_model(eos_boost=7.0) if block_causal else full_model()
    kv = "auto" if block_causal else "off"
    cfg = _cfg(
        block_length=4, temperature=1.0, top_k=8, unmask="threshold", threshold=0.5, early_exit=True, kv_cache=kv
    )
    record = _sample(model, cfg, seed=2)
    _every_position_once(record)
    steps, last = record.row_steps(), record.last_step()
    assert len(set(steps.tolist())) > 1 and (last < steps).all()
    assert record.num_steps == steps.max() and record.step_entropy().shape == (record.size, steps.max())
    blocks = record.block_of_step(last, np.arange(record.size))
    for i in range(record.size):
        assert blocks[i] == np.flatnonzero(record.unmask_step[i] == last[i])[0] // cfg.block_length
    rows, drawn, _ = sample_timesteps(torch.from_numpy(last), 64, "uniform", "uniform", None, torch.Generator())
    assert (drawn <= torch.from_numpy(last)[rows]).all() and drawn.max() > 4
    _, worst = mismatch(model, record, PAD, (PAD,))
    assert worst < 1e-5


class CountingModel(torch.nn.Module):
    """The model, counting the rows of every call."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.rows = inner, inner.config, 0

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        self.rows += int(input_ids.shape[0])
        return self.inner(input_ids, **kwargs)


@pytest.mark.parametrize("kv_cache", ["off", "dual", "auto"])
def test_forward_passes_are_counted_per_row_at_the_model(kv_cache: str) -> None:
    model = CountingModel(block_model() if kv_cache == "auto" else full_model())
    cfg = _cfg(block_length=4, temperature=1.0, unmask="threshold", threshold=0.5, early_exit=True, kv_cache=kv_cache)
    record = _sample(model, cfg)
    assert record.forward_passes is not None
    assert int(record.forward_passes.sum()) == model.rows
    if kv_cache != "auto":
        # One call per step; a block-causal model adds a prompt prefill and a commit per finished block.
        np.testing.assert_array_equal(record.forward_passes, record.row_steps())


def test_forward_passes_survive_select_concat_and_a_checkpoint() -> None:
    import dataclasses

    from common.record import RolloutGroup, group_from_state, group_to_state

    record = _sample(full_model(), _cfg(temperature=1.0, unmask="threshold", threshold=0.5))
    passes = record.forward_passes
    assert passes is not None
    np.testing.assert_array_equal(record.select([3, 0]).forward_passes, passes[[3, 0]])
    np.testing.assert_array_equal(TrajectoryBatch.concat([record, record]).forward_passes, np.tile(passes, 2))
    saved = group_from_state(group_to_state(RolloutGroup(0, record, 0, 0))).trajectories
    np.testing.assert_array_equal(saved.forward_passes, passes)
    old = dataclasses.replace(record, forward_passes=None)  # a record saved before passes were counted
    assert TrajectoryBatch.concat([old, record]).forward_passes is None
    assert group_from_state(group_to_state(RolloutGroup(0, old, 0, 0))).trajectories.forward_passes is None
