"""Probe: the fused attention kernels LibTorch offers (cuDNN, flash, memory-efficient) at the models' attention
shapes on this card, called as ditgen's nn::attention calls them: [B, S, H, D] memory seen as [B, H, S, D].
Variants alternate in every round so that clock changes hit them alike.

Usage (GPU machine): python3 bench/probes/attention_backends.py [rounds]
"""
import statistics
import sys

import torch

from torch_timing import timed

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
dev, dt = "cuda", torch.bfloat16
torch.manual_seed(0)

# name: (B, query tokens, key tokens, heads, head dim)
shapes = {
    "ltx2 video self": (2, 6144, 6144, 32, 128),
    "ltx2 video -> text": (2, 6144, 1024, 32, 128),
    "ltx2 a2v (video q, audio k)": (2, 6144, 126, 32, 64),
    "ltx2 v2a (audio q, video k)": (2, 126, 6144, 32, 64),
    "ltx2 audio self": (2, 126, 126, 32, 64),
    "flux2 joint": (1, 4608, 4608, 48, 128),
    "qwen joint (128 text)": (1, 4224, 4224, 24, 128),
}
aten = torch.ops.aten
kernels = {
    "cudnn": lambda q, k, v: aten._scaled_dot_product_cudnn_attention(q, k, v, None, False, False)[0],
    "flash": lambda q, k, v: aten._scaled_dot_product_flash_attention(q, k, v)[0],
    "efficient": lambda q, k, v: aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0],
}


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
      f"{rounds} rounds, median us per call")
for name, (B, Sq, Sk, H, D) in shapes.items():
    q = torch.randn(B, Sq, H, D, device=dev, dtype=dt).transpose(1, 2)
    k = torch.randn(B, Sk, H, D, device=dev, dtype=dt).transpose(1, 2)
    v = torch.randn(B, Sk, H, D, device=dev, dtype=dt).transpose(1, 2)
    ref = kernels["cudnn"](q, k, v).float()
    times = {n: [] for n in kernels}
    for _ in range(rounds):
        for n, fn in kernels.items():
            times[n].append(timed(lambda: fn(q, k, v), 20))
    flops = 4 * B * H * Sq * Sk * D
    print(f"\n{name}: B {B}, S {Sq}/{Sk}, H {H}, D {D}")
    base = statistics.median(times["cudnn"])
    for n, t in times.items():
        us = statistics.median(t)
        err = (kernels[n](q, k, v).float() - ref).abs().max().item()
        print(f"  {n:10s} {us:9.1f} us  {flops / us * 1e-6:6.0f} TFLOP/s  {us / base:5.3f}  max |diff| {err:.2e}")
