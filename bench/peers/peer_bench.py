#!/usr/bin/env python3
"""Times the diffusers transformer of FLUX.2-dev, Qwen-Image and LTX-2 at ditgen's benchmark workloads.

The peer that ditgen is measured against (issue 18, item 4): the upstream diffusers model class, built at
its real size with random bf16 weights directly on the GPU, called with the exact arguments its pipeline
passes at one denoising step, eager or with its repeated blocks compiled in place
(`ModelMixin.compile_repeated_blocks`, which calls `block.compile()` on every repeated block, as
diffusers' and cache-dit's regional compilation do). Median of --reps steps timed with CUDA events
after --warmup steps. One JSON per run.

    python3 bench/peers/peer_bench.py --model flux2|qwen|qwen_cfg|ltx2 --mode eager|compile \
        --reps 5 --json OUT.json [--tiny]

The diffusers source comes from the bundle `scripts/peers_bundle.sh` writes (.peers/diffusers, commit in
.peers/DIFFUSERS_COMMIT); --diffusers-root or PYTHONPATH can point elsewhere. Only torch is required:
where importing diffusers fails for a missing (or too old) dependency (huggingface_hub, safetensors,
PIL, regex, requests, numpy, packaging, ...), a stub module is put in sys.modules for the duration of
the import and the stubs used are recorded in the JSON. The stubs are removed again once the model
classes are imported, so torch (e.g. torch._dynamo's optional numpy support) never sees them.

Workloads (see WORKLOADS below; --tiny runs the same code path with a few-layer, few-channel config):
  flux2     FLUX.2-dev, 1024x1024: 4096 image + 512 text tokens, guidance embedding, batch 1, one forward.
  qwen      Qwen-Image, 1024x1024, one pass: 4096 image + 128 text tokens, batch 1, no text mask.
  qwen_cfg  Qwen-Image true-CFG step as QwenImagePipeline runs it: two separate forwards (prompt with
            128 tokens, negative prompt " " with 6 tokens, each unmasked), then the CFG combination
            with the per-token norm rescale.
  ltx2      LTX-2 (19B), 768x512, 121 frames at 24 fps: 16x16x24 = 6144 video tokens, 126 audio tokens,
            1024 text tokens on both streams, both CFG branches batched (batch 2), one forward.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIFFUSERS_ROOT = REPO / ".peers"

import torch  # noqa: E402  (the one hard requirement)

# torch's own optional imports (torch._dynamo checks for numpy at import) happen before any stub exists.
for _m in ("torch._dynamo", "torch._inductor", "torch._inductor.compile_fx"):
    try:
        importlib.import_module(_m)
    except Exception:  # an old or CPU-only torch: compile mode will say so
        pass


# ----------------------------------------------------------------------------------------------------
# Stubs for diffusers' import-time dependencies
# ----------------------------------------------------------------------------------------------------

class _Version:
    """A small PEP 440 version (what diffusers asks of packaging.version.Version)."""

    _RE = re.compile(
        r"^\s*v?(?:(\d+)!)?(\d+(?:\.\d+)*)"
        r"(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?"
        r"(?:(?:-(\d+))|(?:[-_.]?(post|rev|r)[-_.]?(\d*)))?"
        r"(?:[-_.]?(dev)[-_.]?(\d*))?"
        r"(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$",
        re.IGNORECASE,
    )
    _PRE = {"a": "a", "alpha": "a", "b": "b", "beta": "b", "c": "rc", "rc": "rc", "pre": "rc", "preview": "rc"}

    def __init__(self, text):
        m = self._RE.match(str(text))
        if not m:
            raise _InvalidVersion(f"Invalid version: {text!r}")
        self.epoch = int(m.group(1) or 0)
        self.release = tuple(int(x) for x in m.group(2).split("."))
        self.pre = (self._PRE[m.group(3).lower()], int(m.group(4) or 0)) if m.group(3) else None
        if m.group(5):
            self.post = int(m.group(5))
        elif m.group(6):
            self.post = int(m.group(7) or 0)
        else:
            self.post = None
        self.dev = int(m.group(9) or 0) if m.group(8) else None
        self.local = m.group(10)
        rel = list(self.release)
        while len(rel) > 1 and rel[-1] == 0:
            rel.pop()
        inf = float("inf")
        if self.pre is None and self.post is None and self.dev is not None:
            pre_key = (-inf, 0)
        elif self.pre is None:
            pre_key = (inf, 0)
        else:
            pre_key = ({"a": 0, "b": 1, "rc": 2}[self.pre[0]], self.pre[1])
        self._key = (self.epoch, tuple(rel), pre_key, -inf if self.post is None else self.post,
                     inf if self.dev is None else self.dev)

    major = property(lambda self: self.release[0])
    minor = property(lambda self: self.release[1] if len(self.release) > 1 else 0)
    micro = property(lambda self: self.release[2] if len(self.release) > 2 else 0)
    is_prerelease = property(lambda self: self.pre is not None or self.dev is not None)
    is_devrelease = property(lambda self: self.dev is not None)
    is_postrelease = property(lambda self: self.post is not None)

    @property
    def base_version(self):
        return (f"{self.epoch}!" if self.epoch else "") + ".".join(str(x) for x in self.release)

    @property
    def public(self):
        s = self.base_version
        if self.pre:
            s += f"{self.pre[0]}{self.pre[1]}"
        if self.post is not None:
            s += f".post{self.post}"
        if self.dev is not None:
            s += f".dev{self.dev}"
        return s

    def __str__(self):
        return self.public + (f"+{self.local}" if self.local else "")

    def __repr__(self):
        return f"<Version('{self}')>"

    def __hash__(self):
        return hash(self._key)

    def _cmp(self, other, op):
        if isinstance(other, str):
            other = _Version(other)
        if not isinstance(other, _Version):
            return NotImplemented
        return op(self._key, other._key)

    __lt__ = lambda s, o: s._cmp(o, lambda a, b: a < b)  # noqa: E731
    __le__ = lambda s, o: s._cmp(o, lambda a, b: a <= b)  # noqa: E731
    __eq__ = lambda s, o: s._cmp(o, lambda a, b: a == b)  # noqa: E731
    __ne__ = lambda s, o: s._cmp(o, lambda a, b: a != b)  # noqa: E731
    __gt__ = lambda s, o: s._cmp(o, lambda a, b: a > b)  # noqa: E731
    __ge__ = lambda s, o: s._cmp(o, lambda a, b: a >= b)  # noqa: E731


class _InvalidVersion(ValueError):
    pass


class _StubMeta(type):
    """Classes standing for any attribute of a stub module: usable as a base class, an exception type,
    in isinstance checks and as a decorator (a lone callable argument is returned unchanged); their
    own attributes are stub classes again (PIL.Image.Resampling.BILINEAR)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _stub_class(f"{cls.__qualname__}.{name}", cls.__module__)
        setattr(cls, name, sub)
        return sub

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return super().__call__(*args, **kwargs)


def _stub_instance_bool(self):
    return False


def _stub_class(qualname, module):
    cls = _StubMeta(qualname.rsplit(".", 1)[-1], (Exception,),
                    {"__bool__": _stub_instance_bool, "__module__": module})
    cls.__qualname__ = qualname
    return cls


class _StubModule(types.ModuleType):
    """A module whose every missing attribute is a stub class; also a package (submodules are stubs)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"
        if full in _STUB_SUBMODULES or full in sys.modules:  # `from packaging import version`
            value = importlib.import_module(full)
        else:
            value = _stub_class(name, self.__name__)
        setattr(self, name, value)
        return value


# Attributes of stub modules that diffusers uses as submodules (every other attribute is a stub class).
_STUB_SUBMODULES = {"packaging.version", "packaging.requirements", "packaging.specifiers", "PIL.Image",
                    "PIL.ImageOps", "huggingface_hub.constants", "huggingface_hub.utils",
                    "huggingface_hub.file_download", "huggingface_hub.errors", "safetensors.torch",
                    "requests.exceptions", "numpy.random", "numpy.linalg"}


def _fill_special(mod):
    """The few stub attributes that diffusers uses as values at import time."""
    name = mod.__name__
    mod.__version__ = "0.0.0"
    if name == "packaging.version":
        mod.Version, mod.parse, mod.InvalidVersion = _Version, _Version, _InvalidVersion
    elif name == "huggingface_hub.constants":
        mod.HF_HOME = os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface"))
        mod.HF_HUB_CACHE = os.path.join(mod.HF_HOME, "hub")
        mod.HUGGINGFACE_HUB_CACHE = mod.HF_HUB_CACHE
        mod.HF_HUB_OFFLINE = True
        mod.HF_HUB_DISABLE_TELEMETRY = True
        mod.ENDPOINT = "https://huggingface.co"
    elif name == "huggingface_hub.utils":
        mod.is_jinja_available = lambda: False
    elif name == "huggingface_hub.file_download":
        mod.REGEX_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a stub module for every module under the stubbed top-level names."""

    def __init__(self):
        self.tops = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.tops:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _StubModule(spec.name)
        mod.__path__ = []
        mod.__file__ = f"<peer_bench stub {spec.name}>"
        return mod

    def exec_module(self, module):
        _fill_special(module)
        parent, _, child = module.__name__.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


class _BlockFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Test aid (--simulate-missing): makes installed packages look absent during the diffusers import
    (find_spec answers, as diffusers' availability checks need, and the import itself fails)."""

    def __init__(self, tops):
        self.tops = set(tops)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.tops:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named '{spec.name}' (peer_bench --simulate-missing)", name=spec.name)

    def exec_module(self, module):  # never reached
        raise ModuleNotFoundError(module.__name__, name=module.__name__)


# diffusers/dependency_versions_check.py asks importlib.metadata for these at import time.
_RUNTIME_CHECKED_DISTS = {"requests": "2.99.0", "filelock": "3.99.0", "numpy": "1.99.0",
                          "importlib_metadata": "8.0.0"}

DIFFUSERS_MODULES = {
    "flux2": ("diffusers.models.transformers.transformer_flux2", "Flux2Transformer2DModel"),
    "qwen": ("diffusers.models.transformers.transformer_qwenimage", "QwenImageTransformer2DModel"),
    "ltx2": ("diffusers.models.transformers.transformer_ltx2", "LTX2VideoTransformer3DModel"),
}
# Modules diffusers may otherwise import lazily during a forward or compile: imported while stubs exist.
_EAGER_EXTRA = ("diffusers.models.attention_dispatch", "diffusers.hooks", "diffusers.models.modeling_outputs",
                "diffusers.utils.peft_utils", "diffusers.utils.torch_utils")


_IMPORT_RECORD = {}


def import_diffusers_class(family, diffusers_root, simulate_missing=(), record=None):
    """Imports the model class, stubbing what is missing. Returns (class, record); `record` (filled in
    place, also when the import fails) says which stubs were used."""
    record = {} if record is None else record
    if _IMPORT_RECORD and "diffusers" in sys.modules:  # imported before in this process (tests)
        record.update(_IMPORT_RECORD)
        mod_name, cls_name = DIFFUSERS_MODULES[family]
        return getattr(importlib.import_module(mod_name), cls_name), record
    record.update(stubs=[], replaced_too_old=[], fake_dist_versions={}, simulated_missing=sorted(simulate_missing),
                  diffusers_file=None, diffusers_version=None, import_errors=[])
    if diffusers_root and str(diffusers_root) not in sys.path and Path(diffusers_root, "diffusers").is_dir():
        sys.path.insert(0, str(diffusers_root))

    stub_finder = _StubFinder()
    block_finder = _BlockFinder(simulate_missing)
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules)
              if k.split(".")[0] in block_finder.tops}
    if simulate_missing:
        sys.meta_path.insert(0, block_finder)
    sys.meta_path.insert(0, stub_finder)  # first: a stub replaces a blocked module too

    real_version = importlib.metadata.version

    meta_fake = {}  # distribution -> fake version, for diffusers' import-time version checks

    def version(dist):
        try:
            if dist in block_finder.tops:
                raise importlib.metadata.PackageNotFoundError(dist)
            return real_version(dist)
        except importlib.metadata.PackageNotFoundError:
            if dist in meta_fake:
                record["fake_dist_versions"][dist] = meta_fake[dist]
                return meta_fake[dist]
            raise

    importlib.metadata.version = version

    def purge_diffusers():
        for k in list(sys.modules):
            if k == "diffusers" or k.startswith("diffusers."):
                del sys.modules[k]

    def add_stub(top, why):
        if not top or top in ("torch", "diffusers") or top.startswith("torch") or top in stub_finder.tops:
            return False
        for k in list(sys.modules):
            if k == top or k.startswith(top + "."):
                del sys.modules[k]
        stub_finder.tops.add(top)
        record["stubs"].append(top)
        if why:
            record["replaced_too_old"].append(f"{top}: {why}")
        return True

    cls = None
    try:
        def fix(exc):
            """Stub what `exc` (or the error that caused it: diffusers' lazy modules wrap import errors
            in a RuntimeError) says is missing. False when it is nothing a stub can fix."""
            seen = set()
            e = exc
            while e is not None and id(e) not in seen:
                seen.add(id(e))
                if isinstance(e, importlib.metadata.PackageNotFoundError):  # (a ModuleNotFoundError too)
                    # diffusers' require_version("tqdm>=4.60"): "The 'tqdm>=4.60' distribution was not found"
                    m = re.search(r"The '([^']+)' distribution", str(e))
                    req = m.group(1) if m else str(e).strip("'\" ")
                    dist = re.match(r"[A-Za-z0-9_.\-]*", req).group(0)
                    if not dist or dist in meta_fake or dist.startswith("torch"):
                        return False
                    pins = [v for op, v in re.findall(r"(==|<=|~=|>=)\s*([0-9][^,\s]*)", req)]
                    meta_fake[dist] = pins[0] if pins else _RUNTIME_CHECKED_DISTS.get(dist, "99999.0.0")
                    return True  # answered with that fake version during the import only
                if isinstance(e, ModuleNotFoundError):
                    return add_stub((e.name or "").split(".")[0], None)
                if isinstance(e, ImportError) and e.name:  # "cannot import name X from Y": Y too old
                    top = e.name.split(".")[0]
                    return top != "diffusers" and add_stub(top, str(e).splitlines()[0])
                e = e.__cause__ or e.__context__
            return False

        mod_name, cls_name = DIFFUSERS_MODULES[family]
        for _attempt in range(40):
            try:
                cls = getattr(importlib.import_module(mod_name), cls_name)
                for extra in _EAGER_EXTRA:  # what a forward or compile may import lazily, while stubs exist
                    importlib.import_module(extra)
                break
            except Exception as e:
                if cls is not None and not fix(e):  # an optional extra that a stub cannot help: go on
                    record["import_errors"].append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    break
                if cls is None and not fix(e):
                    raise
                cls = None
            purge_diffusers()
        if cls is None:
            raise RuntimeError("could not import diffusers after 40 attempts")
        import diffusers

        record["diffusers_file"] = str(Path(diffusers.__file__).parent)
        record["diffusers_version"] = getattr(diffusers, "__version__", None)
        _IMPORT_RECORD.update(record)
    finally:
        importlib.metadata.version = real_version
        for f in (stub_finder, block_finder):
            if f in sys.meta_path:
                sys.meta_path.remove(f)
        # Scope the stubs to the import: later importers (torch included) see the real environment.
        for k in list(sys.modules):
            if k.split(".")[0] in stub_finder.tops and isinstance(sys.modules[k], _StubModule):
                del sys.modules[k]
        sys.modules.update(hidden)
    return cls, record


# ----------------------------------------------------------------------------------------------------
# Models and workloads
# ----------------------------------------------------------------------------------------------------

# Real configs (FLUX.2-dev transformer/config.json; Qwen/Qwen-Image; Lightricks/LTX-2 = LTX-2.0), see
# shared/docs/reference/{flux2,qwen-image,ltx2}.md section 1.1.
CONFIGS = {
    "flux2": dict(patch_size=1, in_channels=128, out_channels=None, num_layers=8, num_single_layers=48,
                  attention_head_dim=128, num_attention_heads=48, joint_attention_dim=15360,
                  timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32),
                  rope_theta=2000, eps=1e-6, guidance_embeds=True),
    "qwen": dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                 axes_dims_rope=(16, 56, 56)),
    "ltx2": dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                 attention_head_dim=128, cross_attention_dim=4096, vae_scale_factors=(8, 32, 32),
                 pos_embed_max_pos=20, base_height=2048, base_width=2048, audio_in_channels=128,
                 audio_out_channels=128, audio_patch_size=1, audio_patch_size_t=1, audio_num_attention_heads=32,
                 audio_attention_head_dim=64, audio_cross_attention_dim=2048, audio_scale_factor=4,
                 audio_pos_embed_max_pos=20, audio_sampling_rate=16000, audio_hop_length=160, num_layers=48,
                 activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads",
                 norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=3840, attention_bias=True,
                 attention_out_bias=True, rope_theta=10000.0, rope_double_precision=True, causal_offset=1,
                 timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000, rope_type="split"),
}
TINY_OVERRIDES = {
    "flux2": dict(in_channels=8, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, axes_dims_rope=(4, 4, 4, 4)),
    "qwen": dict(in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, axes_dims_rope=(4, 6, 6)),
    "ltx2": dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                 audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
                 audio_cross_attention_dim=16, num_layers=2, caption_channels=24),
}
# Workload shapes: real, and the tiny ones used with --tiny.
WORKLOADS = {
    "flux2": dict(height=1024, width=1024, img_grid=(64, 64), txt_len=512, batch=1, guidance=4.0, sigma=0.9),
    "qwen": dict(height=1024, width=1024, img_grid=(64, 64), txt_len=128, batch=1, sigma=0.9),
    "qwen_cfg": dict(height=1024, width=1024, img_grid=(64, 64), txt_len=128, neg_txt_len=6, batch=1,
                     true_cfg_scale=4.0, sigma=0.9),
    "ltx2": dict(height=512, width=768, num_frames=121, fps=24.0, latent=(16, 16, 24), audio_frames=126,
                 txt_len=1024, batch=2, sigma=0.9),
}
TINY_WORKLOADS = {
    "flux2": dict(img_grid=(8, 8), txt_len=16),
    "qwen": dict(img_grid=(8, 8), txt_len=16),
    "qwen_cfg": dict(img_grid=(8, 8), txt_len=16, neg_txt_len=6),
    "ltx2": dict(latent=(2, 4, 4), audio_frames=9, txt_len=16, height=128, width=128, num_frames=9),
}


def family_of(model):
    return "qwen" if model.startswith("qwen") else model


@contextlib.contextmanager
def params_in_dtype(dtype):
    """While a model is constructed, every floating-point parameter is converted to `dtype` as it is
    registered: a real-size model is never materialised in float32 (FLUX.2's 32 B parameters would need
    129 GB). Modules initialise the already converted tensors; non-parameter tensors (RoPE tables) are
    built as the model builds them."""
    original = torch.nn.Module.register_parameter

    def register_parameter(self, name, param):
        if param is not None and param.is_floating_point() and param.dtype != dtype:
            param = torch.nn.Parameter(param.detach().to(dtype), requires_grad=param.requires_grad)
        return original(self, name, param)

    torch.nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def build_model(cls, config, device, dtype, seed, init_std):
    torch.manual_seed(seed)
    device_ctx = torch.device(device) if hasattr(torch.device, "__enter__") else contextlib.nullcontext()
    t0 = time.perf_counter()
    with params_in_dtype(dtype), device_ctx:
        model = cls(**config)
    torch.nn.Module.to(model, device=device, dtype=dtype)  # buffers; anything a constructor left elsewhere
    model.eval().requires_grad_(False)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    with torch.no_grad():  # small random normal matrices; biases and norm weights keep their init
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, init_std, generator=gen)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, n_params, n_bytes, time.perf_counter() - t0


def randn(shape, device, dtype, gen):
    return torch.randn(shape, device=device, dtype=torch.float32, generator=gen).to(dtype)


def make_step(model_name, model, cfg, wl, device, dtype, seed):
    """Returns (step(), forwards per step, workload record): the transformer work of one denoising step,
    with the arguments the diffusers pipeline passes."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 1)
    B = wl["batch"]
    if model_name == "flux2":
        h, w = wl["img_grid"]
        L = wl["txt_len"]
        x = randn((B, h * w, cfg["in_channels"]), device, dtype, gen)
        ctx = randn((B, L, cfg["joint_attention_dim"]), device, dtype, gen)
        # Flux2Pipeline: ids from cartesian_prod(t, h, w, l) (int64), text ids (0, 0, 0, l).
        img_ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
        txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(L))
        img_ids = img_ids.unsqueeze(0).expand(B, -1, -1).to(device)
        txt_ids = txt_ids.unsqueeze(0).expand(B, -1, -1).to(device)
        t = torch.tensor(wl["sigma"] * 1000.0, dtype=torch.float32, device=device)
        timestep = t.expand(B).to(dtype)  # pipeline: t.expand(B).to(latents.dtype), then timestep / 1000
        guidance = torch.full([1], wl["guidance"], device=device, dtype=torch.float32).expand(B)

        def step():
            return model(hidden_states=x, timestep=timestep / 1000, guidance=guidance, encoder_hidden_states=ctx,
                         txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]

        record = dict(image_tokens=h * w, text_tokens=L, batch=B, guidance=wl["guidance"], forwards_per_step=1,
                      call="Flux2Pipeline: timestep=t/1000 (bf16), guidance fp32, img_ids/txt_ids [B,S,4] int64")
        return step, 1, record

    if model_name in ("qwen", "qwen_cfg"):
        h, w = wl["img_grid"]
        x = randn((B, h * w, cfg["in_channels"]), device, dtype, gen)
        ctx = randn((B, wl["txt_len"], cfg["joint_attention_dim"]), device, dtype, gen)
        img_shapes = [[(1, h, w)]] * B  # QwenImagePipeline: [[(1, H/16, W/16)]] * batch
        t = torch.tensor(wl["sigma"] * 1000.0, dtype=torch.float32, device=device)
        timestep = t.expand(B).to(dtype)

        def forward(c):
            # A single prompt gives no mask (an all-ones mask is replaced by None); guidance_embeds=False.
            return model(hidden_states=x, timestep=timestep / 1000, guidance=None, encoder_hidden_states_mask=None,
                         encoder_hidden_states=c, img_shapes=img_shapes, return_dict=False)[0]

        if model_name == "qwen":
            record = dict(image_tokens=h * w, text_tokens=wl["txt_len"], batch=B, forwards_per_step=1,
                          call="QwenImagePipeline, CFG off: one forward, mask None, timestep=t/1000 (bf16)")
            return (lambda: forward(ctx)), 1, record
        neg = randn((B, wl["neg_txt_len"], cfg["joint_attention_dim"]), device, dtype, gen)
        g = wl["true_cfg_scale"]

        def step():
            cond = forward(ctx)
            uncond = forward(neg)
            comb = uncond + g * (cond - uncond)
            cond_norm = torch.norm(cond, dim=-1, keepdim=True)
            noise_norm = torch.norm(comb, dim=-1, keepdim=True)
            return comb * (cond_norm / noise_norm)

        record = dict(image_tokens=h * w, text_tokens=wl["txt_len"], negative_text_tokens=wl["neg_txt_len"],
                      batch=B, true_cfg_scale=g, forwards_per_step=2,
                      call="QwenImagePipeline true CFG: two separate forwards (prompt, then negative prompt, each "
                           "unmasked with its own text length), then comb = neg + s*(cond-neg) rescaled to "
                           "||cond|| per token")
        return step, 2, record

    if model_name == "ltx2":
        F_, H_, W_ = wl["latent"]
        Na, L = wl["audio_frames"], wl["txt_len"]
        x = randn((B, F_ * H_ * W_, cfg["in_channels"]), device, dtype, gen)
        a = randn((B, Na, cfg["audio_in_channels"]), device, dtype, gen)
        ctx_v = randn((B, L, cfg["caption_channels"]), device, dtype, gen)
        ctx_a = randn((B, L, cfg["caption_channels"]), device, dtype, gen)
        # LTX2TextConnectors with learnable registers: the mask it returns is all ones (int64).
        mask = torch.ones((B, L), dtype=torch.int64, device=device)
        # LTX2Pipeline computes the RoPE coordinates once before the loop and repeats them for CFG.
        video_coords = model.rope.prepare_video_coords(1, F_, H_, W_, device, fps=wl["fps"])
        audio_coords = model.audio_rope.prepare_audio_coords(1, Na, device)
        video_coords = video_coords.repeat((B,) + (1,) * (video_coords.ndim - 1))
        audio_coords = audio_coords.repeat((B,) + (1,) * (audio_coords.ndim - 1))
        t = torch.tensor(wl["sigma"] * 1000.0, dtype=torch.float32, device=device)
        timestep = t.expand(B)  # fp32, already scaled by 1000

        def step():
            v, au = model(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=ctx_v,
                          audio_encoder_hidden_states=ctx_a, timestep=timestep, sigma=timestep,
                          encoder_attention_mask=mask, audio_encoder_attention_mask=mask, num_frames=F_, height=H_,
                          width=W_, fps=wl["fps"], audio_num_frames=Na, video_coords=video_coords,
                          audio_coords=audio_coords, isolate_modalities=False, spatio_temporal_guidance_blocks=None,
                          perturbation_mask=None, use_cross_timestep=False, return_dict=False)
            return v.float(), au.float()

        record = dict(video_latent=[F_, H_, W_], video_tokens=F_ * H_ * W_, audio_tokens=Na, text_tokens=L,
                      batch=B, height=wl["height"], width=wl["width"], num_frames=wl["num_frames"], fps=wl["fps"],
                      forwards_per_step=1,
                      call="LTX2Pipeline with CFG: [uncond, cond] batched (batch 2), timestep=sigma*1000 fp32, "
                           "int64 all-ones connector mask on both streams, precomputed coords, "
                           "use_cross_timestep=False (LTX-2.0)")
        return step, 1, record
    raise ValueError(model_name)


# ----------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------

class Timer:
    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def gpu_name(device):
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def read_commit(diffusers_file):
    candidates = []
    if diffusers_file:
        candidates.append(Path(diffusers_file).parent / "DIFFUSERS_COMMIT")
    candidates.append(DEFAULT_DIFFUSERS_ROOT / "DIFFUSERS_COMMIT")
    for c in candidates:
        if c.is_file():
            return c.read_text().split()[0]
    return None


def git_head():
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = REPO / ".git" / head[5:]
            if ref.is_file():
                return ref.read_text().strip()
            packed = REPO / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.is_file() else []:
                if line.endswith(head[5:]):
                    return line.split()[0]
            return None
        return head
    except OSError:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["flux2", "qwen", "qwen_cfg", "ltx2"])
    ap.add_argument("--mode", default="eager", choices=["eager", "compile"])
    ap.add_argument("--reps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 eager, 3 compile)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--tiny", action="store_true", help="a few-layer, few-channel config and small shapes (tests)")
    ap.add_argument("--device", default=None, help="default cuda if available, else cpu")
    ap.add_argument("--diffusers-root", default=os.environ.get("PEERS_DIFFUSERS_ROOT", str(DEFAULT_DIFFUSERS_ROOT)),
                    help="folder holding the diffusers package (default .peers, from scripts/peers_bundle.sh)")
    ap.add_argument("--txt-len", type=int, help="text tokens (default: the workload's)")
    ap.add_argument("--neg-txt-len", type=int, help="qwen_cfg: negative prompt tokens (default 6, as ' ')")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    ap.add_argument("--fullgraph", action="store_true", help="compile the blocks with fullgraph=True")
    ap.add_argument("--dynamic", default="false", choices=["false", "true", "none"],
                    help="torch.compile dynamic= (default false: one specialised graph per shape)")
    ap.add_argument("--init-std", type=float, default=0.02, help="std of the random weight matrices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulate-missing", default="", help=argparse.SUPPRESS)  # tests: comma-separated modules
    args = ap.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    warmup = args.warmup if args.warmup is not None else (3 if args.mode == "compile" else 2)
    fam = family_of(args.model)
    result = {
        "peer": "diffusers", "model": args.model, "mode": args.mode, "tiny": args.tiny, "status": "error",
        "torch": torch.__version__, "cuda": getattr(torch.version, "cuda", None),
        "python": platform.python_version(), "device": str(device), "gpu": None, "host": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ditgen_commit": git_head(), "dtype": "bfloat16", "warmup": warmup, "reps": args.reps,
    }

    def emit():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    try:
        result["gpu"] = gpu_name(device)
        simulate = [m for m in args.simulate_missing.split(",") if m]
        imp = result["import"] = {}
        cls, _ = import_diffusers_class(fam, args.diffusers_root, simulate, imp)
        result["diffusers_commit"] = read_commit(imp["diffusers_file"])
        result["diffusers_version"] = imp["diffusers_version"]
        result["diffusers_path"] = imp["diffusers_file"]
        result["stubs"] = imp["stubs"]
        result["class"] = cls.__name__

        config = dict(CONFIGS[fam])
        wl = dict(WORKLOADS[args.model])
        if args.tiny:
            config.update(TINY_OVERRIDES[fam])
            wl.update(TINY_WORKLOADS[args.model])
        if args.txt_len:
            wl["txt_len"] = args.txt_len
        if args.neg_txt_len and "neg_txt_len" in wl:
            wl["neg_txt_len"] = args.neg_txt_len
        result["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}

        if str(device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        model, n_params, n_bytes, build_s = build_model(cls, config, device, dtype, args.seed, args.init_std)
        result.update(params=n_params, weight_bytes=n_bytes, build_s=round(build_s, 3))

        compile_info = None
        if args.mode == "compile":
            kwargs = {"dynamic": {"false": False, "true": True, "none": None}[args.dynamic]}
            if args.fullgraph:
                kwargs["fullgraph"] = True
            if args.compile_mode:
                kwargs["mode"] = args.compile_mode
            model.compile_repeated_blocks(**kwargs)  # submodule.compile(**kwargs) on every _repeated_blocks class
            compile_info = {"how": "model.compile_repeated_blocks(**kwargs) -> block.compile(**kwargs)",
                            "blocks": list(getattr(model, "_repeated_blocks", [])),
                            "kwargs": {k: v for k, v in kwargs.items()}}
        result["compile"] = compile_info

        step, fwd_per_step, wrec = make_step(args.model, model, config, wl, device, dtype, args.seed)
        result["workload"] = wrec
        result["workload_id"] = {
            "flux2": "flux2_{height}x{width}_t{txt_len}",
            "qwen": "qwen_{height}x{width}_t{txt_len}",
            "qwen_cfg": "qwen_cfg_{height}x{width}_t{txt_len}_n{neg_txt_len}",
            "ltx2": "ltx2_{width}x{height}x{num_frames}_t{txt_len}_cfg2",
        }[args.model].format(**wl) + ("_tiny" if args.tiny else "")
        timer = Timer(device)
        warm_times = []
        with torch.no_grad():
            for _ in range(warmup):
                t0 = time.perf_counter()
                out = step()
                timer.sync()
                warm_times.append(time.perf_counter() - t0)
            if str(device).startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = [timer.time(step) for _ in range(args.reps)]
            out = step()
            timer.sync()
        outs = out if isinstance(out, tuple) else (out,)
        result["output_shapes"] = [list(o.shape) for o in outs]
        result["output_finite"] = all(bool(torch.isfinite(o.float()).all()) for o in outs)
        med = statistics.median(times)
        result.update(
            status="ok", seconds_per_step=med, seconds_per_forward=med / fwd_per_step,
            step_times_s=times, step_min_s=min(times), step_mean_s=statistics.fmean(times),
            warmup_times_s=warm_times,
        )
        if str(device).startswith("cuda"):
            result["peak_allocated_bytes_timed"] = torch.cuda.max_memory_allocated()
            result["peak_reserved_bytes_timed"] = torch.cuda.max_memory_reserved()
            result["allocated_bytes_end"] = torch.cuda.memory_allocated()
        emit()
        gib = result.get("peak_allocated_bytes_timed", 0) / 2**30
        print(f"peer diffusers {args.model} {args.mode}{' tiny' if args.tiny else ''}: "
              f"{med:.4f} s/step ({med / fwd_per_step:.4f} s/forward x{fwd_per_step}), median of {args.reps} "
              f"(min {min(times):.4f}), warm-up {sum(warm_times):.1f} s, peak {gib:.1f} GiB, "
              f"{n_params / 1e9:.2f} B params, {result['gpu']}, torch {torch.__version__}, "
              f"diffusers {result.get('diffusers_commit') or '?'}"
              f"{', stubs ' + ','.join(result['stubs']) if result['stubs'] else ''}", flush=True)
        return 0
    except BaseException as e:  # record the failure (OOM, compile error) in the JSON too
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()[-6000:]
        if isinstance(e, torch.cuda.OutOfMemoryError if hasattr(torch.cuda, "OutOfMemoryError") else MemoryError):
            result["status"] = "oom"
        try:
            if str(device).startswith("cuda"):
                result["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        except Exception:
            pass
        emit()
        print(f"peer diffusers {args.model} {args.mode}: FAILED {result['error']}", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 3 if isinstance(e, Exception) else 130


if __name__ == "__main__":
    sys.exit(main())
