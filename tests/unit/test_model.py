"""The native LLaDA-architecture model: the public checkpoint's conventions, masks, saving, and the 8B shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from common.config import TinyModelConfig
from common.model import LLaDAConfig, LLaDAModelLM, build_tiny_model
from common.model.llada import apply_rotary, rotary_tables

VOCAB, MASK, EOS, PAD = 40, 39, 38, 37


def small_config(**overrides: object) -> LLaDAConfig:
    values: dict[str, object] = dict(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=48, vocab_size=VOCAB
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def sharpened(model: LLaDAModelLM) -> LLaDAModelLM:
    """Scale the weights up so position and content effects are far above float noise."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(8)
    return model.eval()


def tokens(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    return torch.randint(0, VOCAB - 3, shape, generator=torch.Generator().manual_seed(seed))


def test_parameter_names_follow_the_public_checkpoint() -> None:
    names = set(LLaDAModelLM(small_config(n_layers=1)).state_dict())
    block = "model.transformer.blocks.0."
    expected = {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"}
    expected |= {
        f"{block}{name}.weight"
        for name in ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")
    }
    assert names == expected


def test_rotary_rotates_first_half_against_second_half() -> None:
    """The public code's rotate_half pairs dimension i with i + head_dim/2 (not interleaved pairs)."""
    head_dim, theta, position = 8, 500000.0, 3
    x = torch.randn(1, 1, 1, head_dim, generator=torch.Generator().manual_seed(0))
    cos, sin = rotary_tables(torch.tensor([[position]]), head_dim, theta)
    out = apply_rotary(x, cos, sin)[0, 0, 0]
    v = x[0, 0, 0]
    half = head_dim // 2
    for i in range(half):
        angle = torch.tensor(position / theta ** (2 * i / head_dim))
        a, b = v[i], v[i + half]
        assert torch.allclose(out[i], a * angle.cos() - b * angle.sin(), atol=1e-6)
        assert torch.allclose(out[i + half], b * angle.cos() + a * angle.sin(), atol=1e-6)


def test_feed_forward_is_silu_of_ff_proj_times_up_proj() -> None:
    model = LLaDAModelLM(small_config(n_layers=1, rms_norm_eps=1e-3)).eval()
    block = model.model.transformer["blocks"][0]
    assert block.ff_norm.eps == 1e-3 and block.attn_norm.eps == 1e-3
    with torch.no_grad():
        block.attn_out.weight.zero_()  # the block is then x + FFN(norm(x))
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    cos, sin = rotary_tables(torch.arange(5).expand(2, 5), 8, 10000.0)
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-3) * block.ff_norm.weight
    expected = x + block.ff_out(F.silu(block.ff_proj(normed)) * block.up_proj(normed))
    assert torch.allclose(block(x, (cos, sin), None), expected, atol=1e-5)


def test_grouped_kv_heads_share_each_kv_head_across_consecutive_query_heads() -> None:
    """GQA with kv head g serving query heads g*r .. g*r+r-1 equals full attention with k/v heads repeated."""
    gqa = sharpened(LLaDAModelLM(small_config(n_kv_heads=2)))
    full = LLaDAModelLM(small_config(n_kv_heads=4)).eval()
    state = gqa.state_dict()
    for name, value in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            state[name] = value.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    full.load_state_dict(state)
    assert gqa.model.transformer["blocks"][0].k_proj.weight.shape == (16, 32)
    ids = tokens(0, (2, 9))
    assert torch.allclose(gqa(ids).logits, full(ids).logits, atol=1e-5)


def test_attention_is_bidirectional() -> None:
    model = sharpened(build_tiny_model(TinyModelConfig(d_model=32, n_layers=2), VOCAB, MASK, EOS, PAD))
    ids = tokens(1, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % (VOCAB - 3)
    before, after = model(ids).logits, model(changed).logits
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_left_padding_does_not_change_the_logits(kv_heads: int) -> None:
    model = sharpened(LLaDAModelLM(small_config(n_kv_heads=kv_heads)))
    ids = tokens(2, (1, 7))
    padded = torch.cat([torch.full((1, 3), PAD), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1)
    batch = torch.cat([padded, torch.cat([ids, tokens(3, (1, 3))], dim=1)])
    batch_mask = torch.cat([mask, torch.ones(1, 10, dtype=torch.long)])
    plain = model(ids).logits
    assert torch.allclose(model(batch, attention_mask=batch_mask).logits[0, 3:], plain[0], atol=1e-5)
    # Without the mask the padding is attended to and does change them.
    assert (model(padded).logits[0, 3:] - plain[0]).abs().max() > 1e-3


def test_weight_tying_and_padded_embeddings() -> None:
    model = LLaDAModelLM(small_config(weight_tying=True, embedding_size=64)).eval()
    assert "model.transformer.ff_out.weight" not in model.state_dict()
    assert model.get_input_embeddings().num_embeddings == 64
    ids = tokens(4, (2, 6))
    logits = model(ids).logits
    assert logits.shape == (2, 6, VOCAB)  # padding rows of the embedding are never scored


def test_bias_flags_add_biases_where_the_public_code_does() -> None:
    qkv = LLaDAModelLM(small_config(n_layers=1, include_qkv_bias=True)).state_dict()
    assert "model.transformer.blocks.0.q_proj.bias" in qkv and "model.transformer.blocks.0.ff_out.bias" not in qkv
    with pytest.raises(ValueError, match="layer-norm bias"):
        small_config(include_bias=True)  # the public code would also give the norms a bias
    full = LLaDAModelLM(small_config(n_layers=1, include_bias=True, bias_for_layer_norm=False)).state_dict()
    assert {"model.transformer.ff_out.bias", "model.transformer.blocks.0.attn_out.bias"} <= set(full)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"alibi": True}, "alibi"),
        ({"block_type": "sequential"}, "block_type"),
        ({"activation_type": "swiglu"}, "activation_type"),
        ({"n_kv_heads": 3}, "divide"),
        ({"multi_query_attention": True, "n_kv_heads": 2}, "multi_query_attention"),
    ],
)
def test_unsupported_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_multi_query_attention_means_one_kv_head() -> None:
    assert small_config(n_kv_heads=None, multi_query_attention=True).n_kv_heads == 1
    assert LLaDAConfig(d_model=64, mlp_hidden_size=None, mlp_ratio=3).mlp_hidden_size == 192


def test_tiny_model_is_reproducible_from_its_seed() -> None:
    shape = TinyModelConfig(d_model=32, n_layers=1)
    a, b, c = (build_tiny_model(shape, VOCAB, MASK, EOS, PAD, seed=s) for s in (5, 5, 6))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.get_input_embeddings().weight, c.get_input_embeddings().weight)
    assert (a.config.mask_token_id, a.config.eos_token_id, a.config.pad_token_id) == (MASK, EOS, PAD)


def test_save_and_auto_model_reload_give_identical_logits(tmp_path: Path) -> None:
    model = sharpened(LLaDAModelLM(small_config(n_kv_heads=2)))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert isinstance(AutoConfig.from_pretrained(tmp_path, local_files_only=True), LLaDAConfig)
    loaded = AutoModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert isinstance(loaded, LLaDAModelLM)
    ids = tokens(5, (2, 8))
    assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_llada_8b_shape_builds_on_the_meta_device() -> None:
    d, layers, mlp, vocab = 4096, 32, 12288, 126464
    config = LLaDAConfig(
        d_model=d, n_heads=32, n_kv_heads=32, n_layers=layers, mlp_hidden_size=mlp, vocab_size=vocab,
        embedding_size=vocab, max_sequence_length=4096, rope_theta=500000.0,
    )  # fmt: skip
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    count = sum(p.numel() for p in params)
    assert count == 2 * vocab * d + layers * (4 * d * d + 3 * d * mlp + 2 * d) + d
    assert 8.0e9 < count < 8.05e9
