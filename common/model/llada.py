"""A LLaDA-architecture mask predictor, readable in one sitting.

The module tree and parameter names follow the public LLaDA-8B checkpoint (`model.transformer.wte`,
`blocks.{i}.q_proj`, `attn_out`, `ff_proj`, `up_proj`, `ff_out`, `ln_f`), so a LLaDA-format directory
loads into this class without renaming and LoRA target names from the released recipe apply as they are.
Attention is bidirectional (no causal mask) by default: the predictor sees masked future positions, which
is what makes it a diffusion model rather than an autoregressive one. With `attention: "block_causal"` the
same network attends bidirectionally inside blocks of `block_size` tokens and causally across them (a
block-diffusion model, common/model/block_mask.py), and can run a window of positions against a KV cache.

This file and block_mask.py are also the modeling code of every directory agrpo saves: both classes are
registered for transformers' Auto classes, so `save_pretrained` copies the two files next to the weights and
writes `auto_map`, and plain transformers loads the directory with `trust_remote_code=True`, agrpo not
installed. Hence they import only torch, transformers and each other (relatively), and use only what both
transformers 4.57 and 5 have (tests/unit/test_plain_transformers.py loads a saved directory with each).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .block_mask import block_causal_mask, token_positions

ATTENTION_KINDS = ("full", "block_causal")
# What a saved directory's config.json maps transformers' Auto classes to: this file, copied next to it under its
# own name by `save_pretrained` (the module is `llada` both here and where transformers imports the copy).
_MODULE = __name__.rsplit(".", 1)[-1]
AUTO_MAP = {
    "AutoConfig": f"{_MODULE}.LLaDAConfig",
    "AutoModel": f"{_MODULE}.LLaDAModelLM",
    "AutoModelForMaskedLM": f"{_MODULE}.LLaDAModelLM",
}

# Settings of the public LLaDA code that this file implements one way only (the LLaDA-8B way). Any other
# value builds a different network, so such a checkpoint is refused instead of being loaded wrongly.
FIXED_SETTINGS: dict[str, object] = {
    "block_type": "llama",
    "activation_type": "silu",
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "rope": True,
    "rope_full_precision": True,
    "alibi": False,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "scale_logits": False,
    "block_group_size": 1,
}


def unsupported_settings(values: dict[str, Any]) -> list[str]:
    """`key = value (supported: ...)` for each setting in `values` that this implementation cannot build."""
    problems = [
        f"{key} = {values[key]!r} (supported: {want!r})"
        for key, want in FIXED_SETTINGS.items()
        if key in values and values[key] != want
    ]
    # The public code gives norms a bias when bias_for_layer_norm is true, or unset and include_bias is true.
    norm_bias = values.get("bias_for_layer_norm")
    if norm_bias is None:
        norm_bias = values.get("include_bias", False)
    if norm_bias:
        problems.append("layer-norm bias (bias_for_layer_norm / include_bias) = true (supported: false)")
    return problems


class LLaDAConfig(PretrainedConfig):
    """The `config.json` keys of the public LLaDA checkpoints, with the LLaDA-8B meaning of each.

    Saving writes the FIXED_SETTINGS keys too, so a directory we save is itself a complete LLaDA-format
    checkpoint (the public modeling code would build the same network from it). Its `auto_map` always names
    this file's classes: a public checkpoint's own (pointing at its modeling_llada.py) is replaced, because the
    directory we save ships this code, not that.
    """

    model_type = "llada"
    # The generic names that DeepSpeed ("auto" bucket sizes), PEFT and transformers utilities look up.
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
    }

    def __init__(
        self,
        d_model: int = 128,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        multi_query_attention: bool | None = None,
        n_layers: int = 4,
        mlp_hidden_size: int | None = None,
        mlp_ratio: int = 4,
        vocab_size: int = 128,
        embedding_size: int | None = None,
        max_sequence_length: int = 256,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        weight_tying: bool = False,
        init_std: float = 0.02,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        attention: str = "full",
        block_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        for key, value in FIXED_SETTINGS.items():
            kwargs.setdefault(key, value)
        kwargs.pop("auto_map", None)
        problems = unsupported_settings({**kwargs, "include_bias": include_bias})
        if multi_query_attention and n_kv_heads not in (None, 1):
            problems.append(f"multi_query_attention = true with n_kv_heads = {n_kv_heads} (must be 1)")
        kv_heads = 1 if multi_query_attention else (n_kv_heads or n_heads)
        if d_model % n_heads or n_heads % kv_heads:
            problems.append(f"d_model {d_model}, n_heads {n_heads}, n_kv_heads {kv_heads} do not divide")
        if embedding_size is not None and embedding_size < vocab_size:
            problems.append(f"embedding_size {embedding_size} < vocab_size {vocab_size}")
        if attention not in ATTENTION_KINDS:
            problems.append(f"attention = {attention!r} (supported: {', '.join(ATTENTION_KINDS)})")
        if attention == "block_causal" and (not isinstance(block_size, int) or block_size < 1):
            problems.append(f"block_size = {block_size!r} with block_causal attention (must be a positive integer)")
        if problems:
            raise ValueError("unsupported LLaDA config: " + "; ".join(problems))
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = kv_heads
        self.multi_query_attention = multi_query_attention
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size if mlp_hidden_size is not None else mlp_ratio * d_model
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.weight_tying = weight_tying
        self.init_std = init_std
        self.mask_token_id = mask_token_id
        self.attention = attention
        self.block_size = block_size
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.auto_map = dict(AUTO_MAP)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As the public code: normalise in float32, cast back, then scale in the model dtype, so bf16
        # logits match the reference implementation's rounding.
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.weight * normed


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (B, 1, S, head_dim) for per-row positions (so left padding does not shift them)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """Pre-norm block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

    `gradient_checkpointing` is the flag transformers' `gradient_checkpointing_enable` sets (with
    `_gradient_checkpointing_func`) on every module that has one; `LLaDAModelLM.forward` reads it.
    """

    gradient_checkpointing = False

    def __init__(self, config: LLaDAConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        d, h, kv = config.d_model, config.n_heads, config.n_kv_heads
        self.n_heads, self.n_kv_heads, self.head_dim = h, kv, d // h
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv * self.head_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=config.include_bias)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=config.include_bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=config.include_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        cache: Any = None,
    ) -> torch.Tensor:
        """`cache.update(k, v, layer_idx)` (transformers' Cache protocol) stores this window's keys and values
        and returns every key and value the window attends to."""
        b, s, _ = x.shape
        hx = self.attn_norm(x)
        q = self.q_proj(hx).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hx).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hx).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.n_kv_heads != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, s, -1))
        hx = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(hx)) * self.up_proj(hx))


class LLaDATransformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.embedding_size, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
            }
        )
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=config.include_bias)


class LLaDAModelLM(PreTrainedModel):
    """Mask predictor: token ids (with MASK at unknown positions) -> logits at every position."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ("LLaDABlock",)
    supports_gradient_checkpointing = True

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        self.model = LLaDATransformer(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        **_: object,
    ) -> MaskedLMOutput:
        """`attention_mask` (B, S) marks real tokens (1) and padding (0); padding is never attended to.

        Positions count real tokens only, so a left-padded row gets the same logits as the unpadded row:
        the learner can batch trajectories with different padding than the rollout used. (Versions of the public
        LLaDA code add a causal bias whenever the mask holds a 0; a mask predictor must stay bidirectional,
        so here the mask only hides padding keys. RoPE is relative, so the shifted positions do not change
        any attention score between real tokens.)

        A block-causal model given a (B, S) mask cuts the whole sequence into blocks from position 0 (the
        prompt layout). Callers that lay out a completion, a cache window or a composite sequence pass a
        (B, 1, Q, K) boolean "may attend" mask from common/model/block_mask.py with `position_ids`, and
        `cache` when the keys of earlier positions come from a KV cache (rollout/kv_cache.py).
        """
        t = self.model.transformer
        x = t["wte"](input_ids)
        key_mask = None
        if attention_mask is not None and attention_mask.dim() == 4:
            if position_ids is None:
                raise ValueError("a 4-D attention mask needs position_ids")
            key_mask = attention_mask.bool()
        else:
            real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            if position_ids is None:
                position_ids = token_positions(real)
            if self.config.attention == "block_causal":
                key_mask = block_causal_mask(position_ids // self.config.block_size, real)
            elif attention_mask is not None:
                key_mask = real[:, None, None, :]
        rope = rotary_tables(position_ids, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        for block in t["blocks"]:
            x = self._run_block(block, x, rope, key_mask, cache)
        x = t["ln_f"](x)
        logits = F.linear(x, t["wte"].weight) if self.config.weight_tying else t["ff_out"](x)
        # Rows past vocab_size are padding of the embedding matrix, never real tokens: drop them so no
        # sampler can pick one.
        logits = logits[..., : self.config.vocab_size]
        return MaskedLMOutput(logits=logits)

    def _run_block(
        self,
        block: LLaDABlock,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        cache: Any,
    ) -> torch.Tensor:
        """One block, with its activations recomputed in the backward pass when gradient checkpointing is on.

        Only a training forward that builds a graph is checkpointed; a forward against a KV cache never is,
        since recomputing it would write the window's keys and values into the cache a second time.
        """
        if block.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled():
            return block._gradient_checkpointing_func(block.__call__, x, rope, key_mask, None)
        return block(x, rope, key_mask, cache)


# `save_pretrained` then copies this file and block_mask.py into the directory and writes `auto_map`.
LLaDAConfig.register_for_auto_class()
LLaDAModelLM.register_for_auto_class("AutoModel")
