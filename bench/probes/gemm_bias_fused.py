"""Probe: what a projection GEMM costs with its bias epilogue against without it, and q, k and v as three GEMMs
against one GEMM of the concatenated weights, at the models' shapes on this card (PyTorch's cuBLASLt, as
ditgen's nn::linear calls it). Variants alternate in every round so that clock changes hit them alike.

Usage (GPU machine): python3 bench/probes/gemm_bias_fused.py [rounds]
"""
import statistics
import sys

import torch
import torch.nn.functional as F

from torch_timing import timed

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
dev, dt = "cuda", torch.bfloat16
torch.manual_seed(0)

# name: (M rows, K, [N of each projection fused together])
shapes = {
    "ltx2 video self q/k/v (2 x 6144 tokens)": (12288, 4096, [4096, 4096, 4096]),
    "ltx2 v2a video k/v": (12288, 4096, [2048, 2048]),
    "flux2 image q/k/v (4096 tokens)": (4096, 6144, [6144, 6144, 6144]),
    "qwen image q/k/v (4096 tokens)": (4096, 3072, [3072, 3072, 3072]),
}


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {rounds} rounds, median us per call set")
for name, (M, K, Ns) in shapes.items():
    x = torch.randn(M, K, device=dev, dtype=dt)
    ws = [torch.randn(n, K, device=dev, dtype=dt) * K**-0.5 for n in Ns]
    bs = [torch.randn(n, device=dev, dtype=dt) for n in Ns]
    w_all, b_all = torch.cat(ws), torch.cat(bs)
    variants = {
        "separate, bias epilogue": lambda: [F.linear(x, w, b) for w, b in zip(ws, bs)],
        "separate, no bias": lambda: [torch.mm(x, w.t()) for w in ws],
        "one GEMM, bias epilogue": lambda: F.linear(x, w_all, b_all),
        "one GEMM, no bias": lambda: torch.mm(x, w_all.t()),
    }
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v, fn in variants.items():
            times[v].append(timed(fn, 10))
    flops = 2 * M * K * sum(Ns)
    print(f"\n{name}: M {M}, K {K}, N {'+'.join(map(str, Ns))}")
    base = statistics.median(times["separate, bias epilogue"])
    for v, t in times.items():
        us = statistics.median(t)
        print(f"  {v:26s} {us:9.1f} us  {flops / us * 1e-6:6.0f} TFLOP/s  {us / base:5.3f}")
    del x, ws, bs, w_all, b_all
