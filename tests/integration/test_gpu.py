"""GPU checks (marker `gpu`, skipped without CUDA): bf16 sampling, NCCL weight broadcast, a DeepSpeed step.

`deploy/gpu_check.py` runs these plus a short throughput benchmark and writes the figures to JSON.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket

import numpy as np
import pytest
import torch

from common.config import Config, SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from common.record import group_advantages

pytestmark = pytest.mark.gpu

SHAPE = TinyModelConfig(d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, mlp_hidden_size=768)
VOCAB, MASK, EOS, PAD = 512, 511, 510, 509


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prompts(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 500, (8 + i % 5,), generator=g).tolist() for i in range(n)]


def test_bf16_sampling_records_are_on_policy() -> None:
    from learner.logprobs import build_step_tokens, model_logits, step_token_logprobs
    from rollout.sampler import sample
    from tests.unit.learner_helpers import exact_pairs

    model = build_tiny_model(SHAPE, VOCAB, MASK, EOS, PAD).to("cuda", torch.bfloat16).eval()
    cfg = SamplerConfig(gen_length=32, block_length=8, steps=16, temperature=0.8, top_k=50, remasking="random")
    gen = torch.Generator(device="cuda").manual_seed(0)
    batch = sample(model, _prompts(16), cfg, MASK, EOS, PAD, gen, banned_ids=(PAD,))
    assert batch.completion_ids.shape == (16, 32)
    assert ((batch.unmask_step >= 0) & (batch.unmask_step < 16)).all()
    assert not np.isin(batch.completion_ids, [MASK, PAD]).any()
    rows, steps, _ = exact_pairs(batch)
    tokens = build_step_tokens(batch, rows.numpy(), steps.numpy(), PAD)
    with torch.no_grad():
        logprob = step_token_logprobs(model_logits(model), tokens, batch, (PAD,), torch.device("cuda"))
    diff = (logprob.float().cpu() - tokens.behaviour_logprob).abs().max()
    assert diff < 1e-2, f"bf16 recompute differs from the rollout by {diff}"


def _nccl_rank(rank: int, port: int, out: mp.Queue) -> None:
    from common.weight_sync import create_group, model_checksum, receive_weights, send_weights

    torch.cuda.set_device(rank)
    model = build_tiny_model(SHAPE, VOCAB, MASK, EOS, PAD, seed=rank).to("cuda", torch.bfloat16)
    params = list(model.named_parameters())
    group = create_group("nccl", "127.0.0.1", port, rank, 2, generation=0, timeout_s=120)
    with torch.no_grad():
        if rank == 0:
            stats = send_weights(group, params, 1, 8 * 1024**2)
        else:
            stats = receive_weights(group, params, -1, 8 * 1024**2)
    out.put((rank, stats.version, stats.bytes, model_checksum([p for _, p in params])))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL refuses two ranks on one GPU; needs 2 GPUs")
def test_nccl_weight_broadcast_between_two_processes() -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_nccl_rank, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=300) for _ in range(2))
    for p in procs:
        p.join(timeout=60)
    assert results[0][1:] == results[1][1:]


def test_deepspeed_bf16_step_updates_the_policy() -> None:
    from learner.engine import LearnerEngine, init_learner_distributed
    from learner.update import policy_update
    from rollout.sampler import sample

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    init_learner_distributed("nccl")
    config = Config.model_validate(
        {
            "sampler": {"gen_length": 16, "block_length": 16, "steps": 8, "remasking": "random"},
            "algorithm": {"group_size": 4, "k": 4},
            "learner": {"world_size": 1, "groups_per_step": 2, "lr": 1e-3, "zero_stage": 2},
        }
    )
    model = build_tiny_model(SHAPE, VOCAB, MASK, EOS, PAD).to("cuda", torch.bfloat16)
    engine = LearnerEngine(model, config.learner, 0, 1, "cuda", torch.bfloat16)
    before = [p.detach().float().clone() for p in engine.module.parameters()]
    gen = torch.Generator(device="cuda").manual_seed(0)
    prompts = [p for p in _prompts(2) for _ in range(4)]
    with torch.no_grad():
        batch = sample(engine.module, prompts, config.sampler, MASK, EOS, PAD, gen, banned_ids=(PAD,))
    rewards = torch.tensor((batch.completion_ids == 7).mean(axis=1), dtype=torch.float32).view(2, 4)
    rewards[:, 0] += 1.0
    stats = policy_update(
        engine.module,
        batch,
        group_advantages(rewards).reshape(-1),
        config,
        pad_id=PAD,
        banned_ids=(PAD,),
        backward=engine.backward,
        optimizer_step=engine.step,
        generator=torch.Generator().manual_seed(0),
        logits_fn=lambda ids, mask: engine.forward(ids, attention_mask=mask).logits,
    )
    assert np.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    changed = any(
        not torch.equal(b, p.detach().float()) for b, p in zip(before, engine.module.parameters(), strict=True)
    )
    assert changed
