"""Cost of the mQSM network's two hot spots, on the CPU (or a GPU with --device cuda).

1. MutualTransformer with scaled_dot_product_attention vs a naive attention (explicit
   softmax(Q K^T / sqrt(d)) V, which stores the N x N weights) for several token counts: fwd + bwd time
   and peak memory, against the theoretical size of one N x N float32 map.
2. ReconstructionNet fwd + bwd time and peak memory at several widths on a 64x64x32 patch, batch 2,
   to choose the tiny / default plans.

Each measurement runs in a fresh subprocess. CPU peak memory = the process's peak RSS (getrusage)
minus its RSS just before the measured steps (/proc/self/statm); GPU peak = max_memory_allocated.

    python benchmarks/bench_mtrans.py [--device cpu|cuda] [--repeats 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ATTENTION_GRIDS = [8, 12, 16, 20, 24]  # tokens = grid^3
NAIVE_MAX_GRID = 20                    # the naive N x N maps grow past a few GB beyond this on CPU
RECON_CASES = [(16, 6, 32), (32, 6, 32), (32, 3, 32), (16, 3, 8), (64, 6, 32)]  # (width, blocks, skip channels)


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(step, device: str, repeats: int) -> dict:
    import torch

    step()  # warm-up (allocator, kernel selection)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _current_rss_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"time_s": min(times), "peak_mb": max(peak, 0) / 2 ** 20}


def _child_attention(impl: str, grid: int, channels: int, device: str, repeats: int) -> dict:
    import torch

    from mqsm_nnunet.network.mtrans import MutualTransformer

    class NaiveMutualTransformer(MutualTransformer):
        @staticmethod
        def _self_attention(q, k, v):
            weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)  # (B, N, N)
            return weights @ v

    torch.manual_seed(0)
    block = (MutualTransformer if impl == "sdpa" else NaiveMutualTransformer)(channels).to(device)
    f1, f2 = torch.randn(2, 1, channels, grid, grid, grid, device=device, requires_grad=True)

    def step():
        block.zero_grad(set_to_none=True)
        block(f1, f2).square().mean().backward()

    return _measure(step, device, repeats)


def _child_recon(width: int, n_blocks: int, skip_channels: int, device: str, repeats: int) -> dict:
    import torch

    from mqsm_nnunet.network.reconstruction import ReconstructionNet

    torch.manual_seed(0)
    net = ReconstructionNet(width=width, n_blocks=n_blocks, skip_channels=skip_channels).to(device)
    x = torch.randn(2, 1, 64, 64, 32, device=device)

    def step():
        net.zero_grad(set_to_none=True)
        qsm, _ = net(x)
        (qsm - x).abs().mean().backward()

    result = _measure(step, device, repeats)
    result["params"] = sum(p.numel() for p in net.parameters())
    return result


def _run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channels", type=int, default=32, help="channels per stream in the attention bench")
    parser.add_argument("--quick", action="store_true", help="small token counts and widths only")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        kind, *rest = args._child
        if kind == "attention":
            result = _child_attention(rest[0], int(rest[1]), args.channels, args.device, args.repeats)
        else:
            result = _child_recon(int(rest[0]), int(rest[1]), int(rest[2]), args.device, args.repeats)
        print(json.dumps(result))
        return

    common = ["--device", args.device, "--repeats", str(args.repeats), "--channels", str(args.channels)]
    grids = ATTENTION_GRIDS[:3] if args.quick else ATTENTION_GRIDS
    print(f"MutualTransformer fwd+bwd, batch 1, {args.channels} channels per stream, device {args.device}")
    print(f"{'tokens':>7} {'NxN MB':>8} | {'sdpa s':>7} {'sdpa MB':>8} | {'naive s':>8} {'naive MB':>9} | "
          f"{'time x':>6} {'mem x':>6}")
    for grid in grids:
        n = grid ** 3
        sdpa = _run_child(["attention", "sdpa", str(grid)] + common)
        line = f"{n:>7} {4 * n * n / 2 ** 20:>8.1f} | {sdpa['time_s']:>7.3f} {sdpa['peak_mb']:>8.1f} | "
        if grid <= NAIVE_MAX_GRID:
            naive = _run_child(["attention", "naive", str(grid)] + common)
            line += (f"{naive['time_s']:>8.3f} {naive['peak_mb']:>9.1f} | {naive['time_s'] / sdpa['time_s']:>6.2f} "
                     f"{naive['peak_mb'] / max(sdpa['peak_mb'], 1e-3):>6.1f}")
        else:
            line += f"{'skipped':>8} {'':>9} |"
        print(line, flush=True)

    cases = RECON_CASES[:2] if args.quick else RECON_CASES
    print(f"\nReconstructionNet fwd+bwd, patch 64x64x32, batch 2, device {args.device}")
    print(f"{'width':>5} {'blocks':>6} {'skip':>4} {'params':>9} {'time s':>7} {'peak MB':>8}")
    for width, n_blocks, skip in cases:
        r = _run_child(["recon", str(width), str(n_blocks), str(skip)] + common)
        print(f"{width:>5} {n_blocks:>6} {skip:>4} {r['params']:>9} {r['time_s']:>7.2f} {r['peak_mb']:>8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
