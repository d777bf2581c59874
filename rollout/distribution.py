"""The per-position token distribution of one sampler step: ban, temper, truncate, draw, score.

Everything works on the M still-masked positions of the current block, as rows of an (M, V) float32
logits matrix. After truncation a position's distribution lives on W candidate columns (W = top_k, the
widest nucleus, or the whole vocabulary); drawing, log-probs and entropies are computed in that
candidate space so top-k sampling never touches (M, V) float64 noise.

Dtype path (what the learner must reproduce for on-policy ratios of exactly 1):
logits.float() -> banned ids set to -inf -> / temperature (skipped at T = 0) -> top-k, then top-p
(removed entries -inf) -> log_softmax in float32. Only the choice of the token uses float64 (Gumbel
noise added to the float64 copy of those truncated tempered logits), as in LLaDA, where low-precision
Gumbel-max is known to hurt generation quality. The confidence that ranks positions (`low_confidence`) and
meets a threshold is the drawn token's probability in `sampler.confidence_dtype` (docs/sampler.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from common.record import NO_TOKEN

_NEG_INF = float("-inf")


@dataclass
class Candidates:
    """Tempered, truncated logits of M positions over W candidate tokens.

    `ids[m, w]` is the token id of column w (NO_TOKEN where truncation removed it; kept ids form a
    prefix, most likely first). `ids` is None without truncation: column w is token w.
    """

    logits: torch.Tensor
    ids: torch.Tensor | None

    def token_ids(self, choice: torch.Tensor) -> torch.Tensor:
        """Token ids of the chosen columns."""
        if self.ids is None:
            return choice
        return self.ids.gather(1, choice[:, None]).squeeze(1)


def truncate(logits: torch.Tensor, banned: torch.Tensor, temperature: float, top_k: int, top_p: float) -> Candidates:
    """Ban, temper and truncate (M, V) float32 logits; the input is left untouched.

    At temperature 0 the logits stay untempered: the greedy token is their argmax and its log-prob,
    entropy and confidence come from the temperature-1 softmax, which is what LLaDA ranks by.
    Top-p keeps the smallest most-likely prefix whose mass reaches top_p (a token stays while the mass
    before it is below top_p), computed after top-k on the renormalised top-k distribution.
    """
    z = logits.index_fill(1, banned, _NEG_INF)
    if temperature > 0:
        z.div_(temperature)
    if top_k > 0:
        vals, ids = z.topk(min(top_k, z.shape[1]), dim=1)
    elif top_p < 1.0:
        vals, ids = z.sort(dim=1, descending=True, stable=True)
    else:
        return Candidates(z, None)
    if top_p < 1.0:
        probs = torch.softmax(vals, dim=1)
        mass_before = probs.cumsum(dim=1) - probs
        vals = vals.masked_fill(mass_before >= top_p, _NEG_INF)
    removed = torch.isneginf(vals)
    ids = ids.masked_fill(removed, NO_TOKEN)
    if top_k == 0:
        width = int((~removed).sum(dim=1).max())
        vals, ids = vals[:, :width], ids[:, :width]
    return Candidates(vals, ids)


def draw(cand: Candidates, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """(M,) chosen candidate columns: argmax at T = 0, otherwise Gumbel-max in float64."""
    if temperature == 0:
        return cand.logits.argmax(dim=1)
    u = torch.rand(cand.logits.shape, dtype=torch.float64, device=cand.logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
    return (cand.logits.double() + gumbel).argmax(dim=1)


def token_stats(cand: Candidates, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M,) float32 log-prob of the chosen token and entropy of the truncated tempered distribution."""
    logp = torch.log_softmax(cand.logits, dim=1)
    chosen = logp.gather(1, choice[:, None]).squeeze(1)
    finite = logp.masked_fill(torch.isneginf(logp), 0.0)
    entropy = -(logp.exp() * finite).sum(dim=1)
    return chosen, entropy


def confidence(cand: Candidates, choice: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(M,) probability of the chosen token under the truncated tempered distribution, softmax in `dtype`.

    `dtype` is the precision `sampler.confidence_dtype` names: the model's logits dtype reproduces LLaDA's
    generate.py (a softmax of the model's bf16 logits on a GPU, with its many exact ties), float64 is Fast-dLLM's
    copy and LLaDA's code before June 2025. The result stays in `dtype`, so ties stay ties for the tie-break.
    """
    probs = torch.softmax(cand.logits.to(dtype), dim=1)
    return probs.gather(1, choice[:, None]).squeeze(1)


def position_scores(
    mode: str,
    conf: torch.Tensor | None,
    entropy: torch.Tensor,
    cols: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """(M,) scores of the M open positions at block columns `cols`; the highest-scoring are committed.

    `low_confidence` ranks by `conf` in its own dtype; `random` draws U(0, 1) in float64 from the generator;
    `entropy` prefers the lowest entropy; `leftmost` the lowest column (left to right, independent of theta).
    """
    if mode == "low_confidence":
        assert conf is not None
        return conf
    if mode == "random":
        return torch.rand(cols.shape, dtype=torch.float64, device=cols.device, generator=generator)
    if mode == "entropy":
        return -entropy.double()
    if mode == "leftmost":
        return -cols.double()
    raise ValueError(f"remasking = {mode!r}: must be low_confidence, random, entropy or leftmost")


def banned_tensor(mask_id: int, banned_ids: Sequence[int], device: torch.device) -> torch.Tensor:
    """Ids never sampled: the given ones plus MASK, which would leave a position uncommitted."""
    return torch.tensor(sorted({mask_id, *banned_ids}), dtype=torch.long, device=device)
