"""Masked-diffusion SFT: the noising, the loss, learning, determinism and the wrong-answer mix."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import cluster.cli as cli
from common.config import ModelConfig, SFTConfig, TinyModelConfig, load_config
from common.errors import ConfigError
from common.model.loading import Policy, load_policy
from learner.sft import (
    MIN_MASK_RATIO,
    batch_order,
    build_examples,
    check_wrong_fraction,
    default_output,
    masked_diffusion_loss,
    train_sft,
    training_batch,
)
from rewards.generators import generate
from rewards.tasks import countdown

SMALL = TinyModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128)
GEN = 16


def tiny_policy(seed: int = 0) -> Policy:
    return load_policy(ModelConfig(path="tiny", tiny=SMALL), seed=seed)


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return generate("countdown", 64, 0, max_number=10)


def test_training_batch_never_masks_the_prompt_and_masks_at_rate_t() -> None:
    prompts = [[5 + (i % 7)] * (3 + i % 5) for i in range(64)]
    completions = torch.randint(3, 50, (64, 2000))
    gen = torch.Generator().manual_seed(0)
    batch = training_batch(prompts, completions, mask_id=2, pad_id=0, generator=gen)
    width = batch.prompt_width
    assert width == 7
    for i, p in enumerate(prompts):
        row = batch.input_ids[i]
        assert row[: width - len(p)].tolist() == [0] * (width - len(p))
        assert row[width - len(p) : width].tolist() == p
        assert batch.attention[i].tolist() == [False] * (width - len(p)) + [True] * (len(p) + 2000)
    assert not (batch.input_ids[:, :width] == 2).any()
    completion = batch.input_ids[:, width:]
    assert torch.equal(completion == 2, batch.masked)
    assert torch.equal(completion[~batch.masked], completions[~batch.masked])
    assert ((batch.t >= MIN_MASK_RATIO) & (batch.t <= 1)).all()
    rate = batch.masked.float().mean(dim=1)
    tolerance = 4 * torch.sqrt(batch.t * (1 - batch.t) / 2000) + 1e-3
    assert ((rate - batch.t).abs() <= tolerance).all()


def test_loss_is_the_t_weighted_masked_cross_entropy_over_batch_times_length() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=gen)
    targets = torch.randint(0, 11, (3, 5), generator=gen)
    masked = torch.rand(3, 5, generator=gen) < 0.5
    t = torch.tensor([0.2, 0.5, 0.9])
    expected = 0.0
    for b in range(3):
        for j in range(5):
            if masked[b, j]:
                expected += float(F.cross_entropy(logits[b, j][None], targets[b, j][None])) / float(t[b])
    loss = masked_diffusion_loss(logits, targets, masked, t)
    assert float(loss) == pytest.approx(expected / 15, rel=1e-5)


def test_eos_padding_is_a_trained_target(items: list[dict]) -> None:
    policy = tiny_policy()
    examples = build_examples(items[:8], "countdown", "plain", policy, GEN, 0.0, 0)
    completions = examples.completions
    eos = completions == policy.eos_id
    assert eos.any(dim=1).all(), "every short completion is padded with EOS"
    for i, text in enumerate(examples.texts):
        n = len(policy.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert eos[i, n:].all() and not eos[i, :n].any()
    # A model that is right everywhere except at EOS positions is penalised exactly when EOS is masked.
    logits = torch.full((*completions.shape, len(policy.tokenizer)), -30.0)
    logits.scatter_(2, completions[..., None], 30.0)
    logits[eos] = -30.0
    logits[..., 10][eos] = 30.0
    masked = torch.zeros_like(eos)
    t = torch.full((completions.shape[0],), 0.5)
    assert float(masked_diffusion_loss(logits, completions, masked | ~eos, t)) < 1e-6
    masked[0, -1] = True
    assert float(masked_diffusion_loss(logits, completions, masked, t)) == pytest.approx(
        60.0 / 0.5 / completions.numel(), rel=1e-4
    )


def test_loss_decreases_on_a_tiny_countdown_set(items: list[dict]) -> None:
    policy = tiny_policy()
    examples = build_examples(items, "countdown", "plain", policy, GEN, 0.0, 0)
    cfg = SFTConfig(steps=30, batch_size=16, lr=3e-3, warmup_ratio=0.1)
    losses = train_sft(policy, examples, cfg, seed=0).losses
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not policy.model.training


def test_same_seed_same_run_other_seed_other_run(items: list[dict]) -> None:
    cfg = SFTConfig(steps=5, batch_size=8, lr=1e-3)

    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        policy = tiny_policy()
        examples = build_examples(items[:16], "countdown", "plain", policy, GEN, 0.25, seed)
        losses = train_sft(policy, examples, cfg, seed=seed).losses
        return losses, {k: v.clone() for k, v in policy.model.state_dict().items()}

    losses_a, state_a = run(4)
    losses_b, state_b = run(4)
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert run(5)[0] != losses_a


def test_wrong_fraction_makes_the_expected_share_of_wrong_completions(items: list[dict]) -> None:
    policy = tiny_policy()
    examples = build_examples(items[:40], "countdown", "plain", policy, GEN, 0.25, 7)
    assert int(examples.wrong.sum()) == 10
    for item, text, wrong in zip(items[:40], examples.texts, examples.wrong, strict=True):
        assert countdown.grade(text, item) == ((0.0, 1.0) if wrong else (1.0, 1.0))
        assert (text != item["completion"]) == bool(wrong)
    again = build_examples(items[:40], "countdown", "plain", policy, GEN, 0.25, 7)
    assert again.texts == examples.texts
    assert build_examples(items[:40], "countdown", "plain", policy, GEN, 0.25, 8).texts != examples.texts


def test_configuration_errors_name_the_field() -> None:
    check_wrong_fraction("gsm8k", 0.0)
    with pytest.raises(ConfigError, match=r"sft.wrong_fraction = 0.1: task gsm8k has no wrong-answer"):
        check_wrong_fraction("gsm8k", 0.1)
    policy = tiny_policy()
    with pytest.raises(ConfigError, match=r"sampler.gen_length = 4: countdown item 0 has a"):
        build_examples(generate("countdown", 2, 0), "countdown", "plain", policy, 4, 0.0, 0)
    with pytest.raises(ConfigError, match="sft.wrong_fraction"):
        load_config(overrides=["sft.wrong_fraction=1.5"])


def test_batch_order_and_output_defaults() -> None:
    order = batch_order(10, 4, 5, seed=0)
    assert [len(b) for b in order] == [4] * 5
    first_epoch = [int(i) for b in order for i in b][:10]
    assert sorted(first_epoch) == list(range(10))
    assert str(default_output(load_config(overrides=["run_dir=out/r1", "data.task=sudoku"]))) == "out/base-sudoku"


def test_sft_command_help_and_bad_override(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {"sft": "cluster.commands.sft"})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sft", "--help"])
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out
    assert cli.main(["sft", "sft.steps=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agrpo sft: error: overrides: sft.steps = 0") and "\n" not in err
