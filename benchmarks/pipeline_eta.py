#!/usr/bin/env python
"""How long will `make repro` take on this machine? Time the VAE's training loop briefly, scale the committed run.

    python benchmarks/pipeline_eta.py                    # about 2 min at `cpu`: warm-up, then 40 timed steps
    python benchmarks/pipeline_eta.py --steps 80 --profile cpu --times results/tables/pipeline_times.csv

Machines here differ in speed by up to ~1.6x (the same fresh-clone CI took 19 to 35 min), and a full `make repro`
plus a fresh-clone CI fits one 180-min session only on a fast one. The `vae` stage is the pipeline's largest (37.6 of
the committed run's 164 min) and, like the other stages, is bound by small CPU kernels on 2 threads, so its step
time is the probe: the shared loop (`presto_lib.train.train`) runs the profile's VAE-GAN recipe on synthetic audio,
mel-only steps (before `gan_start`) and GAN steps timed apart, and the projected training time of the recipe
(gan_start mel-only + the rest GAN steps) over the committed run's (`train_logged_s` of `vae` in
pipeline_times.csv) scales that run's total. It projects the committed run's stages; params changed since then
move the real figure (the README lists them).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

__all__ = ["project", "time_vae_steps", "main"]


def project(times: pd.DataFrame, vae_train_s: float) -> dict[str, float]:
    """The committed run's total scaled by (this machine's VAE training time) / (the committed run's)."""
    vae = times.loc[times["stage"] == "vae", "train_logged_s"]
    total = times.loc[times["stage"] == "TOTAL", "minutes"]
    if vae.empty or total.empty or not float(vae.iloc[0]) > 0:
        raise ValueError("pipeline_times needs a `vae` row with train_logged_s and a TOTAL row")
    factor = float(vae_train_s) / float(vae.iloc[0])
    return {"vae_committed_s": float(vae.iloc[0]), "vae_here_s": float(vae_train_s), "factor": factor,
            "committed_min": float(total.iloc[0]), "projected_min": float(total.iloc[0]) * factor}


class _Noise(torch.utils.data.Dataset):
    """Synthetic clips of the profile's length (the step time does not depend on the audio)."""

    def __init__(self, n: int, samples: int):
        self.n, self.samples = n, samples

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"wave": 0.1 * torch.randn(1, self.samples, generator=torch.Generator().manual_seed(i))}


def time_vae_steps(P: dict[str, Any], steps: int, warmup: int, run_root: str | Path) -> dict[str, float]:
    """Seconds per mel-only and per GAN step of the profile's VAE recipe in the shared loop."""
    from presto_lib.models.vae_losses import build_vae_modules, make_vae_step
    from presto_lib.train import TrainConfig, train

    V, C = P["vae"], P["common"]
    sr = int(C["sample_rate"])
    data = _Noise(256, int(round(C["clip_seconds"] * sr)))

    def run(name: str, n: int, gan: bool) -> float:
        torch.manual_seed(0)
        vae, disc = build_vae_modules(V, sr)
        opt = {k: torch.optim.AdamW(m.parameters(), lr=V["lr"], betas=tuple(V["betas"]))
               for k, m in (("vae", vae), ("disc", disc))}
        cfg = TrainConfig(run_dir=str(Path(run_root) / name), max_steps=n, batch_size=int(V["batch_size"]),
                          ckpt_every=10**9, log_every=10**9, ema_decay=V["ema_decay"], seed=0, desc=name,
                          grad_clip={"vae": V["grad_clip_gen"], "disc": V["grad_clip_disc"]})
        t0 = time.perf_counter()
        train(make_vae_step({**V, "gan_start": 0 if gan else n + 1}, sr), modules={"vae": vae, "disc": disc},
              optimizers=opt, dataset=data, cfg=cfg, ema=["vae"])
        return (time.perf_counter() - t0) / n

    run("warmup", max(1, warmup), gan=True)                 # lazy kernel set-up, not timed
    return {"s_per_mel_step": run("mel", steps, gan=False), "s_per_gan_step": run("gan", steps, gan=True)}


def main(argv: list[str] | None = None) -> int:
    from presto_lib.config import render_profile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--times", default="results/tables/pipeline_times.csv", help="the committed run's stage times")
    ap.add_argument("--steps", type=int, default=40, help="timed steps of each kind")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="the pipeline's torch threads (common.threads)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    P = render_profile(a.profile)
    with tempfile.TemporaryDirectory() as tmp:
        t = time_vae_steps(P, a.steps, a.warmup, tmp)
    V = P["vae"]
    here = min(V["gan_start"], V["steps"]) * t["s_per_mel_step"] + max(V["steps"] - V["gan_start"], 0) * t["s_per_gan_step"]
    r = project(pd.read_csv(a.times), here)
    print(f"VAE recipe ({a.profile}, {V['steps']} steps, GAN from {V['gan_start']}): "
          f"{t['s_per_mel_step']:.3f} s per mel-only step, {t['s_per_gan_step']:.3f} s per GAN step here")
    print(f"VAE training {r['vae_here_s'] / 60:.1f} min here vs {r['vae_committed_s'] / 60:.1f} min in the committed "
          f"run (x{r['factor']:.2f}): projected pipeline {r['projected_min']:.0f} min "
          f"(committed run {r['committed_min']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
