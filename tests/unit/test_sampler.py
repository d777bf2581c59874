"""The diffusion sampler: LLaDA parity at T = 0, exact and recomputable records, early exit, truncation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from common.config import SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from common.record import NO_TOKEN, TrajectoryBatch
from rollout.sampler import sample, sample_batches
from rollout.unmasking import step_counts

VOCAB, MASK, EOS, PAD = 48, 47, 46, 45
PROMPTS = [[3, 14, 15, 9, 2], [7], [26, 5, 35, 8, 9, 7, 9, 3, 2], [38, 4, 6]]
TRUNCATIONS = [(0, 1.0), (5, 1.0), (0, 0.8), (8, 0.6)]


class NoMaskLogits(nn.Module):
    """The model with MASK made unpredictable, as in a trained LLaDA; banning it is then a no-op.

    This lets the oracle below be LLaDA's loop exactly (which never bans MASK) while the sampler bans it.
    """

    def __init__(self, inner: nn.Module, boost: dict[int, float] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.boost = boost or {}
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
        self.calls.append((input_ids.clone(), None if attention_mask is None else attention_mask.clone()))
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.clone()
        logits[..., MASK] = float("-inf")
        for token, value in self.boost.items():
            logits[..., token] += value
        return MaskedLMOutput(logits=logits)


def _sharp_tiny_model(seed: int = 0) -> nn.Module:
    """A tiny model whose attention and head are scaled up so positions get clearly distinct confidences
    (a freshly initialised one is nearly uniform, and float noise would decide near-ties)."""
    shape = TinyModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, mlp_hidden_size=64)
    model = build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=seed).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(key in name for key in ("q_proj", "k_proj", "v_proj", "ff_proj", "up_proj")):
                param.mul_(10)
            if name.endswith("transformer.ff_out.weight"):
                param.mul_(20)
    return model


@pytest.fixture(scope="module")
def model() -> NoMaskLogits:
    return NoMaskLogits(_sharp_tiny_model())


def _cfg(**kw: object) -> SamplerConfig:
    base: dict[str, object] = {"gen_length": 16, "block_length": 8, "steps": 8, "early_exit": False}
    base.update(kw)
    return SamplerConfig(**base)


def _run(model: nn.Module, cfg: SamplerConfig, prompts: Sequence[Sequence[int]] = PROMPTS, seed: int = 0, **kw):
    return sample(model, list(prompts), cfg, MASK, EOS, PAD, torch.Generator().manual_seed(seed), **kw)


@torch.no_grad()
def llada_reference(model: nn.Module, prompt: list[int], gen_length: int, block_length: int, steps: int):
    """LLaDA's generate() at temperature 0 with low_confidence for one unpadded prompt, rule for rule as
    ML-GSAI/LLaDA generate.py has it since June 2025 (commit f51cb17, "Remove float64 in softmax"): a forward of
    the whole sequence with its attention mask, x0 = argmax of the logits, p = softmax of the logits in the
    model's own dtype, x0_p = p at x0, -inf after the current block and on committed positions, then
    torch.topk over the whole row (prompt included) commits get_num_transfer_tokens positions. Returns the
    completion and the step at which each of its positions was committed."""
    x = torch.tensor([[*prompt, *([MASK] * gen_length)]])
    ones = torch.ones_like(x)
    order = torch.full_like(x, -1)
    step = 0
    per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        end = len(prompt) + (b + 1) * block_length
        masked = int((x[0, end - block_length : end] == MASK).sum())
        counts = [masked // per_block + (1 if i < masked % per_block else 0) for i in range(per_block)]
        for n in counts:
            logits = model(x, attention_mask=ones).logits
            x0 = logits.argmax(-1)
            x0_p = torch.softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
            x0_p[:, end:] = float("-inf")
            confidence = torch.where(x == MASK, x0_p, float("-inf"))
            index = torch.topk(confidence[0], k=n).indices
            x[0, index] = x0[0, index]
            order[0, index] = step
            step += 1
    return x[0, len(prompt) :].tolist(), order[0, len(prompt) :].tolist()


REFERENCE = {"confidence_dtype": "model", "tie_break": "reference"}
PARITY = [(24, 8, 6), (16, 8, 6), (16, 16, 16), (12, 4, 6)]


@pytest.mark.parametrize(("gen", "block", "steps"), PARITY)
def test_greedy_low_confidence_matches_llada_reference(model: NoMaskLogits, gen: int, block: int, steps: int):
    """Batched (padded) prompts in float32, ranked as the reference ranks (the evaluation default)."""
    cfg = _cfg(gen_length=gen, block_length=block, steps=steps, temperature=0.0, remasking="low_confidence")
    record = _run(model, cfg.model_copy(update=REFERENCE))
    for i, prompt in enumerate(PROMPTS):
        tokens, order = llada_reference(model, prompt, gen, block, steps)
        assert (record.completion_ids[i].tolist(), record.unmask_step[i].tolist()) == (tokens, order)


@pytest.fixture(scope="module")
def bf16_model() -> NoMaskLogits:
    """In bfloat16 with a milder head (confidences near each other), so rounding ties positions often: ranking in
    float64 or breaking ties by position departs from the reference on about a quarter of these rows."""
    model = _sharp_tiny_model(seed=1)
    with torch.no_grad():
        model.model.transformer["ff_out"].weight.mul_(0.2)
    return NoMaskLogits(model.to(torch.bfloat16))


@pytest.mark.parametrize(("gen", "block", "steps"), PARITY)
def test_bf16_greedy_matches_llada_reference_with_its_ties(bf16_model: NoMaskLogits, gen: int, block: int, steps: int):
    """In bfloat16 the reference's softmax has many exact ties; ranking in the model's dtype and breaking ties
    with topk over the unpadded row reproduces it (each prompt alone, so the logits are the reference's)."""
    cfg = _cfg(gen_length=gen, block_length=block, steps=steps, temperature=0.0, remasking="low_confidence")
    for prompt in PROMPTS:
        record = _run(bf16_model, cfg.model_copy(update=REFERENCE), prompts=[prompt])
        tokens, order = llada_reference(bf16_model, prompt, gen, block, steps)
        assert (record.completion_ids[0].tolist(), record.unmask_step[0].tolist()) == (tokens, order)


def test_confidence_dtype_sets_the_ranking_precision():
    """Two positions whose probabilities differ in float64 but tie once rounded to bfloat16."""
    from rollout.distribution import Candidates, confidence

    logits = torch.tensor([[0.0, -6.0000], [0.0, -6.0039]], dtype=torch.float32)
    choice = torch.zeros(2, dtype=torch.long)
    exact = confidence(Candidates(logits, None), choice, torch.float64)
    coarse = confidence(Candidates(logits, None), choice, torch.bfloat16)
    assert exact.dtype == torch.float64 and exact[1] > exact[0]
    assert coarse.dtype == torch.bfloat16 and coarse[0] == coarse[1]


def _check_commits(record: TrajectoryBatch) -> None:
    """Every position is committed exactly once, at a valid step, as many per step as the schedule says."""
    cfg = record.sampler
    assert ((record.unmask_step >= 0) & (record.unmask_step < cfg.steps)).all()
    assert not (record.completion_ids == MASK).any()
    for i in range(record.size):
        sampled = record.unmask_step[i][~record.filled[i]].astype(np.int64)
        expected = step_counts(cfg)[: sampled.max() + 1]
        assert np.bincount(sampled, minlength=len(expected)).tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("gen", "block", "steps", "schedule"),
    [(16, 8, 8, [2] * 8), (16, 8, 6, [3, 3, 2, 3, 3, 2]), (24, 8, 24, [1] * 24), (16, 16, 5, [4, 3, 3, 3, 3])],
)
def test_commit_counts_follow_the_schedule(model: NoMaskLogits, gen: int, block: int, steps: int, schedule):
    record = _run(model, _cfg(gen_length=gen, block_length=block, steps=steps, temperature=1.0))
    assert step_counts(record.sampler).tolist() == schedule
    _check_commits(record)
    assert not record.filled.any()


def test_rebuilt_states_are_what_the_model_saw(model: NoMaskLogits):
    cfg = _cfg(temperature=0.9, top_k=6, remasking="random")
    model.calls.clear()
    record = _run(model, cfg)
    assert len(model.calls) == cfg.steps
    rows = np.arange(record.size)
    for t, (ids, attention) in enumerate(model.calls):
        np.testing.assert_array_equal(ids[:, -cfg.gen_length :].numpy(), record.state_at(rows, np.full(4, t)))
        for i, prompt in enumerate(PROMPTS):
            real = ids.shape[1] - cfg.gen_length - len(prompt)
            assert ids[i, real : real + len(prompt)].tolist() == prompt
            assert attention is not None
            assert attention[i].tolist() == [0] * real + [1] * (ids.shape[1] - real)


def test_early_exit_fills_after_an_all_eos_block_and_stops_the_row():
    # Rows whose prompt holds token 0 are pushed to EOS; the others never produce an all-EOS block.
    prompts = [[0, 5, 6], [8, 9], [10, 0], [11, 12, 13, 14]]
    eos_rows = [0, 2]
    wrapped = NoMaskLogits(_sharp_tiny_model())
    inner = wrapped.forward

    def pushed(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
        out = inner(input_ids, attention_mask)
        out.logits[(input_ids == 0).any(dim=1), :, EOS] += 100.0
        return out

    cfg = _cfg(gen_length=24, block_length=8, steps=12, temperature=1.0, early_exit=True)
    record = sample(
        wrapped,
        prompts,
        cfg,
        MASK,
        EOS,
        PAD,
        torch.Generator().manual_seed(0),
        banned_ids=[0],  # a sampled 0 would push a row to EOS mid-way
        logits_fn=lambda ids, mask: pushed(ids, mask).logits,
    )
    _check_commits(record)
    per_block = 4
    last = record.last_step()
    for i in range(record.size):
        filled = np.flatnonzero(record.filled[i])
        if i in eos_rows:
            assert filled.tolist() == list(range(8, 24))
            assert (record.completion_ids[i] == EOS).all()
            assert (record.unmask_step[i, filled] == per_block).all()
            assert (record.unmask_step[i, filled] > last[i]).all()
            assert (record.logprob[i, filled] == 0).all() and (record.entropy[i, filled] == 0).all()
        else:
            assert filled.size == 0
    # After block 0 only the two remaining rows are run, and each saw exactly its rebuilt state.
    assert [ids.shape[0] for ids, _ in wrapped.calls] == [4] * per_block + [2] * (cfg.steps - per_block)
    for t, (ids, _) in enumerate(wrapped.calls):
        rows = np.arange(4) if t < per_block else np.array([1, 3])
        np.testing.assert_array_equal(ids[:, -cfg.gen_length :].numpy(), record.state_at(rows, np.full(len(rows), t)))


def test_padding_does_not_change_greedy_completions(model: NoMaskLogits):
    cfg = _cfg(gen_length=16, block_length=8, steps=8, temperature=0.0, remasking="entropy", top_k=5)
    batched = _run(model, cfg)
    for i, prompt in enumerate(PROMPTS):
        alone = _run(model, cfg, prompts=[prompt])
        np.testing.assert_array_equal(alone.completion_ids[0], batched.completion_ids[i])
        np.testing.assert_array_equal(alone.unmask_step[0], batched.unmask_step[i])
        np.testing.assert_allclose(alone.logprob[0], batched.logprob[i], atol=1e-5)


@pytest.mark.parametrize("remasking", ["random", "entropy", "low_confidence"])
@pytest.mark.parametrize(("top_k", "top_p"), TRUNCATIONS)
def test_records_are_valid_for_every_mode(model: NoMaskLogits, remasking: str, top_k: int, top_p: float):
    cfg = _cfg(temperature=0.8, top_k=top_k, top_p=top_p, remasking=remasking)
    record = _run(model, cfg, seed=3)
    _check_commits(record)
    assert np.isfinite(record.logprob).all() and (record.logprob <= 0).all()
    assert np.isfinite(record.entropy).all() and (record.entropy >= -1e-6).all()
    if top_k == 0 and top_p == 1.0:
        assert record.allowed_ids is None
        return
    allowed = record.allowed_ids
    assert allowed is not None and allowed.dtype == np.int32
    if top_k:
        assert allowed.shape[2] == top_k
    kept = allowed != NO_TOKEN
    assert (kept[..., 0]).all()
    assert (kept[..., :-1] >= kept[..., 1:]).all(), "kept ids must form a prefix"
    assert (((allowed == record.completion_ids[..., None]) & kept).sum(axis=2) == 1).all()
    assert not (allowed == MASK).any()
    for row in allowed.reshape(-1, allowed.shape[2]):
        ids = row[row != NO_TOKEN]
        assert len(set(ids.tolist())) == len(ids)


@torch.no_grad()
@pytest.mark.parametrize(("top_k", "top_p"), TRUNCATIONS)
def test_logprob_and_entropy_are_recomputable_from_rebuilt_states(model: NoMaskLogits, top_k: int, top_p: float):
    temperature = 0.7
    cfg = _cfg(temperature=temperature, top_k=top_k, top_p=top_p, remasking="random")
    record = _run(model, cfg, seed=5)
    for i, prompt in enumerate(PROMPTS):
        for t in range(cfg.steps):
            state = record.state_at(np.array([i]), np.array([t]))[0]
            ids = torch.tensor([[*prompt, *state.tolist()]])
            z = model(ids).logits[0, len(prompt) :].float()
            z[:, MASK] = float("-inf")
            z = z / temperature
            full = torch.softmax(z, -1)
            if record.allowed_ids is not None:
                keep = torch.zeros_like(z, dtype=torch.bool)
                for j in range(cfg.gen_length):
                    row = record.allowed_ids[i, j]
                    keep[j, torch.from_numpy(row[row != NO_TOKEN]).long()] = True
                z = z.masked_fill(~keep, float("-inf"))
            logp = torch.log_softmax(z, -1)
            for j in np.flatnonzero(record.unmask_step[i] == t):
                token = int(record.completion_ids[i, j])
                assert logp[j, token].item() == pytest.approx(record.logprob[i, j], abs=1e-4)
                p = logp[j].exp()
                entropy = -(p * logp[j].masked_fill(p == 0, 0.0)).sum().item()
                assert entropy == pytest.approx(record.entropy[i, j], abs=1e-4)
                if top_p < 1.0 and top_k == 0:
                    # The nucleus is the smallest most-likely set reaching top_p.
                    mass = full[j][keep[j]]
                    assert mass.sum() >= top_p - 1e-5
                    assert mass.sum() - mass.min() < top_p + 1e-5


def test_banned_ids_are_never_sampled():
    favourite = 5
    wrapped = NoMaskLogits(_sharp_tiny_model(), boost={favourite: 50.0})
    cfg = _cfg(temperature=1.0)
    assert (_run(wrapped, cfg).completion_ids == favourite).mean() > 0.9
    record = _run(wrapped, cfg, banned_ids=[favourite])
    assert not (record.completion_ids == favourite).any()


def test_same_seed_same_record_other_seed_other_record(model: NoMaskLogits):
    cfg = _cfg(temperature=1.0, top_p=0.9, remasking="random")
    a, b, c = _run(model, cfg, seed=11), _run(model, cfg, seed=11), _run(model, cfg, seed=12)
    for name in ("completion_ids", "unmask_step", "logprob", "entropy", "filled", "allowed_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.unmask_step, c.unmask_step)
    assert not np.array_equal(a.completion_ids, c.completion_ids)


def test_chunked_sampling_concatenates_in_order(model: NoMaskLogits, capsys: pytest.CaptureFixture[str]):
    cfg = _cfg(temperature=0.0, remasking="low_confidence", top_k=4, batch_size=3)
    prompts = [*PROMPTS, [1, 2], [40]]
    chunked = sample_batches(model, prompts, cfg, MASK, EOS, PAD, torch.Generator(), progress=True)
    whole = _run(model, cfg.model_copy(update={"batch_size": 64}), prompts=prompts)
    assert chunked.size == len(prompts)
    np.testing.assert_array_equal(chunked.completion_ids, whole.completion_ids)
    np.testing.assert_array_equal(chunked.unmask_step, whole.unmask_step)
    assert [p.tolist() for p in chunked.prompt_ids] == prompts
    assert "sampling" in capsys.readouterr().err


def test_record_is_a_tiny_fraction_of_a_vocab_mask(model: NoMaskLogits):
    """Bytes per sample at C = 256, top_k = 150, vocab 126464, extrapolated from a real record's arrays."""
    cfg = _cfg(temperature=1.0, top_k=150)
    record = _run(_pad_vocab(model, 200), cfg, prompts=PROMPTS[:1])
    gen, vocab, prompt_len = 256, 126_464, 128
    per_position = (record.nbytes() - record.prompt_ids[0].nbytes) / record.gen_length
    per_sample = gen * per_position + prompt_len * record.prompt_ids[0].itemsize
    assert record.allowed_ids is not None and record.allowed_ids.shape[2] == 150
    assert per_sample / (gen * vocab * np.dtype(np.bool_).itemsize) < 0.01


def _pad_vocab(model: nn.Module, vocab: int) -> nn.Module:
    """The model with extra (very unlikely) vocabulary entries, so top_k = 150 has 150 candidates."""

    class Wider(nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            extra = torch.full((*logits.shape[:2], vocab - logits.shape[2]), -30.0)
            return MaskedLMOutput(logits=torch.cat([logits, extra], dim=-1))

    return Wider()
