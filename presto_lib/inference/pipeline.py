"""The fast inference path: text -> latents -> audio with the reference pipeline's maths and timing hooks.

    text encoder (static length) -> FastDenoiser.prepare -> sampler loop on host-float sigmas -> VAE decoder

Same samplers as `presto_lib.diffusion.sampling` (DPM-2S, Euler, ping-pong; CFG, CFG++; paper sec. 2.2, 3.1,
A.1), written on Python-float noise levels so the loop holds no host<->device synchronisation; CFG's conditional
and null passes run as one batched forward (`batch_cfg`). Noise is drawn per sample from its own seed exactly as
`TextToMusic.initial_noise` and the ping-pong samplers do, so for the same weights, prompts and seeds the fast
path reproduces the reference path (tests/test_fast_inference.py states the tolerance). On CUDA the whole
sampling loop can be captured once as a CUDA graph and replayed (static shapes: batch, text length, latent
length), the DiT trunk and the VAE decoder can go through `torch.compile`, and weights can be bf16 copies.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from presto_lib.inference.dit import FastDenoiser, Prepared, resolve_dtype

__all__ = ["FastConfig", "FastSampler", "FastVAE", "FastTextToMusic", "SAMPLERS", "pad_text"]

SAMPLERS = ("dpmpp_2s", "euler", "pingpong")


@dataclass
class FastConfig:
    """Switches of the fast path (each can be turned off to measure what it buys)."""

    dtype: str = "auto"               # "auto" (bf16 on CUDA, fp32 on CPU), "bf16", "fp16", "fp32": weight copies
    compile: bool = False             # torch.compile the DiT and the VAE decoder
    compile_mode: str = "default"     # torch.compile mode ("default", "max-autotune-no-cudagraphs", ...)
    compile_scope: str = "blocks"     # "blocks": one compiled block shared by all (fast to compile); "trunk": the
                                      # whole net per block plan (more fusion, one compile per plan and batch)
    cuda_graphs: bool = True          # capture the sampling loop as one CUDA graph (CUDA only)
    batch_cfg: bool = True            # CFG: conditional and null passes in one batched forward
    attention: str = "auto"           # "auto" (flash-attn varlen if installed, else SDPA), "sdpa", "flash"
    text_length: int = 64             # static number of text tokens (padded / truncated to it); 0: the encoder's
    threads: int = 0                  # CPU: torch.set_num_threads (0: leave as is)

    def __post_init__(self):
        if self.compile and self.compile_mode in ("reduce-overhead", "max-autotune") and self.cuda_graphs:
            raise ValueError(f"compile_mode {self.compile_mode!r} makes its own CUDA graphs: set cuda_graphs=False "
                             "or use 'max-autotune-no-cudagraphs'")
        if self.compile_scope not in ("blocks", "trunk"):
            raise ValueError(f"compile_scope must be 'blocks' or 'trunk', got {self.compile_scope!r}")
        if self.text_length < 0:
            raise ValueError(f"text_length must be >= 0, got {self.text_length}")


def pad_text(emb: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Pad (zeros / False) or truncate encoded text [B, L, D] / [B, L] to a static length."""
    L = emb.shape[1]
    if L >= length:
        return emb[:, :length], mask[:, :length]
    return (torch.cat([emb, emb.new_zeros(emb.shape[0], length - L, emb.shape[2])], 1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], length - L)], 1))


# ---- the sampling loop on host floats -----------------------------------------------------------

class FastSampler:
    """Runs one sampler over a host-float schedule with a FastDenoiser (the maths of `diffusion.sampling`)."""

    def __init__(self, den: FastDenoiser, sampler: str, sigmas: Sequence[float], guidance: str = "cond",
                 w: float = 1.0, batch_cfg: bool = True, blocks: Optional[Sequence[int]] = None, net=None):
        if sampler not in SAMPLERS:
            raise ValueError(f"fast path has no sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if guidance not in ("cfgpp", "cfg", "cond", "uncond"):
            raise ValueError(f"unknown guidance {guidance!r}")
        if guidance == "cfgpp" and not 0.0 <= w <= 1.0:
            raise ValueError(f"CFG++ guidance weight must lie in [0, 1], got {w}")
        self.den, self.sampler, self.guidance, self.w = den, sampler, guidance, float(w)
        self.sigmas = [float(s) for s in sigmas]
        if len(self.sigmas) < 2 or self.sigmas[-1] != 0.0:
            raise ValueError("sigmas must have >= 2 entries and end in 0")
        self.batch_cfg, self.blocks, self.net = batch_cfg, None if blocks is None else tuple(blocks), net

    @property
    def guided(self) -> bool:
        return self.guidance in ("cfgpp", "cfg")

    def nfe(self) -> int:
        """Denoiser evaluations of one run (the paper's NFE; a guided evaluation counts once)."""
        n = len(self.sigmas) - 1
        return 2 * n - 1 if self.sampler == "dpmpp_2s" else n

    def denoise(self, x: Tensor, s: float, preps: list[Prepared]) -> tuple[Tensor, Tensor]:
        """(denoised, renoise) as in `cfgpp_denoiser` / `cfg_denoiser`; a plain model returns (mu, mu)."""
        f = lambda xx, p: self.den(xx, s, p, self.blocks, self.net)
        if not self.guided:
            mu = f(x, preps[0])
            return mu, mu
        if len(preps) == 1:                                    # batched: [cond; null] in one forward
            mu_c, mu_u = f(torch.cat([x, x]), preps[0]).chunk(2)
        else:                                                  # two passes
            mu_c, mu_u = f(x, preps[0]), f(x, preps[1])
        den = mu_u + self.w * (mu_c - mu_u)
        return (den, mu_u) if self.guidance == "cfgpp" else (den, den)

    def run(self, x: Tensor, preps: list[Prepared], noises: Optional[Tensor] = None) -> Tensor:
        """x_N [B, C, T] (fp32, already scaled by sigma_max) -> x_0; `noises` [steps - 1, B, C, T] for ping-pong."""
        sig = self.sigmas
        for i in range(len(sig) - 1):
            s, s_next = sig[i], sig[i + 1]
            den, ren = self.denoise(x, s, preps)
            shifted = x if ren is den else x + (den - ren)    # the CFG++ point mu_w + s eps_u
            if self.sampler == "pingpong":                     # x' = mu + s' z (sec. 3.1)
                x = den if s_next == 0 else den + s_next * noises[i]
            elif self.sampler == "euler" or s_next == 0:       # Euler (also DPM-2S's last step)
                x = shifted + (x - ren) / s * (s_next - s)
            else:                                              # DPM-Solver++(2S), r = 1/2, data prediction
                h = math.log(s) - math.log(s_next)
                s_mid = math.exp(-(-math.log(s) + h / 2))
                x_2 = (s_mid / s) * shifted - math.expm1(-h / 2) * den
                den_2, ren_2 = self.denoise(x_2, s_mid, preps)
                sh_2 = x if ren_2 is den_2 else x + (den_2 - ren_2)
                x = (s_next / s) * sh_2 - math.expm1(-h) * den_2
        return x


# ---- VAE decoder ---------------------------------------------------------------------------------

def _strip_weight_norm(m: nn.Module) -> None:
    """Bake weight-norm parametrisations of a *copied* module into plain weights (no per-call re-normalisation).

    `parametrize.remove_parametrizations` edits the dynamically made class, which a deepcopy shares with the
    original; here only the instance is changed.
    """
    from torch.nn.utils import parametrize

    for mod in list(m.modules()):
        if parametrize.is_parametrized(mod):
            baked = {k: getattr(mod, k).detach().clone() for k in mod.parametrizations.keys()}
            del mod._modules["parametrizations"]
            mod.__class__ = type(mod).__bases__[0]
            for k, t in baked.items():
                mod.register_parameter(k, nn.Parameter(t, requires_grad=False))


class FastVAE(nn.Module):
    """The VAE decoder (or a LatentCodec's) as a weight-norm-free copy in `dtype`, optionally compiled."""

    def __init__(self, vae: nn.Module, dtype: torch.dtype, latent_scale: float = 1.0, compile: bool = False,
                 compile_mode: str = "default"):
        super().__init__()
        self.norm = getattr(vae, "norm", None) if hasattr(vae, "vae") else None   # LatentCodec
        inner = vae.vae if self.norm is not None else vae
        self.vae = copy.deepcopy(inner).eval().requires_grad_(False)
        _strip_weight_norm(self.vae)
        self.vae.to(dtype)
        self.dtype, self.latent_scale = dtype, float(latent_scale)
        self._dec = torch.compile(self.vae.decode, mode=compile_mode, dynamic=False) if compile else self.vae.decode

    @torch.no_grad()
    def forward(self, z: Tensor) -> Tensor:
        z = z.float() / self.latent_scale
        if self.norm is not None:
            z = self.norm.denormalize(z)
        return self._dec(z.to(self.dtype)).float()


def capture_cuda_graph(fn: Callable[..., Tensor], static: list[Tensor]) -> tuple[Callable[[], None], Tensor]:
    """(replay, output buffer) of fn(*static) captured as one CUDA graph, after two warm-up runs on a side stream."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):          # warm-up: lazy inits, cuBLAS workspaces, torch.compile
            fn(*static)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)
    return graph.replay, out


# ---- the pipeline ----------------------------------------------------------------------------------

class FastTextToMusic:
    """Captions + BPMs + seeds -> audio through the fast path, with per-stage wall times (`last_times`)."""

    def __init__(self, model: nn.Module, vae: nn.Module, text_encoder: Any, *, latent_shape: tuple[int, int],
                 sample_rate: int, clip_samples: int, sampler: str, sigmas: Sequence[float], guidance: str = "cond",
                 w: float = 1.0, latent_scale: float = 1.0, device: str | torch.device = "cpu",
                 fast: FastConfig | None = None, blocks: Optional[Sequence[int]] = None, vae_fast: FastVAE | None = None):
        self.fast = fast or FastConfig()
        self.device = torch.device(device)
        if self.fast.threads and self.device.type == "cpu":
            torch.set_num_threads(int(self.fast.threads))
        self.dtype = resolve_dtype(self.fast.dtype, self.device)
        self.den = FastDenoiser(model, self.dtype, self.fast.attention).to(self.device)
        net = None
        if self.fast.compile:     # one graph per (block plan, batch) and per system: raise dynamo's limit
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(getattr(cfg, "recompile_limit", 8), 64)
            if self.fast.compile_scope == "trunk":
                net = torch.compile(self.den.net, mode=self.fast.compile_mode, dynamic=False)
            else:
                self.den.compile_blocks(self.fast.compile_mode)
        self.sampler = FastSampler(self.den, sampler, sigmas, guidance, w, self.fast.batch_cfg, blocks, net)
        self.vae = vae_fast or FastVAE(vae, self.dtype, latent_scale, self.fast.compile, self.fast.compile_mode)
        self.vae.to(self.device)
        self.text_encoder = text_encoder
        self.latent_shape = (int(latent_shape[0]), int(latent_shape[1]))
        self.sample_rate, self.clip_samples = int(sample_rate), int(clip_samples)
        self.use_graphs = self.fast.cuda_graphs and self.device.type == "cuda"
        self._graphs: dict = {}
        self.last_times: dict[str, float] = {}

    @classmethod
    def from_reference(cls, t2m: Any, model: nn.Module, *, sampler: str, sigmas: Sequence[float],
                       guidance: str = "cond", w: float = 1.0, fast: FastConfig | None = None,
                       blocks: Optional[Sequence[int]] = None, vae_fast: FastVAE | None = None) -> "FastTextToMusic":
        """The fast path of a `TextToMusic` (its VAE, text encoder, sizes) for `model` and a schedule."""
        return cls(model, t2m.vae, t2m.text_encoder, latent_shape=t2m.latent_shape, sample_rate=t2m.sample_rate,
                   clip_samples=t2m.clip_samples, sampler=sampler, sigmas=sigmas, guidance=guidance, w=w,
                   latent_scale=t2m.latent_scale, device=t2m.device, fast=fast, blocks=blocks, vae_fast=vae_fast)

    @property
    def seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    # ---- stages ----

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str], bpms: Sequence[float] | Tensor) -> dict[str, Tensor]:
        """Text encoder (static length) -> host mask + device text/BPM, with the null condition appended for CFG."""
        emb, mask = self.text_encoder.encode(list(captions))
        emb, mask = emb.float().cpu(), mask.bool().cpu()
        if self.fast.text_length:
            emb, mask = pad_text(emb, mask, self.fast.text_length)
        bpm = torch.as_tensor(bpms, dtype=torch.float32).reshape(-1)
        if len(captions) != bpm.shape[0]:
            raise ValueError(f"{len(captions)} captions but {bpm.shape[0]} BPMs")
        if self.sampler.guidance == "uncond":
            emb, mask, bpm = torch.zeros_like(emb), torch.zeros_like(mask), torch.zeros_like(bpm)
        elif self.sampler.guided:                                  # [cond; null] (CONTRIBUTING's null condition)
            emb = torch.cat([emb, torch.zeros_like(emb)])
            mask, bpm = torch.cat([mask, torch.zeros_like(mask)]), torch.cat([bpm, torch.zeros_like(bpm)])
        return {"text": emb.to(self.device), "mask": mask, "bpm": bpm.to(self.device)}

    def noises(self, seeds: Sequence[int]) -> tuple[Tensor, Optional[Tensor]]:
        """Unit initial noise [B, C, T] per seed and the ping-pong re-noising draws [steps - 1, B, C, T] (seed + 1)."""
        x = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds])
        n = None
        if self.sampler.sampler == "pingpong" and len(self.sampler.sigmas) > 2:
            gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
            n = torch.stack([torch.stack([torch.randn(self.latent_shape, generator=g) for g in gens])
                             for _ in range(len(self.sampler.sigmas) - 2)])
        return x, n

    @property
    def num_tokens(self) -> int:
        return self.latent_shape[1] // self.den.dit.cfg.patch_size

    def _halves(self, cond: dict[str, Tensor]) -> list[slice]:
        """One slice (batched CFG, or no CFG) or the [cond] and [null] halves (two-pass CFG)."""
        n = cond["bpm"].shape[0]
        if not self.sampler.guided or self.fast.batch_cfg:
            return [slice(0, n)]
        return [slice(0, n // 2), slice(n // 2, n)]

    def _plans(self, cond: dict[str, Tensor]) -> list[tuple]:
        """Attention plans from the host mask (outside any CUDA graph: they may copy host -> device)."""
        return [self.den.attention_plan(cond["mask"][h], self.num_tokens) for h in self._halves(cond)]

    def _loop(self, cond: dict[str, Tensor], x: Tensor, noises: Optional[Tensor], plans: list[tuple]) -> Tensor:
        preps = [self.den.prepare(cond["text"][h], cond["bpm"][h], pl, self.num_tokens)
                 for h, pl in zip(self._halves(cond), plans)]
        return self.sampler.run(x * self.sampler.sigmas[0], preps, noises)

    @torch.no_grad()
    def sample_latents(self, cond: dict[str, Tensor], x: Tensor, noises: Optional[Tensor]) -> Tensor:
        """The sampling loop (replayed from a CUDA graph when enabled) -> latents [B, C, T] fp32."""
        x = x.to(self.device)
        noises = None if noises is None else noises.to(self.device)
        plans = self._plans(cond)
        if not self.use_graphs:
            return self._loop(cond, x, noises, plans)
        # a graph bakes in the shapes and the flash packing (or whether a mask is needed): one graph per such key
        sig = tuple(cond["mask"].reshape(-1).tolist()) if self.den.use_flash(self.device) else \
            tuple(pl[0] is None for pl in plans)
        masks = [pl[0] for pl in plans if pl[0] is not None]       # SDPA masks: static inputs like the rest
        extra = ([] if noises is None else [noises]) + masks

        def loop(text: Tensor, bpm: Tensor, x0: Tensor, *rest: Tensor) -> Tensor:
            rest = list(rest)
            nz = rest.pop(0) if noises is not None else None
            pls = [(rest.pop(0) if pl[0] is not None else None, pl[1]) for pl in plans]
            return self._loop({"text": text, "bpm": bpm}, x0, nz, pls)
        return self._graphed(("loop", x.shape[0], cond["text"].shape[1], sig), loop, cond["text"], cond["bpm"], x,
                             *extra, keep=plans)

    def _graphed(self, key: tuple, fn, *inputs: Tensor, keep: Any = None) -> Tensor:
        """fn(*inputs) replayed from a CUDA graph captured on the first call with these shapes (key).

        `keep`: device tensors the graph reads besides its inputs (e.g. flash-attn packing), kept alive with it.
        """
        g = self._graphs.get(key)
        if g is None:
            static = [t.clone() for t in inputs]
            replay, out = capture_cuda_graph(fn, static)
            g = self._graphs[key] = {"replay": replay, "in": static, "out": out, "keep": keep}
        for buf, t in zip(g["in"], inputs):
            buf.copy_(t)
        g["replay"]()
        return g["out"].clone()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latents -> waves [B, 1, clip_samples] (fp32); a CUDA graph per batch size when graphs are on."""
        wav = self._graphed(("decode", *z.shape), self.vae, z) if self.use_graphs else self.vae(z)
        if wav.ndim == 2:
            wav = wav[:, None]
        n = wav.shape[-1]
        if n < self.clip_samples:
            wav = torch.nn.functional.pad(wav, (0, self.clip_samples - n))
        return wav[..., :self.clip_samples]

    @torch.no_grad()
    def latents(self, captions: Sequence[str], bpms: Sequence[float] | Tensor, seeds: Sequence[int]) -> Tensor:
        """Text encoding + sampling only: latents [B, C, T] (cache units) for the prompts."""
        return self.sample_latents(self.encode_text(captions, bpms), *self.noises(seeds))

    def _tick(self, t0: float, name: str, timed: bool) -> float:
        if timed:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t = time.perf_counter()
            self.last_times[name] = t - t0
            return t
        return t0

    @torch.no_grad()
    def generate(self, captions: Sequence[str], bpms: Sequence[float] | Tensor,
                 seeds: Sequence[int] | None = None, timed: bool = False) -> Tensor:
        """Captions + BPMs -> audio [B, 1, clip_samples]; with `timed`, stage times go to `last_times` (s)."""
        seeds = list(range(len(captions))) if seeds is None else list(seeds)
        if len(seeds) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
        t = time.perf_counter()
        cond = self.encode_text(captions, bpms)
        t = self._tick(t, "text_s", timed)
        z = self.sample_latents(cond, *self.noises(seeds))
        t = self._tick(t, "generation_s", timed)
        wav = self.decode(z)
        self._tick(t, "decode_s", timed)
        return wav
