#!/usr/bin/env python3
"""CPU check of peer_bench.py without a GPU: the stub logic and a --tiny forward of every model.

    apt-get install python3-torch          # Debian bookworm: torch 1.13 (CPU), no diffusers deps
    bash scripts/peers_bundle.sh           # .peers/diffusers
    /usr/bin/python3 bench/peers/local_test.py [--simulate-missing numpy,PIL,requests]

diffusers at the bundled commit targets torch >= 2.x; for an older torch (Debian's 1.13) this file first
adds the few torch 2 APIs the three transformers touch (torch.xpu/mps stubs, F.scaled_dot_product_attention,
nn.RMSNorm, ...), written from their documented semantics. With torch >= 2.4 nothing is patched, so on a
GPU machine the same command checks the tiny path for real (add --device cuda --modes eager,compile).
Each run goes through peer_bench.main() exactly as the CLI does and must write status "ok" with a
finite output of the expected shape; `N passed, N failed` is printed last.
"""

import argparse
import json
import math
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree or the bundle

PATCHED = []


def _polyfill_torch():
    """Old torch only: the torch 2 APIs the FLUX.2 / Qwen-Image / LTX-2 transformers use."""
    for dev in ("xpu", "mps", "mtia"):
        mod = getattr(torch, dev, None)
        if mod is None:
            mod = types.ModuleType(f"torch.{dev}")
            setattr(torch, dev, mod)
            PATCHED.append(f"torch.{dev}")
        for fn, val in (("is_available", lambda: False), ("empty_cache", lambda: None),
                        ("device_count", lambda: 0), ("synchronize", lambda *a: None),
                        ("manual_seed", lambda *a: None), ("reset_peak_memory_stats", lambda *a: None),
                        ("max_memory_allocated", lambda *a: 0), ("memory_allocated", lambda *a: 0),
                        ("current_device", lambda: 0)):
            if not hasattr(mod, fn):
                setattr(mod, fn, val)
    if not hasattr(torch, "float8_e4m3fn"):
        for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16",
                     "uint32", "uint64"):
            if not hasattr(torch, name):
                setattr(torch, name, torch.uint8)
        PATCHED.append("torch.float8_* (aliases)")

    # diffusers' LTX-2 attention refuses torch < 2.0 by version string: claim 2.0 (only 2.0-era APIs,
    # polyfilled here, are reached).
    torch.__version__ = "2.0.0+polyfill-" + str(torch.__version__)
    import importlib.metadata
    real_version = importlib.metadata.version
    importlib.metadata.version = lambda d: "2.0.0" if d == "torch" else real_version(d)
    PATCHED.append("torch.__version__ and its metadata version (2.0.0)")

    if not hasattr(F, "scaled_dot_product_attention"):
        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
            scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
            if enable_gqa and key.shape[-3] != query.shape[-3]:
                rep = query.shape[-3] // key.shape[-3]
                key = key.repeat_interleave(rep, dim=-3)
                value = value.repeat_interleave(rep, dim=-3)
            s = (query.float() @ key.float().transpose(-2, -1)) * scale
            if is_causal:
                L, S = s.shape[-2:]
                s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:
                    s = s.masked_fill(~attn_mask, float("-inf"))
                else:
                    s = s + attn_mask.float()
            return (s.softmax(-1) @ value.float()).to(query.dtype)

        F.scaled_dot_product_attention = sdpa
        PATCHED.append("F.scaled_dot_product_attention")

    if not hasattr(torch.nn, "RMSNorm"):
        class RMSNorm(torch.nn.Module):
            def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
                super().__init__()
                self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
                    normalized_shape)
                self.eps = eps
                self.elementwise_affine = elementwise_affine
                if elementwise_affine:
                    self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
                else:
                    self.register_parameter("weight", None)

            def forward(self, x):
                dims = tuple(range(-len(self.normalized_shape), 0))
                eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
                y = x.float() * torch.rsqrt(x.float().pow(2).mean(dims, keepdim=True) + eps)
                y = y.to(x.dtype)
                return y * self.weight if self.weight is not None else y

        torch.nn.RMSNorm = RMSNorm
        PATCHED.append("torch.nn.RMSNorm")

    if not hasattr(torch.nn.Module, "compile"):
        def compile_(self, *args, **kwargs):  # torch < 2.2: no in-place Module.compile
            if hasattr(torch, "compile"):
                self._compiled_call_impl = torch.compile(self._call_impl, *args, **kwargs)
        torch.nn.Module.compile = compile_
        PATCHED.append("torch.nn.Module.compile (no-op)")
    if not hasattr(torch, "compiler"):
        torch.compiler = types.SimpleNamespace(is_compiling=lambda: False, disable=lambda fn=None, **k: (
            fn if fn is not None else (lambda f: f)), is_dynamo_compiling=lambda: False)
        PATCHED.append("torch.compiler")
    # torch 2 submodules diffusers imports at module level (distributed helpers, ...): empty stand-ins.
    import importlib.abc
    import importlib.machinery
    import peer_bench

    class TorchSubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.startswith("torch.") and fullname not in sys.modules:
                parent = fullname.rpartition(".")[0]
                if parent in sys.modules or parent == "torch":
                    for finder in sys.meta_path:
                        if finder is self:
                            continue
                        try:
                            if finder.find_spec(fullname, path, target) is not None:
                                return None  # a real module
                        except Exception:
                            pass
                    PATCHED.append(fullname)
                    return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            mod = peer_bench._StubModule(spec.name)
            mod.__path__ = []
            return mod

        def exec_module(self, module):
            pass

    sys.meta_path.append(TorchSubmoduleFinder())
    import torch.distributed as dist

    def dist_getattr(name):  # torch.distributed.device_mesh and friends
        if name.startswith("__"):
            raise AttributeError(name)
        return importlib.import_module(f"torch.distributed.{name}")

    if not hasattr(dist, "device_mesh"):
        dist.__dict__["__getattr__"] = dist_getattr


OPTIONAL_BACKENDS = ("peft,transformers,accelerate,torchao,bitsandbytes,gguf,optimum,kernels,xformers,flash_attn,"
                     "scipy,sklearn,cv2,librosa,torchsde,sentencepiece,onnxruntime,imageio,matplotlib,pandas,"
                     "torchvision,ftfy,bs4,note_seq,k_diffusion,opencv")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="flux2,qwen,qwen_cfg,ltx2")
    ap.add_argument("--modes", default="eager")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--simulate-missing", default="",
                    help="installed packages to hide from diffusers' import (tests the stubs)")
    args = ap.parse_args()
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 0):
        _polyfill_torch()
    print(f"torch {torch.__version__}; polyfills: {', '.join(PATCHED) or 'none'}")

    import peer_bench

    expected = {"flux2": [[1, 64, 8]], "qwen": [[1, 64, 16]], "qwen_cfg": [[1, 64, 16]],
                "ltx2": [[2, 32, 8], [2, 9, 8]]}
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                out = Path(tmp) / f"{model}_{mode}.json"
                argv = ["--model", model, "--mode", mode, "--tiny", "--reps", "2", "--warmup", "1",
                        "--device", args.device, "--json", str(out)]
                if args.simulate_missing:
                    # Hidden dependencies would leave diffusers' optional backends that need them (peft,
                    # transformers, accelerate, ...) broken on a real machine: hide those too.
                    argv += ["--simulate-missing", args.simulate_missing + "," + OPTIONAL_BACKENDS]
                rc = peer_bench.main(argv)
                d = json.loads(out.read_text())
                ok = (rc == 0 and d["status"] == "ok" and d["output_finite"]
                      and d["output_shapes"] == expected[model])
                print(f"{'PASS' if ok else 'FAIL'} {model} {mode}: status {d['status']}, shapes "
                      f"{d.get('output_shapes')}, stubs {d.get('import', {}).get('stubs')}, fake dist versions "
                      f"{d.get('import', {}).get('fake_dist_versions')} {d.get('error', '')}")
                passed += ok
                failed += not ok
    # The stubs are gone after the import: the real environment is what later importers see.
    leftover = [k for k, v in sys.modules.items()
                if type(v).__name__ == "_StubModule" and not k.startswith("torch")]  # torch.*: polyfills
    if leftover:
        print(f"FAIL stub modules left in sys.modules: {leftover[:8]}")
        failed += 1
    else:
        passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
