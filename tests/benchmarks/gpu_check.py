"""GPU check: the `gpu` tests plus a short throughput benchmark, figures written to a JSON file.

Runs in well under 10 minutes on one GPU:
    python tests/benchmarks/gpu_check.py --output gpu_check.json
Sections: pytest results of tests/integration/test_gpu.py; bf16 sampler tokens/s on a ~100M-parameter
LLaDA-architecture model at generation lengths 128/256; learner (trajectory, timestep) pairs per second,
packed against one pass per timestep.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import SamplerConfig, TinyModelConfig
from common.model import build_tiny_model
from learner.agrpo import agrpo_pairs_loss
from learner.timesteps import sample_timesteps
from rollout.sampler import sample

ROOT = Path(__file__).resolve().parents[2]
SHAPE = TinyModelConfig(
    d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, mlp_hidden_size=2048, max_sequence_length=512
)
VOCAB, MASK, EOS, PAD = 32000, 31999, 31998, 31997


def run_tests() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(ROOT / "tests/integration/test_gpu.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {"returncode": proc.returncode, "summary": tail, **counts}


def bench_sampler(model: torch.nn.Module, gen_length: int, steps: int, batch: int) -> dict:
    cfg = SamplerConfig(gen_length=gen_length, block_length=32, steps=steps, temperature=1.0, remasking="random")
    prompts = [[i % 1000 + 1] * 64 for i in range(batch)]
    gen = torch.Generator(device="cuda").manual_seed(0)
    sample(model, prompts[:2], cfg, MASK, EOS, PAD, gen)
    torch.cuda.synchronize()
    start = time.perf_counter()
    sample(model, prompts, cfg, MASK, EOS, PAD, gen)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"gen_length": gen_length, "steps": steps, "batch": batch, "tokens_per_s": batch * gen_length / seconds}


def bench_learner(model: torch.nn.Module, k: int, rows: int, micro: int) -> dict:
    cfg = SamplerConfig(gen_length=128, block_length=32, steps=64, temperature=1.0, remasking="random")
    gen = torch.Generator(device="cuda").manual_seed(1)
    with torch.no_grad():
        batch = sample(model, [[5] * 64 for _ in range(rows)], cfg, MASK, EOS, PAD, gen)
    last = torch.from_numpy(batch.last_step())
    pairs = sample_timesteps(last, k, "low_discrepancy", "uniform", None, torch.Generator().manual_seed(0))
    adv = torch.randn(rows)
    out = {}
    for name, size in (("packed", micro), ("per_timestep", rows)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        agrpo_pairs_loss(model, batch, adv, *pairs, clip_eps=0.2, micro_batch_size=size, pad_id=PAD)
        torch.cuda.synchronize()
        out[f"{name}_pairs_per_s"] = len(pairs[0]) / (time.perf_counter() - start)
    out["ratio"] = out["packed_pairs_per_s"] / out["per_timestep_pairs_per_s"]
    return {"k": k, "rows": rows, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible")
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    report["tests"] = run_tests()
    model = build_tiny_model(SHAPE, VOCAB, MASK, EOS, PAD).to("cuda", torch.bfloat16).eval()
    report["model_parameters"] = sum(p.numel() for p in model.parameters())
    report["sampler"] = [bench_sampler(model, c, c // 2, 32) for c in (128, 256)]
    model.train()
    report["learner"] = [bench_learner(model, k, rows=16, micro=64) for k in (1, 4, 8)]
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"gpu_check: wrote {args.output}")


if __name__ == "__main__":
    main()
