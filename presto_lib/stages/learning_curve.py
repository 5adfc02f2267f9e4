"""Learning curves: a validation metric on a fixed validation set, logged during training (issue: budgets that
converge). The shared loop calls `validate(ctx)` every `TrainConfig.validate_every` steps (`presto_lib.train`) and
writes <run_dir>/validation.csv; `write_curve` copies it to <results>/plots/<model>_learning_curve.csv, a dvc plot.

- score models (base, Presto-L variants): the EDM denoising loss (eq. 3, `diffusion.edm.dsm_loss`) of the EMA
  weights on the first `curves.clips` clips of the latent cache's valid split, at a fixed grid of noise levels with
  fixed noise (so successive points differ only through the weights; a perfect denoiser of N(m, sigma_data^2)
  data scores 1);
- few-step generators (Presto-S runs, Presto-LS): the MMD (x1000, RBF, median bandwidth) between the generator's
  `steps`-step ping-pong samples of the valid clips' conditions (fixed noise) and the valid latents, on per-channel
  time mean and std: a latent-space proxy of FAD/MMD that needs no VAE decode or audio embedding;
- the VAE: the multi-scale mel distance (`models.vae_losses.multiscale_mel_loss`) of the EMA VAE's posterior-mean
  reconstructions of the first `curves.clips` valid clips (the ceiling proxy: what the decoder loses).
Params `curves`: `points` (validations per run, 0 = off) and `clips`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["VAL_SIGMAS", "curve_path", "validate_every", "dsm_validation", "mel_validation", "generator_validation",
           "write_curve"]

VAL_SIGMAS = tuple(float(s) for s in np.geomspace(0.02, 20.0, 6))   # inside EDM's training range (log-normal)


def curve_path(results: str | os.PathLike, model: str) -> Path:
    """<results>/plots/<model>_learning_curve.csv."""
    return Path(results) / "plots" / f"{model}_learning_curve.csv"


def validate_every(max_steps: int, curves: dict[str, Any] | None) -> int:
    """Steps between validations for `curves.points` points over the run (0 = no curve)."""
    points = int((curves or {}).get("points", 0) or 0)
    return max(1, int(max_steps) // points) if points > 0 and max_steps > 0 else 0


def _model(ctx: Any, name: str) -> torch.nn.Module:
    """The EMA copy of a module when it has one (what is exported), else the raw module, in eval mode."""
    m = ctx.ema.get(name)
    return (m if m is not None else ctx.raw[name]).eval()


def dsm_validation(latents_dir: str | os.PathLike, clips: int, *, sigma_data: float, module: str = "score",
                   sigmas: tuple[float, ...] = VAL_SIGMAS, seed: int = 0, split: str = "valid"
                   ) -> Callable[[Any], dict[str, float]]:
    """`validate(ctx)` -> {"val_dsm": mean denoising loss over the fixed clips x noise levels x noise}."""
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.diffusion.edm import dsm_loss
    from presto_lib.diffusion.score_model import batch_condition

    ds = LatentDataset(latents_dir, split)
    batch = collate_latents([ds[i] for i in range(min(int(clips), len(ds)))])
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(batch["latents"].shape, generator=g) for _ in sigmas]

    def validate(ctx: Any) -> dict[str, float]:
        model, dev = _model(ctx, module), ctx.device
        x0, cond = batch["latents"].to(dev).float(), batch_condition(batch, dev)
        losses = [float(dsm_loss(model, x0, cond, torch.full((len(x0),), s, device=dev), noise=n.to(dev),
                                 sigma_data=sigma_data)) for s, n in zip(sigmas, noise)]
        return {"val_dsm": float(np.mean(losses)), **{f"val_dsm_sigma_{s:.3g}": v for s, v in zip(sigmas, losses)}}
    return validate


def mel_validation(manifest: str | os.PathLike, clips: int, *, sample_rate: int, clip_samples: int,
                   module: str = "vae", split: str = "valid") -> Callable[[Any], dict[str, float]]:
    """`validate(ctx)` -> {"val_mel": multi-scale mel distance of posterior-mean reconstructions of fixed clips}."""
    from presto_lib.data import ClipDataset
    from presto_lib.models.vae_losses import multiscale_mel_loss

    ds = ClipDataset(manifest, split, sample_rate=sample_rate, clip_samples=clip_samples)
    wav = torch.stack([ds[i]["wave"] for i in range(min(int(clips), len(ds)))])       # [B, 1, T]

    def validate(ctx: Any) -> dict[str, float]:
        vae = _model(ctx, module)
        x = wav.to(ctx.device)
        recon = vae.decode(vae.encode(x)[0])[..., :x.shape[-1]]
        return {"val_mel": float(multiscale_mel_loss(recon, x, sample_rate))}
    return validate


def _latent_features(z: torch.Tensor) -> np.ndarray:
    """[B, 2C]: per-channel time mean and std of latents [B, C, T]."""
    z = z.detach().float().cpu()
    return torch.cat([z.mean(-1), z.std(-1)], 1).numpy()


def generator_validation(latents_dir: str | os.PathLike, clips: int, *, cfg: Any, steps: int, seed: int = 0,
                         module: str = "generator", split: str = "valid") -> Callable[[Any], dict[str, float]]:
    """`validate(ctx)` -> {"val_latent_mmd": MMD of `steps`-step generator samples vs the valid latents}."""
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.diffusion.sampling import sample_pingpong
    from presto_lib.diffusion.score_model import batch_condition
    from presto_lib.distill.generator import schedule
    from presto_lib.eval.metrics import median_bandwidth, mmd

    ds = LatentDataset(latents_dir, split)
    batch = collate_latents([ds[i] for i in range(min(int(clips), len(ds)))])
    ref = _latent_features(batch["latents"])
    bandwidth = median_bandwidth(ref)
    sig = schedule(cfg, int(steps))
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(batch["latents"].shape, generator=g) for _ in range(len(sig))]

    def validate(ctx: Any) -> dict[str, float]:
        G, dev = _model(ctx, module), ctx.device
        cond, s = batch_condition(batch, dev), sig.to(dev)
        draws = iter(noise[1:])
        z = sample_pingpong(lambda x, sigma: G(x, sigma, cond), noise[0].to(dev) * s[0], s,
                            noise_sampler=lambda a, b: next(draws).to(dev), disable=True)
        return {"val_latent_mmd": float(mmd(_latent_features(z), ref, sigma=bandwidth))}
    return validate


def write_curve(run_dir: str | os.PathLike, results: str | os.PathLike, model: str) -> Path | None:
    """Copy <run_dir>/validation.csv to the model's learning-curve plot file (None when no curve was logged)."""
    src = Path(run_dir) / "validation.csv"
    if not src.is_file():
        return None
    dst = curve_path(results, model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".csv.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return dst
