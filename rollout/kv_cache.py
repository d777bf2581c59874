"""How a sampler step gets the logits of the current block: a full forward pass, or a window run against a KV cache.

The sampler (rollout/sampler.py) never calls the model itself; every path asks a `StepCache`:

- `begin_block(x, rows, block_start)`: before a block's first step. A cache fills or refreshes itself here.
- `block_logits(x, rows, block_start)`: the (R, BL, V) logits of the block's positions at the current state
  x_t. A cache runs the model over a window of columns and reads the keys and values of the others.
- `end_block(x, rows, block_start)`: after the block's last step. A cache commits the finished block here.
- `forward_passes`: (B,) how many model calls each row took part in, counted at the call.

`x` is the sampler's (B, S) token matrix ([left padding, prompt, completion], the completion from column
`prompt_width` on). `rows` are the rows being sampled, in order: the early exit drops rows at block boundaries,
and threshold decoding runs only the rows whose block still has open positions, so `block_logits` may get a
subset of the rows its block began with.

Three implementations exist. `FullForward` runs the whole sequence every step (the full-attention path, exactly
as before caches existed, and `sampler.kv_cache: off`). `BlockCausalCache` is exact for block-causal models:
the keys and values of the prompt and of committed blocks cannot change, because nothing they attend to
changes (block-causal attention: a block sees earlier blocks and itself, never later ones), so each step runs
the current block only and one commit pass per finished block writes its clean keys and values.
`ApproximateCache` (`prefix` / `dual`) serves full attention, where no cache is exact: every position attends
to the still-changing block, so cached keys and values go stale as soon as the block's first token is
committed. It refreshes them with one full forward at each block start (and every `cache_refresh_steps`
steps), whose logits serve that step; the other steps run the block and everything after it (`prefix`) or the
block alone (`dual`, reading the cached keys past the window: `read_end`). The sampler records the log-probs of
the distribution it drew from, whichever path produced the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from transformers import Cache

from common.config import SamplerConfig
from common.errors import ConfigError
from common.model.block_mask import BlockSpec, block_causal_mask, block_spec, sequence_blocks, token_positions
from common.model.loading import mask_predictor_logits

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids (A, S), attention_mask (A, S) bool) -> logits (A, S, V), position i predicting token i."""

ModelCall = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""(input_ids, (A, 1, Q, K) mask, position_ids, cache or None) -> unshifted logits of the input columns."""


class StepCache(Protocol):
    """What the sampler calls; see the module docstring."""

    forward_passes: torch.Tensor

    def begin_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None: ...

    def block_logits(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> torch.Tensor: ...

    def end_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None: ...


class KVBuffer(Cache):
    """Keys and values of every buffer column, per layer, for a fixed set of rows (transformers' Cache protocol).

    Before each forward the owner sets the window `[lo, hi)` the forward's tokens occupy, how far keys are read
    (`read_end`) and, for a forward over some of the rows only, their buffer rows (`index`). `update` writes the
    window's keys and values in place and returns columns `[0, read_end)`: the others from the buffer, the
    window's fresh. A window forward therefore stores what it computed; a commit is simply the forward whose
    values are left in place. The first forward of a buffer runs every row and allocates it.
    """

    def __init__(self) -> None:
        super().__init__(layers=[])
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.width = self.lo = self.hi = self.read_end = 0
        self.index: torch.Tensor | None = None

    def window(self, lo: int, hi: int, read_end: int, index: torch.Tensor | None = None) -> None:
        self.lo, self.hi, self.read_end, self.index = lo, hi, read_end, index

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx not in self.keys:
            assert self.index is None, "the first forward of a KVBuffer runs every row"
            rows, heads, _, dim = key_states.shape
            shape = (rows, heads, self.width, dim)
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros(shape)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.index is None:
            keys[:, :, self.lo : self.hi] = key_states
            values[:, :, self.lo : self.hi] = value_states
            return keys[:, :, : self.read_end], values[:, :, : self.read_end]
        keys[self.index, :, self.lo : self.hi] = key_states
        values[self.index, :, self.lo : self.hi] = value_states
        return keys[self.index, :, : self.read_end], values[self.index, :, : self.read_end]

    def select(self, index: torch.Tensor) -> None:
        """Keep the buffer rows at `index` (rows that left the batch are dropped)."""
        for store in (self.keys, self.values):
            for layer, tensor in store.items():
                store[layer] = tensor.index_select(0, index)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lo


def _first_column(real: torch.Tensor) -> int:
    """The first column holding a real token in any row: all-padding columns before it change no logit."""
    return int(real.any(dim=0).to(torch.int8).argmax())


def _subset(kept: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """Buffer rows of `rows` among the `kept` rows (both ascending); None when they are all of them."""
    return None if rows.numel() == kept.numel() else torch.searchsorted(kept, rows)


def _passes(attention: torch.Tensor) -> torch.Tensor:
    return torch.zeros(attention.shape[0], dtype=torch.int32, device=attention.device)


class FullForward:
    """No cache: every step runs the whole sequence of the rows being sampled.

    With full attention it calls `logits_fn(input_ids, attention_mask)` exactly as the sampler always has; with a
    block-causal model (`sampler.kv_cache: off`) it passes the block-causal mask and realigns shifted logits.
    """

    def __init__(
        self,
        attention: torch.Tensor,
        prompt_width: int,
        block_length: int,
        logits_fn: LogitsFn | None = None,
        call: ModelCall | None = None,
        spec: BlockSpec | None = None,
    ) -> None:
        self.attention, self.prompt_width, self.block_length = attention, prompt_width, block_length
        self.logits_fn, self.call, self.spec = logits_fn, call, spec
        self.forward_passes = _passes(attention)

    def begin_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        return None

    def end_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        return None

    def block_logits(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> torch.Tensor:
        attention = self.attention[rows]
        first = _first_column(attention)
        ids, real = x[rows][:, first:], attention[:, first:]
        completion = self.prompt_width - first
        self.forward_passes[rows] += 1
        if self.spec is None:
            assert self.logits_fn is not None
            logits = self.logits_fn(ids, real.long())
        else:
            assert self.call is not None
            blocks = sequence_blocks(real, completion, self.spec.size)
            logits = self.call(ids, block_causal_mask(blocks, real), token_positions(real), None)
            if self.spec.shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        lo = completion + block_start
        return logits[:, lo : lo + self.block_length]


class BlockCausalCache:
    """The exact cache of a block-causal model: prefill the prompt, one window per step, one commit per block.

    Buffer column c is sampler column `offset + c`, where `offset` is the first column holding a real token.
    A shifted model (output i predicts token i+1) scores a block's first position with the output of the
    position before it, which belongs to the previous block (or the prompt) and is final: it is kept from that
    block's commit pass (`carry`), exactly the value a full forward would produce.
    """

    def __init__(
        self, call: ModelCall, spec: BlockSpec, attention: torch.Tensor, prompt_width: int, cfg: SamplerConfig
    ) -> None:
        self.call, self.spec, self.attention = call, spec, attention
        self.prompt_width, self.block_length, self.gen_length = prompt_width, cfg.block_length, cfg.gen_length
        self.rows: torch.Tensor | None = None
        self.buffer = KVBuffer()
        self.carry: torch.Tensor | None = None
        self.forward_passes = _passes(attention)

    def begin_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        if self.rows is None:
            self._prefill(x, rows)
        elif rows.numel() != self.rows.numel():
            self._keep(rows)

    def _prefill(self, x: torch.Tensor, rows: torch.Tensor) -> None:
        """Run the prompt columns once and store their keys and values (the prompt's blocks are final)."""
        self.rows = rows
        attention = self.attention[rows]
        self.offset = _first_column(attention)
        self.real = attention[:, self.offset :]
        self.completion = self.prompt_width - self.offset
        self.blocks = sequence_blocks(self.real, self.completion, self.spec.size)
        self.positions = token_positions(self.real)
        self.buffer.width = self.real.shape[1]
        logits = self._run(x, 0, self.completion)
        self.carry = logits[:, -1] if self.spec.shift else None

    def _keep(self, rows: torch.Tensor) -> None:
        assert self.rows is not None
        index = torch.searchsorted(self.rows, rows)
        self.rows = rows
        self.buffer.select(index)
        self.real, self.blocks, self.positions = self.real[index], self.blocks[index], self.positions[index]
        if self.carry is not None:
            self.carry = self.carry[index]

    def _run(self, x: torch.Tensor, lo: int, hi: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """Forward buffer columns [lo, hi) of the kept rows (or those at `index`) against the columns before them."""
        assert self.rows is not None
        rows = self.rows if index is None else self.rows[index]
        blocks, real, positions = (t if index is None else t[index] for t in (self.blocks, self.real, self.positions))
        ids = x[rows][:, self.offset + lo : self.offset + hi]
        mask = block_causal_mask(blocks[:, :hi], real[:, :hi], queries=slice(lo, hi))
        self.buffer.window(lo, hi, hi, index)
        self.forward_passes[rows] += 1
        return self.call(ids, mask, positions[:, lo:hi], self.buffer)

    def block_logits(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> torch.Tensor:
        assert self.rows is not None
        index = _subset(self.rows, rows)
        lo = self.completion + block_start
        logits = self._run(x, lo, lo + self.block_length, index)
        if self.carry is not None:
            carry = self.carry if index is None else self.carry[index]
            logits = torch.cat([carry[:, None], logits[:, :-1]], dim=1)
        return logits

    def end_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        """The commit pass: the finished block, clean, written into the buffer (skipped after the last block)."""
        if block_start + self.block_length >= self.gen_length:
            return
        lo = self.completion + block_start
        logits = self._run(x, lo, lo + self.block_length)
        if self.carry is not None:
            self.carry = logits[:, -1]


class ApproximateCache:
    """`prefix` / `dual` for full attention (Fast-dLLM's block-wise caches): stale by design, refreshed per block.

    A refresh is a full forward of every column; it stores all keys and values, and its logits serve the step,
    which is therefore exact. It runs at a block's first step and, with `cache_refresh_steps` r > 0, at every
    r-th step of the block. Any other step runs a window against the buffer: `prefix` the block and every column
    after it (only the columns before the block come from the buffer), `dual` the block alone (the columns
    after it, still MASK, come from the buffer too). What is stale is the cached keys' view of the block as it
    was at the last refresh. In threshold decoding the rows still sampling a block have all taken the same
    number of steps in it, so the step index of the block is shared by the rows of a call.
    """

    def __init__(self, call: ModelCall, attention: torch.Tensor, prompt_width: int, cfg: SamplerConfig) -> None:
        self.call, self.attention, self.prompt_width = call, attention, prompt_width
        self.block_length, self.dual, self.refresh = cfg.block_length, cfg.kv_cache == "dual", cfg.cache_refresh_steps
        self.rows: torch.Tensor | None = None
        self.buffer = KVBuffer()
        self.block_step = 0
        self.forward_passes = _passes(attention)

    def begin_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        if self.rows is None:
            attention = self.attention[rows]
            self.offset = _first_column(attention)
            self.real = attention[:, self.offset :]
            self.positions = token_positions(self.real)
            self.completion = self.prompt_width - self.offset
            self.buffer.width = self.real.shape[1]
        elif rows.numel() != self.rows.numel():
            index = torch.searchsorted(self.rows, rows)
            self.buffer.select(index)
            self.real, self.positions = self.real[index], self.positions[index]
        self.rows = rows
        self.block_step = 0

    def block_logits(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> torch.Tensor:
        assert self.rows is not None
        index = _subset(self.rows, rows)
        width = self.real.shape[1]
        lo = self.completion + block_start
        hi = lo + self.block_length
        refresh = self.block_step == 0 or (self.refresh > 0 and self.block_step % self.refresh == 0)
        self.block_step += 1
        start, stop = (0, width) if refresh else (lo, hi if self.dual else width)
        real, positions = (t if index is None else t[index] for t in (self.real, self.positions))
        self.buffer.window(start, stop, width, index)
        self.forward_passes[rows] += 1
        ids = x[rows][:, self.offset + start : self.offset + stop]
        logits = self.call(ids, real[:, None, None, :], positions[:, start:stop], self.buffer)
        return logits[:, lo - start : hi - start]

    def end_block(self, x: torch.Tensor, rows: torch.Tensor, block_start: int) -> None:
        return None


def _model_forward(model: torch.nn.Module) -> LogitsFn:
    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    return forward


def step_cache(
    model: torch.nn.Module | None,
    logits_fn: LogitsFn | None,
    cfg: SamplerConfig,
    attention: torch.Tensor,
    prompt_width: int,
) -> StepCache:
    """The StepCache of a sampler call: `auto` caches block-causal models exactly; `prefix` / `dual` approximate.

    A block-causal model, and a full-attention LLaDA model under `prefix` / `dual`, are called through
    `mask_predictor_logits` with a 4-D mask, their positions and the cache; a `logits_fn` only serves
    full-attention models without a cache (a Dream-style shift is the model's `logits_shift` here). The approximate
    caches need the native LLaDA class, which takes a KV cache for full attention: a model with its own code
    (Dream, `trust_remote_code`) is refused, since nothing says how its attention would read one.
    """
    spec = None if model is None else block_spec(model)

    def call(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        return mask_predictor_logits(model, ids, mask, position_ids=positions, cache=cache)

    if cfg.kv_cache in ("prefix", "dual"):
        if spec is not None:
            raise ConfigError(
                f"sampler.kv_cache = {cfg.kv_cache}: the model is block-causal; its exact cache is `auto` "
                "(prefix and dual approximate full attention)"
            )
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type != "llada":
            raise ConfigError(
                f"sampler.kv_cache = {cfg.kv_cache}: needs a LLaDA-architecture model (model_type llada), not "
                f"{model_type or 'a bare logits function'}; models with their own code (Dream) take no KV cache "
                "here: use auto or off"
            )
        return ApproximateCache(call, attention, prompt_width, cfg)
    if spec is None:
        if logits_fn is None:
            if model is None:
                raise ValueError("sample() needs a model or a logits_fn")
            logits_fn = _model_forward(model)
        return FullForward(attention, prompt_width, cfg.block_length, logits_fn=logits_fn)
    if cfg.block_length != spec.size:
        raise ConfigError(
            f"sampler.block_length = {cfg.block_length}: the model is block-causal with blocks of {spec.size} "
            "(its config's block size); the sampler's blocks must be the model's attention blocks"
        )
    if cfg.kv_cache == "off":
        return FullForward(attention, prompt_width, cfg.block_length, call=call, spec=spec)
    return BlockCausalCache(call, spec, attention, prompt_width, cfg)
