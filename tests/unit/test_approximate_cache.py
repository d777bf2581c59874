"""The approximate caches of full-attention models (`sampler.kv_cache: prefix | dual`).

Two situations make them exact, and each checks the cache plumbing (padding, positions, windows, keys read past
the window, rows leaving early or finishing a block early) against the full-forward sampler:
- a refresh at every step (`cache_refresh_steps: 1`);
- a one-layer model, whose keys and values at a position depend on that position's token alone, so nothing a
  cache holds goes stale while the tokens it covers do not change.
Otherwise the cache is stale by design, and the record holds the log-probs of the logits it produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from common.config import SamplerConfig, TinyModelConfig
from common.errors import ConfigError
from common.model import build_tiny_model
from common.record import TrajectoryBatch
from rollout import sampler as sampler_module
from rollout.kv_cache import ApproximateCache, step_cache
from rollout.sampler import sample
from tests.logprob_mismatch import mismatch
from tests.unit.block_helpers import EOS, MASK, PAD, PROMPTS, VOCAB, block_model
from tests.unit.test_kv_cache import assert_same_record


def full_model(layers: int = 2, eos_boost: float = 3.3) -> torch.nn.Module:
    """The tiny full-attention model, its head scaled so confidences are well apart and some rows of
    PROMPTS * 2 write an all-EOS block (early exit) while others do not."""
    shape = TinyModelConfig(d_model=32, n_layers=layers, n_heads=2, n_kv_heads=1, mlp_hidden_size=64)
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=0).eval()
    with torch.no_grad():
        head = model.model.transformer["ff_out"].weight
        head.mul_(20)
        head[EOS] *= eos_boost
    return model


def _cfg(**kw: Any) -> SamplerConfig:
    values: dict[str, Any] = {"gen_length": 16, "block_length": 4, "steps": 8, "temperature": 1.0, "top_k": 6}
    values.update(kw)
    return SamplerConfig(**values)


def _sample(model: torch.nn.Module, cfg: SamplerConfig, seed: int = 0) -> TrajectoryBatch:
    return sample(model, PROMPTS * 2, cfg, MASK, EOS, PAD, torch.Generator().manual_seed(seed), (PAD,))


SETTINGS = [
    {"remasking": "low_confidence"},
    {"remasking": "random", "top_k": 0},
    {"remasking": "low_confidence", "unmask": "threshold", "threshold": 0.6},
    {"remasking": "leftmost", "unmask": "threshold", "threshold": 0.6, "max_unmask_per_step": 2},
]


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_refresh_at_every_step_equals_the_exact_sampler(kv_cache: str, setting: dict[str, Any]) -> None:
    model = full_model()
    exact = _sample(model, _cfg(kv_cache="off", **setting))
    cached = _sample(model, _cfg(kv_cache=kv_cache, cache_refresh_steps=1, **setting))
    assert_same_record(cached, exact)
    assert exact.forward_passes is not None and cached.forward_passes is not None
    np.testing.assert_array_equal(cached.forward_passes, exact.forward_passes)
    exited = exact.filled.any(axis=1)
    assert exited.any() and not exited.all(), "the batch should mix rows that exit early and rows that do not"


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_a_cache_that_cannot_go_stale_equals_the_exact_sampler(kv_cache: str, setting: dict[str, Any]) -> None:
    """One layer: every step but a block's first runs the window against the cache, and must still be exact."""
    model = full_model(layers=1, eos_boost=32.0)
    exact = _sample(model, _cfg(kv_cache="off", **setting))
    assert_same_record(_sample(model, _cfg(kv_cache=kv_cache, **setting)), exact)
    if setting.get("unmask") == "threshold":
        steps = exact.row_steps()
        assert len(set(steps.tolist())) > 1, "rows should need different numbers of steps"


class Spy:
    """A StepCache that remembers the logits it handed out, per call: (rows, block_start, logits)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []
        self.forward_passes = inner.forward_passes

    def begin_block(self, *args: Any) -> None:
        self.inner.begin_block(*args)

    def end_block(self, *args: Any) -> None:
        self.inner.end_block(*args)

    def block_logits(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> torch.Tensor:
        logits = self.inner.block_logits(x, rows, block_start)
        self.calls.append((rows.clone(), block_start, logits.clone()))
        return logits


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_a_stale_cache_records_the_distribution_it_sampled_from(kv_cache: str, monkeypatch: Any) -> None:
    spies: list[Spy] = []

    def spying(*args: Any) -> Spy:
        spies.append(Spy(step_cache(*args)))
        return spies[-1]

    monkeypatch.setattr(sampler_module, "step_cache", spying)
    model = full_model()
    cfg = _cfg(kv_cache=kv_cache, top_k=0, temperature=0.8, early_exit=False)
    record = _sample(model, cfg)
    assert isinstance(spies[0].inner, ApproximateCache)
    taken = np.zeros(record.size, dtype=np.int64)
    for rows, block_start, logits in spies[0].calls:
        logp = torch.log_softmax(logits.float().index_fill(2, torch.tensor([MASK, PAD]), float("-inf")) / 0.8, -1)
        for i, row in enumerate(rows.tolist()):
            cols = np.flatnonzero(record.unmask_step[row] == taken[row])
            assert cols.size and (cols // cfg.block_length == block_start // cfg.block_length).all()
            tokens = torch.from_numpy(record.completion_ids[row, cols].astype(np.int64))
            recorded = torch.from_numpy(record.logprob[row, cols])
            torch.testing.assert_close(logp[i, cols - block_start].gather(1, tokens[:, None])[:, 0], recorded)
            taken[row] += 1
    _, worst = mismatch(model, record, PAD, (PAD,))
    assert worst > 1e-2, "two layers: the cached keys go stale, so the exact log-probs differ"


def test_only_the_first_step_of_a_block_runs_every_column() -> None:
    widths: list[int] = []
    model = full_model()
    inner = model.forward

    def logged(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        widths.append(int(input_ids.shape[1]))
        return inner(input_ids, **kwargs)

    model.forward = logged  # type: ignore[method-assign]
    width = max(len(p) for p in PROMPTS) + 16
    for kv_cache, window in (("prefix", [16, 12, 8, 4]), ("dual", [4] * 4)):
        widths.clear()
        sample(model, PROMPTS, _cfg(kv_cache=kv_cache, early_exit=False), MASK, EOS, PAD, torch.Generator())
        # Two steps per block: the refresh (every column), then one window.
        assert widths == [w for block in window for w in (width, block)]
        widths.clear()
        cfg = _cfg(kv_cache=kv_cache, early_exit=False, steps=16, cache_refresh_steps=2)
        sample(model, PROMPTS, cfg, MASK, EOS, PAD, torch.Generator())
        assert widths == [w for block in window for w in (width, block, width, block)]


def test_approximate_caches_refuse_block_causal_and_foreign_models() -> None:
    attention = torch.ones(2, 6, dtype=torch.bool)
    cfg = SamplerConfig(gen_length=4, block_length=4, steps=2, kv_cache="dual")
    with pytest.raises(ConfigError, match=r"^sampler.kv_cache = dual: the model is block-causal"):
        step_cache(block_model(), None, cfg, attention, 2)
    foreign = full_model()
    foreign.config.model_type = "dream"
    with pytest.raises(ConfigError, match=r"^sampler.kv_cache = dual: needs a LLaDA-architecture model .* not dream"):
        step_cache(foreign, None, cfg, attention, 2)
    with pytest.raises(ConfigError, match=r"not a bare logits function"):
        step_cache(None, lambda ids, mask: ids, cfg, attention, 2)
