"""Weight-sync bandwidth: bucketed broadcast of a model against one raw broadcast of a flat tensor.

All variants run on the same gloo group of 1 sender + N receivers, in one run, interleaved over repeats:
(a) `send_weights`/`receive_weights` (buckets, checksums, header) from a sender whose parameters lie back to
back, as the learner's are under ZeRO 0-2 (`LearnerEngine` packs them; ZeRO 1/2 keep them in one flat
buffer), so buckets leave without a copy; (b) the same from an unpacked sender, which copies each bucket
first (the ZeRO-3 / LoRA path, where a gather or merge materialises the weights anyway); (c) one
`broadcast` of a flat tensor of the same byte size (the raw ceiling); (d) one `broadcast` per parameter
(the slow reference). Receivers are packed as RolloutWorkers are. Prints bytes per second and ratios to raw. Run: `.venv/bin/python tests/benchmarks/bench_weight_sync.py`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.config import TinyModelConfig
from common.model import build_tiny_model
from common.weight_sync import create_group, pack_parameters, receive_weights, send_weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broadcast(group: dist.ProcessGroup, tensor: torch.Tensor) -> dist.Work:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    shape = TinyModelConfig(
        d_model=args.d_model, n_layers=args.layers, n_heads=8, n_kv_heads=8, mlp_hidden_size=4 * args.d_model
    )

    def build() -> torch.nn.Module:
        return build_tiny_model(shape, vocab_size=args.vocab, mask_id=args.vocab - 1, eos_id=1, seed=rank)

    unpacked = list(build().named_parameters()) if rank == 0 else []
    packed_model = build()
    pack_parameters(packed_model)
    params = list(packed_model.named_parameters())
    total_bytes = sum(p.numel() * p.element_size() for _, p in params)
    flat = torch.zeros(total_bytes // 4)
    group = create_group("gloo", "127.0.0.1", port, rank, world, generation=0, timeout_s=600)
    bucket = int(args.bucket_mb * 1024**2)
    timings: dict[str, list[float]] = {"bucketed": [], "bucketed_copy": [], "raw": [], "per_param": []}
    for repeat in range(args.repeats + 1):
        for name in timings:
            _broadcast(group, torch.zeros(1)).wait()
            start = time.perf_counter()
            with torch.no_grad():
                if name.startswith("bucketed"):
                    version = 2 * repeat + (name == "bucketed_copy")
                    if rank == 0:
                        send_weights(group, unpacked if name == "bucketed_copy" else params, version + 1, bucket)
                    else:
                        receive_weights(group, params, version, bucket)
                elif name == "raw":
                    _broadcast(group, flat).wait()
                else:
                    for _, p in params:
                        _broadcast(group, p.data).wait()
            if repeat:
                timings[name].append(time.perf_counter() - start)
    if rank == 0:
        out.put((total_bytes, {k: statistics.median(v) for k, v in timings.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--bucket-mb", type=float, default=64.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    world = args.receivers + 1
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    total_bytes, medians = out.get(timeout=1800)
    for p in procs:
        p.join()
    raw = total_bytes / medians["raw"]
    print(f"model {total_bytes / 1e6:.1f} MB, 1 sender -> {args.receivers} receivers, gloo on loopback")
    print(f"{'variant':<15}{'seconds':>10}{'MB/s':>10}{'vs raw':>9}")
    for name in ("raw", "bucketed", "bucketed_copy", "per_param"):
        bw = total_bytes / medians[name]
        print(f"{name:<15}{medians[name]:>10.3f}{bw / 1e6:>10.1f}{bw / raw:>9.2f}")


if __name__ == "__main__":
    main()
