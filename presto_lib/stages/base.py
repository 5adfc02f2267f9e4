"""The base model stages: train the score model on the latent cache (notebooks/03_base calls `train_base`, or
`torchrun ... -m presto_lib.stages.base` for the paper profile), and the base row's sampler.

    python -m presto_lib.stages.base [--restart]       # one process or torchrun: data/latents -> data/base
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from presto_lib.diffusion.pipeline import SamplingConfig
from presto_lib.diffusion.score_model import DSMStep, build_score_model, save_score_model
from presto_lib.stages.common import resume_or_restart, results_root, start
from presto_lib.stages.learning_curve import dsm_validation, validate_every, write_curve

__all__ = ["TRAIN_KEYS", "train_base", "sampling_config", "main"]

# `base` params a run depends on; the others (steps, logging, sampling, evaluation) may change on resume
TRAIN_KEYS = ("dit", "cond_dropout", "tempo_free_p", "lr", "betas", "warmup_steps", "batch_size", "grad_clip", "ema_decay",
              "sample_posterior")


def sampling_config(P: dict[str, Any]) -> SamplingConfig:
    """The base row's sampler (A.1: DPM-2S + CFG++ w = 0.8) and eq. 9's sigma range, from the params."""
    b, e = P["base"], P["edm"]
    return SamplingConfig(sampler=b["sampler"], guidance=b["guidance"], w=float(b["cfg_weight"]),
                          steps=int(b["sample_steps"]),
                          **{k: float(e[k]) for k in ("sigma_min", "sigma_max", "rho") if k in e})


def _export_extra(meta: dict[str, Any], steps: int) -> dict[str, Any]:
    """What the pipeline needs beside the weights: latent/audio sizes and the text encoder, from the cache."""
    keys = ("latent_frames", "latent_scale", "latent_norm", "sample_rate", "clip_samples", "text_encoder",
            "text_length")
    return {**{k: meta[k] for k in keys if k in meta}, "train_steps": steps}


def train_base(P: dict[str, Any], latents_dir: str | os.PathLike = "data/latents",
               out_dir: str | os.PathLike = "data/base", resume: bool = True, restart: bool | None = None) -> Any:
    """Train the base model on the latent cache with `presto_lib.train` and export its EMA to out_dir/model.

    Reads params groups `common` (seed), `edm` (sigma_data, P_mean, P_std) and `base` (DiT size, optimiser,
    schedule). Resumable: a rerun continues from out_dir/run/checkpoints if its params are unchanged
    (`stages.common.resume_or_restart`). Returns the loop's Context.
    """
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, setup_distributed, train

    base, edm = P["base"], P["edm"]
    torch.manual_seed(P["common"]["seed"])
    ds = LatentDataset(latents_dir, "train", sample_posterior=bool(base["sample_posterior"]))
    run_cfg = {"base": {k: base.get(k) for k in TRAIN_KEYS}, "seed": P["common"]["seed"], "latents": ds.meta,
               "edm": {k: edm[k] for k in ("sigma_data", "p_mean", "p_std")}}
    rank, world, _ = setup_distributed()
    resume_or_restart(Path(out_dir) / "run", run_cfg, restart=restart, is_main=rank == 0)
    if world > 1:
        torch.distributed.barrier()        # no rank looks for checkpoints before rank 0 has checked them
    model = build_score_model(base["dit"], in_channels=ds.meta["latent_dim"], text_dim=ds.meta["text_dim"],
                              sigma_data=edm["sigma_data"])
    opt = torch.optim.Adam(model.parameters(), lr=float(base["lr"]), betas=tuple(base["betas"]))
    warm = max(int(base["warmup_steps"]), 1)
    cfg = TrainConfig(run_dir=str(Path(out_dir) / "run"), max_steps=int(base["steps"]),
                      batch_size=int(base["batch_size"]), ckpt_every=int(base["ckpt_every"]),
                      log_every=int(base["log_every"]), grad_clip=float(base["grad_clip"]),
                      ema_decay=float(base["ema_decay"]), seed=int(P["common"]["seed"]),
                      num_workers=int(base["num_workers"]),
                      keep_checkpoints=int(base["keep_checkpoints"]), desc="base DSM",
                      validate_every=validate_every(int(base["steps"]), P.get("curves")))
    validate = (dsm_validation(latents_dir, int(P["curves"]["clips"]), sigma_data=edm["sigma_data"],
                               seed=int(P["common"]["seed"])) if cfg.validate_every else None)
    step = DSMStep(p_mean=edm["p_mean"], p_std=edm["p_std"], sigma_data=edm["sigma_data"],
                   cond_dropout=float(base["cond_dropout"]), tempo_free_p=float(base.get("tempo_free_p", 0.0)))
    ctx = train(step, modules={"score": model}, optimizers={"score": opt}, dataset=ds, cfg=cfg, ema=["score"],
                collate_fn=collate_latents, resume=resume, lr_schedules={"score": lambda s: min(1.0, (s + 1) / warm)},
                validate=validate)
    if ctx.is_main:
        if validate is not None:
            write_curve(cfg.run_dir, results_root(P), "base")
        save_score_model(Path(out_dir) / "model", ctx.ema["score"], _export_extra(ds.meta, ctx.step))
    return ctx


def main(argv: list[str] | None = None) -> int:
    """CLI (one process or torchrun): train the base model from params.yaml on base.latents into base.out_dir."""
    from presto_lib.train import cleanup_distributed

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.base", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--restart", action="store_true", help="restart a run whose params changed")
    a = ap.parse_args(argv)
    S = start("base", a.params)
    try:
        train_base(S.P, S.P["base"]["latents"], S.P["base"]["out_dir"], restart=a.restart or None)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
