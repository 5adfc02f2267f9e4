"""A distilled generator: building Presto-S from the base model, its training-loop step, loading and sampling.

The one owner of sampling a distilled generator with ping-pong (Algorithm 2 of the paper's appendix / sec. 3.2):
per-sample seeded initial noise and re-noising, and a discrete generator's levels snapped to its trained set.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import Tensor

from presto_lib.diffusion.sampling import sample_pingpong
from presto_lib.distill.discriminator import make_head
from presto_lib.distill.presto_s import FakeScore, PrestoS, PrestoSConfig, generator_sigmas, init_from_base

__all__ = ["build_presto_s", "PrestoSStep", "load_generator", "schedule", "generator_sampler"]


# ---- building and training ------------------------------------------------------------------------

def build_presto_s(base_dir: str | os.PathLike, cfg: PrestoSConfig, head: dict[str, Any] | None = None,
                   device: str | torch.device = "cpu") -> tuple[PrestoS, dict[str, Any]]:
    """(PrestoS, base config): the base model is mu_real; G and mu_psi are fresh modules holding its weights.

    D_psi is `cfg.disc_head`'s head (`discriminator.make_head`) with the `head` options (feature_block, n_down,
    channels)."""
    from presto_lib.diffusion.score_model import build_score_model, load_score_model
    from presto_lib.models.dit import DiTConfig

    real, base_cfg = load_score_model(base_dir, device)
    dit = DiTConfig.from_dict(base_cfg["dit"])
    make = lambda: build_score_model(dit, sigma_data=base_cfg["sigma_data"])   # noqa: E731
    state = real.state_dict()
    h = dict(head or {})
    fb = int(h.pop("feature_block", -1))
    head_mod = make_head(cfg.disc_head, dit.hidden_size, channels=h.pop("channels", None),
                         n_down=int(h.pop("n_down", 2)))       # sec. 3.2.3: Presto-S's head or DMD2's
    if h:
        raise ValueError(f"unknown discriminator head options {sorted(h)}")
    fake = FakeScore(init_from_base(make, state), head_mod, fb)
    return PrestoS(init_from_base(make, state).to(device), fake.to(device), real, cfg), base_cfg


class PrestoSStep:
    """`step_fn(ctx, batch, step)` of `presto_lib.train.train`: one Algorithm 1 iteration per loop step.

    Each step returns the metrics of its own turn only (generator-turn metrics on one step in fake_updates + 1,
    line 4); the loop averages each metric over the steps that returned it. `crop_frames` > 0 trains on one
    random window of that many latent frames per batch (the DiT is length-agnostic; a cheaper CPU step).
    """

    def __init__(self, ps: PrestoS, crop_frames: int = 0):
        self.ps, self.crop = ps, int(crop_frames)

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, float]:
        from presto_lib.diffusion.score_model import batch_condition

        x = batch["latents"].to(ctx.device).float()
        if 0 < self.crop < x.shape[-1]:
            t0 = int(torch.randint(x.shape[-1] - self.crop + 1, ()))
            x = x[..., t0:t0 + self.crop]
        cond = batch_condition(batch, ctx.device)
        return self.ps.step(x, cond, step, ctx.backward_and_step, players=ctx.modules)


def load_generator(path_dir: str | os.PathLike, device: str = "cpu"):
    """A saved distilled generator (Presto-S: a score model; Presto-LS: a layer-dropping one): (model, config)."""
    from presto_lib.checkpoint import load_checkpoint
    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.distill.presto_l import load_layer_drop_model

    _, cfg = load_checkpoint(path_dir, "cpu")
    return load_layer_drop_model(path_dir, device) if "presto_l" in cfg else load_score_model(path_dir, device)


# ---- sampling into the evaluation layout ------------------------------------------------------------

schedule = generator_sigmas       # the ping-pong schedule of `steps` steps (discrete generators snapped)


def generator_sampler(t2m: Any, G: Callable, cfg: PrestoSConfig, steps: int,
                      rho: float | None = None) -> Callable[[list[str], list[float], list[int]], Tensor]:
    """generate(captions, bpms, seeds) -> audio with G in `steps` ping-pong steps (no CFG: it is distilled in).

    Initial noise and every re-noising draw come from each sample's own seed (as `TextToMusic` does), so two
    generators given the same seeds and prompts start from the same latent code (Fig. 11).
    """
    def generate(captions: list[str], bpms: list[float], seeds: list[int]) -> Tensor:
        cond, _ = t2m.conditions(captions, bpms)
        sig = schedule(cfg, steps, rho).to(t2m.device)
        x = t2m.initial_noise(seeds, float(sig[0]))
        gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        noise = lambda s, s_next: torch.stack([torch.randn(t2m.latent_shape, generator=g) for g in gens]).to(x)  # noqa: E731
        with torch.no_grad():
            z = sample_pingpong(lambda xx, s: G(xx, s, cond), x, sig, noise_sampler=noise, disable=True)
        return t2m.decode(z)
    return generate
