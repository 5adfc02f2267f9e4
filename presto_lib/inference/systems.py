"""Base / Presto-S / Presto-LS (and ASE/Presto-L) as reference and fast generators over the same weights.

Used by `benchmarks/bench_inference.py` and the tests: every system is a (reference, fast) pair that takes
(captions, bpms, seeds) and returns audio, so a table compares them under identical conditions. The samplers are
the paper's: the base model with DPM-2S + CFG++ (w = 0.8, A.1) on eq. 9's schedule; Presto-S / Presto-LS with
4-step ping-pong sampling (sec. 3.1) on `presto_s.generator_sigmas`; Presto-LS's generator is a LayerDropModel with
the reduced schedule [12, 8, 8, 0, 0] (sec. 3.4).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic
from presto_lib.distill.presto_s import PrestoSConfig, generator_sigmas
from presto_lib.distill.generator import generator_sampler
from presto_lib.inference.pipeline import FastConfig, FastTextToMusic, FastVAE

__all__ = ["SYSTEMS", "randomize_zero_init", "fast_system", "reference_system"]

SYSTEMS = ("base", "presto_s", "presto_ls", "presto_l")
Generate = Callable[[list[str], list[float], list[int]], Tensor]


@torch.no_grad()
def randomize_zero_init(model: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Give zero-initialised parameters (AdaLN-zero, output layer, budget modules) small random values.

    With them at zero a DiT outputs 0 whatever its inputs, and a fast-vs-reference comparison would prove nothing.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@torch.no_grad()
def scale_output_layer(model: nn.Module, gain: float) -> nn.Module:
    """Multiply every DiT output projection (FinalLayer.linear) by `gain`: random DiTs then shape the latents."""
    for name, mod in model.named_modules():
        if name.endswith("final_layer.linear"):
            mod.weight.mul_(gain)
    return model


def _base_sampling(t2m: TextToMusic, steps: int | None) -> SamplingConfig:
    from dataclasses import replace

    return replace(t2m.sampling, steps=int(steps)) if steps else t2m.sampling


def reference_system(name: str, t2m: TextToMusic, model: nn.Module, *, steps: int | None = None,
                     ps_cfg: PrestoSConfig | None = None, latents: bool = False) -> Generate:
    """The reference generate(captions, bpms, seeds) of a system (library code, unchanged); `latents`: no decode."""
    t2m = copy.copy(t2m)
    t2m.model = model
    if latents:
        t2m.decode = lambda z: z
    if name in ("base", "presto_l"):
        cfg = _base_sampling(t2m, steps)
        return lambda c, b, s: t2m.generate(c, b, s, **{k: getattr(cfg, k) for k in ("steps", "sampler",
                                                                                     "guidance", "w")})
    if name in ("presto_s", "presto_ls"):
        return generator_sampler(t2m, model, ps_cfg or PrestoSConfig(), steps or 4)
    raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")


def fast_system(name: str, t2m: TextToMusic, model: nn.Module, fast: FastConfig | None = None, *,
                steps: int | None = None, ps_cfg: PrestoSConfig | None = None,
                vae_fast: FastVAE | None = None) -> FastTextToMusic:
    """The fast path of the same system: same weights, schedule, guidance and seeds as `reference_system`."""
    if name in ("base", "presto_l"):
        cfg = _base_sampling(t2m, steps)
        return FastTextToMusic.from_reference(t2m, model, sampler=cfg.sampler, sigmas=cfg.sigmas().tolist(),
                                              guidance=cfg.guidance, w=cfg.w, fast=fast, vae_fast=vae_fast,
                                              blocks=cfg.model_kwargs.get("blocks"))
    if name in ("presto_s", "presto_ls"):
        sig = generator_sigmas(ps_cfg or PrestoSConfig(), steps or 4).tolist()
        return FastTextToMusic.from_reference(t2m, model, sampler="pingpong", sigmas=sig, guidance="cond",
                                              fast=fast, vae_fast=vae_fast)
    raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")


def build_models(P: dict[str, Any], text_dim: int, device: str | torch.device, seed: int = 0
                 ) -> tuple[nn.Module, nn.Module, nn.Module, int, int, int]:
    """Random-weight (VAE, base EDMPrecond(DiT), Presto-LS LayerDropModel, latent frames, sr, clip samples)."""
    from presto_lib.diffusion.score_model import build_score_model
    from presto_lib.distill.presto_l import LayerDropModel
    from presto_lib.distill.presto_ls import reduced_layer_config
    from presto_lib.models.vae import VAE, VAEConfig

    torch.manual_seed(seed)
    sr, sec = int(P["common"]["sample_rate"]), float(P["common"]["clip_seconds"])
    with torch.device(device):        # initialise on the device: a paper-size DiT is slow to initialise on a CPU
        vae = VAE(VAEConfig.from_params({**P["vae"], "sample_rate": sr})).eval()
        base = build_score_model(P["base"]["dit"], in_channels=vae.latent_dim, text_dim=text_dim)
    frames = -(-int(sr * sec) // vae.hop_length)
    p = int(P["base"]["dit"].get("patch_size", 1))
    frames = -(-frames // p) * p
    randomize_zero_init(base, seed=seed)
    base = base.to(device).eval()
    ls = randomize_zero_init(LayerDropModel(base, reduced_layer_config()), seed=seed + 1).to(device).eval()
    return vae, base, ls, frames, sr, int(sr * sec)
