"""The `vae` stage's training run (notebooks/02_vae calls it): the VAE recipe of `models.vae_losses` on the
shared loop, resumable under the one resume rule of `stages.common`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from presto_lib.models.vae import VAE, compute_latent_scale, save_vae
from presto_lib.models.vae_losses import build_vae_modules, make_vae_step
from presto_lib.stages.common import resume_or_restart, results_root
from presto_lib.stages.learning_curve import mel_validation, validate_every, write_curve

__all__ = ["RESUMABLE_KEYS", "train_vae"]

# `vae` params that may change between a run and its resumption (the rest must match the checkpoints)
RESUMABLE_KEYS = {"steps", "ckpt_every", "log_every", "num_workers", "threads", "scale_clips", "eval_clips",
                  "stop_after", "out_dir"}


def train_vae(P: dict, manifest: str | os.PathLike, out_dir: str | os.PathLike, restart: bool | None = None,
              **overrides) -> VAE:
    """Train (or resume) the VAE on the manifest's train split; export EMA weights + latent scale to out_dir."""
    from presto_lib.data import ClipDataset
    from presto_lib.train import TrainConfig, train

    V, C = {**P["vae"], **overrides}, P["common"]
    sr, out_dir = int(C["sample_rate"]), Path(out_dir)
    audio = {k: C[k] for k in ("seed", "sample_rate", "clip_seconds", "channels")}
    resume_or_restart(out_dir, {"vae": {k: v for k, v in V.items() if k not in RESUMABLE_KEYS}, "common": audio},
                      restart=restart)
    clip = int(round(C["clip_seconds"] * sr))
    ds = ClipDataset(manifest, "train", sample_rate=sr, clip_samples=clip)
    torch.manual_seed(C["seed"])                      # identical init on every rank and every rerun
    vae, disc = build_vae_modules(V, sr)
    opt = lambda m: torch.optim.AdamW(m.parameters(), lr=V["lr"], betas=tuple(V["betas"]))   # noqa: E731
    decay = lambda s: V["lr_gamma"] ** s                                                      # noqa: E731
    cfg = TrainConfig(run_dir=str(out_dir), max_steps=V["steps"], batch_size=V["batch_size"],
                      ckpt_every=V["ckpt_every"], log_every=V["log_every"], ema_decay=V["ema_decay"],
                      grad_clip={"vae": V["grad_clip_gen"], "disc": V["grad_clip_disc"]}, seed=C["seed"],
                      num_workers=V["num_workers"], desc="vae", stop_after=V.get("stop_after"),
                      validate_every=validate_every(int(V["steps"]), P.get("curves")))
    validate = (mel_validation(manifest, int(P["curves"]["clips"]), sample_rate=sr, clip_samples=clip)
                if cfg.validate_every else None)
    ctx = train(make_vae_step(V, sr), modules={"vae": vae, "disc": disc},
                optimizers={"vae": opt(vae), "disc": opt(disc)}, dataset=ds,
                cfg=cfg, ema=["vae"], lr_schedules={"vae": decay, "disc": decay}, validate=validate)
    if ctx.is_main and validate is not None:
        write_curve(out_dir, results_root(P), "vae")
    final = ctx.ema["vae"].cpu().eval()
    if ctx.is_main and ctx.step >= V["steps"]:
        n = min(len(ds), V["scale_clips"])
        compute_latent_scale(final, (ds[i]["wave"][None] for i in range(n)))
        save_vae(final, out_dir)
    return final
