"""LearnerEngine on 2 gloo ranks: every ZeRO stage matches a plain torch reference, resume is bit-exact, LoRA
trains only adapters and syncs merged weights, older weight versions swap in and out without changing training.

One spawned 2-rank world runs every check (DeepSpeed start-up is the slow part) and sends its results back
as numpy arrays; the parent computes the single-process reference and asserts.
"""

from __future__ import annotations

import os
import queue
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from common.checkpoint import read_checkpoint, write_checkpoint
from common.config import LearnerConfig, LoraConfig, TinyModelConfig
from common.errors import ConfigError
from common.model import build_tiny_model
from learner.engine import uses_bf16
from learner.optimizer import lr_factor

SHAPE = TinyModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, mlp_hidden_size=48, max_sequence_length=16)
VOCAB, MASK_ID, EOS_ID = 48, 47, 46
WORLD, STEPS, MICRO, SEQ = 2, 4, 3, 10
STAGES = (0, 1, 2, 3)
LORA_STAGES = (2, 3)
LORA_R, LORA_ALPHA = 4, 8


def learner_cfg(stage: int, lora: bool = False, checkpointing: bool = False) -> LearnerConfig:
    """Small clip so clipping is active; a 2-step warmup (lr 0, then half) before the cosine."""
    return LearnerConfig(
        gradient_checkpointing=checkpointing,
        world_size=WORLD,
        zero_stage=stage,
        steps=8,
        groups_per_step=2,
        lr=1e-2,
        weight_decay=0.1,
        warmup_ratio=0.0 if lora else 0.25,
        grad_clip=0.5,
        lora=LoraConfig(enabled=lora, r=LORA_R, alpha=LORA_ALPHA),
    )


def tiny(seed: int = 0) -> torch.nn.Module:
    return build_tiny_model(SHAPE, VOCAB, MASK_ID, EOS_ID, seed=seed)


def micro_batches(step: int, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank 1 gets more trajectories than rank 0, so equal shares per rank differ from a trajectory mean."""
    g = torch.Generator().manual_seed(1000 * step + 10 * rank)
    rows = [1 + rank + (m % 2) for m in range(MICRO)]
    return [
        (torch.randint(0, VOCAB, (n, SEQ), generator=g), torch.randint(0, VOCAB, (n, SEQ), generator=g)) for n in rows
    ]


def rank_losses(forward: Any, step: int, rank: int) -> Iterator[torch.Tensor]:
    """Cross-entropy summed over tokens, divided by this rank's trajectory count of the step.

    A generator, so each micro-batch's forward runs right before its backward, as in the loss code.
    """
    batches = micro_batches(step, rank)
    count = sum(ids.shape[0] for ids, _ in batches)
    for ids, targets in batches:
        logits = forward(input_ids=ids).logits
        yield F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum") / count


def to_numpy(node: Any) -> Any:
    if isinstance(node, torch.Tensor):
        return node.detach().cpu().numpy()
    if isinstance(node, dict):
        return {k: to_numpy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_numpy(v) for v in node]
    return node


def to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in state.items()}


# ---- what each rank runs ------------------------------------------------------------------------------------


def _train(engine: Any, steps: range, rank: int) -> list[dict[str, float]]:
    stats = []
    for step in steps:
        for i, loss in enumerate(rank_losses(engine.forward, step, rank)):
            engine.backward(loss, last=i == MICRO - 1)
        stats.append(engine.step())
    return stats


def _train_with_swaps(engine: Any, steps: range, rank: int) -> dict[str, Any]:
    """`_train`, but before each step the weights of the previous version are swapped in for a no-grad forward
    (what the learner does to score stale groups) and swapped out again."""
    from learner.weight_history import WeightHistory

    history = WeightHistory(engine.trainable_state, engine.load_trainable_state, keep=1, collective=engine.zero3)
    probe = micro_batches(99, 0)[0][0]
    current, previous = [], []
    for step in steps:
        history.record(step)
        with torch.no_grad():
            current.append(engine.forward(input_ids=probe).logits.clone())
            if history.has(step - 1):
                with history.use(step - 1):
                    previous.append(engine.forward(input_ids=probe).logits.clone())
        _train(engine, range(step, step + 1), rank)
    return {
        "final": engine.full_state_dict(),
        "previous_reproduced": all(torch.equal(a, b) for a, b in zip(current[:-1], previous, strict=True)),
        "kept": history.versions,
    }


def _stage_checks(stage: int, rank: int, tmp: Path) -> dict[str, Any]:
    from common.weight_sync import contiguous_span, create_group
    from learner.engine import LearnerEngine

    cfg = learner_cfg(stage)
    engine = LearnerEngine(tiny(), cfg, rank, WORLD, "cpu", torch.float32)
    stats = _train(engine, range(2), rank)
    ckpt = write_checkpoint(
        tmp / f"stage{stage}-rank{rank}", 2, {"model": engine.model_state(), "optim": engine.optimizer_state()}
    )
    stats += _train(engine, range(2, STEPS), rank)
    final = engine.full_state_dict()

    weights = engine.full_weights
    named = weights.named()
    with weights.gather([t for _, t in named]):
        synced = {n: t.detach().clone() for n, t in named}
    outside_is_nan = all(bool(torch.isnan(t).all()) for _, t in named) if stage == 3 else None
    # Without ZeRO-3 the handles are the parameters, laid back to back: buckets go out without a copy.
    sent_in_place = not weights.lazy and contiguous_span([t for _, t in named]) is not None
    group = create_group("gloo", "127.0.0.1", _free_port(), 0, 1, generation=0, timeout_s=60) if rank == 0 else None
    buckets = weights.send(group, version=1, bucket_bytes=16 * 1024).buckets

    ids = micro_batches(0, rank)[0][0]
    first, second = (engine.forward(input_ids=ids).logits.sum() for _ in range(2))
    engine.backward(first, last=False)
    try:
        engine.backward(second, last=False)
        double_backward_refused = False
    except RuntimeError:
        double_backward_refused = True

    resumed = LearnerEngine(tiny(seed=7), cfg, rank, WORLD, "cpu", torch.float32)
    parts = read_checkpoint(ckpt, ["model", "optim"])
    resumed.load_model_state(parts["model"])
    resumed.load_optimizer_state(parts["optim"])
    resumed_stats = _train(resumed, range(2, STEPS), rank)
    resumed_final = resumed.full_state_dict()
    swapped = _train_with_swaps(LearnerEngine(tiny(), cfg, rank, WORLD, "cpu", torch.float32), range(STEPS), rank)
    return {
        "swapped_equal": all(torch.equal(final[k], swapped["final"][k]) for k in final),
        "previous_reproduced": swapped["previous_reproduced"],
        "kept": swapped["kept"],
        "stats": stats,
        "final": final,
        "synced": synced,
        "sync_names": [n for n, _ in named],
        "outside_is_nan": outside_is_nan,
        "buckets": buckets,
        "sent_in_place": sent_in_place,
        "resumed_stats": resumed_stats,
        "double_backward_refused": double_backward_refused,
        "resumed_equal": all(torch.equal(final[k], resumed_final[k]) for k in final),
    }


def _lora_checks(stage: int, rank: int) -> dict[str, Any]:
    from learner.engine import LearnerEngine

    cfg = learner_cfg(stage, lora=True)
    engine = LearnerEngine(tiny(), cfg, rank, WORLD, "cpu", torch.float32)
    trainable = [n for n, p in engine.module.named_parameters() if p.requires_grad]
    _train(engine, range(1), rank)
    saved = (engine.model_state(), engine.optimizer_state())
    _train(engine, range(1, 3), rank)
    named = engine.full_weights.named()
    with engine.full_weights.gather([t for _, t in named]):
        synced = {n: t.detach().clone() for n, t in named}
    full = engine.full_state_dict()

    resumed = LearnerEngine(tiny(), cfg, rank, WORLD, "cpu", torch.float32, seed=5)
    resumed.load_model_state(saved[0])
    resumed.load_optimizer_state(saved[1])
    _train(resumed, range(1, 3), rank)
    resumed_full = resumed.full_state_dict()
    swapped = _train_with_swaps(LearnerEngine(tiny(), cfg, rank, WORLD, "cpu", torch.float32), range(3), rank)
    return {
        "swapped_equal": all(torch.equal(full[k], swapped["final"][k]) for k in full),
        "previous_reproduced": swapped["previous_reproduced"],
        "trainable": trainable,
        "adapters": engine.model_state(),
        "synced": synced,
        "full": full,
        "resumed_equal": all(torch.equal(full[k], resumed_full[k]) for k in full),
    }


def _checkpointing_checks(rank: int) -> dict[str, Any]:
    """`learner.gradient_checkpointing` under ZeRO-3, and with LoRA: the final weights of the runs without it."""
    from learner.engine import LearnerEngine

    full = LearnerEngine(tiny(), learner_cfg(3, checkpointing=True), rank, WORLD, "cpu", torch.float32)
    _train(full, range(STEPS), rank)
    lora = LearnerEngine(tiny(), learner_cfg(2, lora=True, checkpointing=True), rank, WORLD, "cpu", torch.float32)
    _train(lora, range(3), rank)
    blocks = [m for e in (full, lora) for m in e.module.modules() if type(m).__name__ == "LLaDABlock"]
    return {
        "full": full.full_state_dict(),
        "lora": lora.full_state_dict(),
        "enabled": len(blocks) == 2 * SHAPE.n_layers and all(b.gradient_checkpointing for b in blocks),
    }


def _world(rank: int, port: int, out: Any, tmp: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from learner.engine import init_learner_distributed

    init_learner_distributed("gloo", timeout_s=300)
    results: dict[str, Any] = {f"stage{s}": _stage_checks(s, rank, Path(tmp)) for s in STAGES}
    results.update({f"lora{s}": _lora_checks(s, rank) for s in LORA_STAGES})
    results["checkpointing"] = _checkpointing_checks(rank)
    out.put((rank, to_numpy(results)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """Both ranks' results; the queue is drained while the ranks run so large results cannot block them."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    tmp = tmp_path_factory.mktemp("learner")
    procs = mp.start_processes(
        _world, args=(_free_port(), out, str(tmp)), nprocs=WORLD, join=False, start_method="spawn"
    )
    results: dict[int, dict[str, Any]] = {}
    while len(results) < WORLD:
        try:
            rank, payload = out.get(timeout=2)
            results[rank] = payload
        except queue.Empty:
            procs.join(timeout=0)
    while not procs.join():
        pass
    return results


# ---- the reference: one process, plain torch ---------------------------------------------------------------


def reference_run(cfg: LearnerConfig) -> tuple[dict[str, torch.Tensor], list[float], list[float]]:
    """AdamW on the mean over ranks of each rank's summed micro-batch gradients, clipped, HF-style schedule."""
    model = tiny()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warmup = 2  # ceil(0.25 * 8)
    lrs = [
        cfg.lr * (s / warmup if s < warmup else 0.5 * (1 + np.cos(np.pi * (s - warmup) / (cfg.steps - warmup))))
        for s in range(STEPS)
    ]
    norms = []
    for step in range(STEPS):
        per_rank = []
        for rank in range(WORLD):
            model.zero_grad()
            sum(rank_losses(model, step, rank)).backward()
            per_rank.append([p.grad.clone() for p in params])
        for i, p in enumerate(params):
            p.grad = torch.stack([g[i] for g in per_rank]).mean(0)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)))
        for group in opt.param_groups:
            group["lr"] = lrs[step]
        opt.step()
    return dict(model.state_dict()), norms, lrs


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], list[float], list[float]]:
    return reference_run(learner_cfg(2))


# ---- assertions --------------------------------------------------------------------------------------------


def test_lr_factor_warmup_then_cosine_to_zero() -> None:
    assert [lr_factor(s, 10, 2, "cosine") for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_factor(7, 10, 2, "constant") == 1.0


def test_dtype_rule_bf16_only_on_cuda() -> None:
    assert uses_bf16(torch.device("cuda"), torch.bfloat16)
    assert not uses_bf16(torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="model.dtype = bfloat16"):
        uses_bf16(torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ConfigError, match="model.dtype = float16"):
        uses_bf16(torch.device("cuda"), torch.float16)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_matches_torch_reference(world: dict, reference: tuple, stage: int) -> None:
    ref_state, ref_norms, ref_lrs = reference
    for rank in range(WORLD):
        got = world[rank][f"stage{stage}"]
        final = to_torch(got["final"])
        assert list(final) == list(ref_state)
        for name, value in ref_state.items():
            torch.testing.assert_close(final[name], value, atol=1e-6, rtol=0, msg=f"stage {stage} rank {rank} {name}")
        assert [s["lr"] for s in got["stats"]] == pytest.approx(ref_lrs, abs=1e-12)
        assert [s["grad_norm"] for s in got["stats"]] == pytest.approx(ref_norms, rel=1e-5)
    assert max(ref_norms) > learner_cfg(stage).grad_clip, "the reference should exercise clipping"


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_resume_is_bit_identical(world: dict, stage: int) -> None:
    for rank in range(WORLD):
        got = world[rank][f"stage{stage}"]
        assert got["resumed_equal"], f"stage {stage} rank {rank}: resumed weights differ"
        assert got["resumed_stats"] == got["stats"][2:]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_older_weights_swap_in_and_out_without_changing_training(world: dict, stage: int) -> None:
    """A no-grad pass under the previous version's weights before every step (learner/weight_history.py)
    reproduces that version's logits exactly, and the run ends on bit-identical weights; LoRA swaps adapters."""
    for rank in range(WORLD):
        for key in (f"stage{stage}", *([f"lora{stage}"] if stage in LORA_STAGES else [])):
            got = world[rank][key]
            assert got["swapped_equal"], f"{key} rank {rank}: swapping weights changed the training"
            assert got["previous_reproduced"], f"{key} rank {rank}: the swapped-in weights are not the old ones"
        assert list(world[rank][f"stage{stage}"]["kept"]) == [STEPS - 2, STEPS - 1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_backward_needs_its_own_forward(world: dict, stage: int) -> None:
    """Two backwards in a row would make ZeRO-3 keep only the last gradient; the engine refuses them."""
    assert all(world[rank][f"stage{stage}"]["double_backward_refused"] for rank in range(WORLD))


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_sync_handles_give_full_weights_in_plain_order(world: dict, stage: int) -> None:
    plain_names = [n for n, _ in tiny().named_parameters()]
    for rank in range(WORLD):
        got = world[rank][f"stage{stage}"]
        assert got["sync_names"] == plain_names
        for name in plain_names:
            assert np.array_equal(got["synced"][name], got["final"][name]), name
    assert world[0][f"stage{stage}"]["buckets"] > 1
    assert all(world[r][f"stage{stage}"]["sent_in_place"] == (stage != 3) for r in range(WORLD))
    if stage == 3:
        assert all(world[r]["stage3"]["outside_is_nan"] for r in range(WORLD))


@pytest.mark.slow
@pytest.mark.parametrize("stage", LORA_STAGES)
def test_lora_trains_adapters_and_syncs_merged_weights(world: dict, stage: int) -> None:
    from learner.lora import apply_lora

    got = world[0][f"lora{stage}"]
    assert got["trainable"] and all(".lora_A." in n or ".lora_B." in n for n in got["trainable"])
    adapters = to_torch(got["adapters"])
    assert sorted(adapters) == sorted(got["trainable"])
    assert any(v.abs().sum() > 0 for n, v in adapters.items() if ".lora_B." in n), "adapters did not train"
    base = dict(tiny().named_parameters())
    synced = to_torch(got["synced"])
    assert list(synced) == list(base)
    scale = LORA_ALPHA / LORA_R
    merged_names = set()
    for name, w0 in base.items():
        module = name.removesuffix(".weight")
        a = adapters.get(f"base_model.model.{module}.lora_A.default.weight")
        expected = (
            w0.detach()
            if a is None
            else w0.detach() + scale * adapters[f"base_model.model.{module}.lora_B.default.weight"] @ a
        )
        if a is not None:
            merged_names.add(name)
        torch.testing.assert_close(synced[name], expected, atol=1e-6, rtol=0, msg=name)
    assert "model.transformer.ff_out.weight" not in merged_names, "the output head gets no adapter"
    assert len(merged_names) == 7 * SHAPE.n_layers

    reference = apply_lora(tiny(), learner_cfg(stage, lora=True).lora)
    reference.load_state_dict(adapters, strict=False)
    peft_merged = dict(reference.merge_and_unload().named_parameters())
    for name, value in synced.items():
        torch.testing.assert_close(value, peft_merged[name].detach(), atol=1e-6, rtol=0, msg=name)
    assert all(np.array_equal(got["full"][n], got["synced"][n]) for n in got["synced"])
    assert all(world[rank][f"lora{stage}"]["resumed_equal"] for rank in range(WORLD)), "LoRA resume differs"
    for rank in range(WORLD):
        other = to_torch(world[rank][f"lora{stage}"]["synced"])
        for name in synced:
            torch.testing.assert_close(other[name], synced[name], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_lora_stage3_matches_stage2(world: dict) -> None:
    s2, s3 = to_torch(world[0]["lora2"]["synced"]), to_torch(world[0]["lora3"]["synced"])
    for name in s2:
        torch.testing.assert_close(s3[name], s2[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_updates(world: dict, reference: tuple) -> None:
    ref_state = reference[0]
    for rank in range(WORLD):
        got = world[rank]["checkpointing"]
        assert got["enabled"], "every block of both engines should be checkpointed"
        full, lora = to_torch(got["full"]), to_torch(got["lora"])
        for name, value in ref_state.items():
            torch.testing.assert_close(full[name], value, atol=1e-6, rtol=0, msg=f"rank {rank} {name}")
        without = to_torch(world[rank]["lora2"]["full"])
        for name, value in without.items():
            torch.testing.assert_close(lora[name], value, atol=1e-6, rtol=0, msg=f"LoRA rank {rank} {name}")
