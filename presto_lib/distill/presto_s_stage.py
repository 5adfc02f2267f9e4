"""The Presto-S DVC stages: distil one configuration (Table 1 row, Fig. 5 discrete run, DMD-GAN) and sample it.

    python -m presto_lib.distill.presto_s_stage --run ls_ittt

A run is a key of `presto_s.runs` in params: PrestoSConfig overrides on top of `presto_s.algorithm`. Starting
from the base score model (data/base/model), the generator G and the fake score model are fresh modules loaded
with the base weights, the base model itself is the frozen teacher, and Algorithm 1 runs in the shared training
loop on the latent cache. Writes

    data/presto_s/<run>/run/          training state (resumable) and log.csv
    data/presto_s/<run>/generator/    the generator (EMA) in the score-model checkpoint format
    data/presto_s/<run>/steps_<k>/    `eval_prompts` test prompts at k ping-pong steps: k = table_steps (Table 1),
                                      every eval_steps for the `curve_runs` (Fig. 5)
    data/samples/presto_s_<run>/      samples at `table_steps` in the `eval` layout; for the two Table 2 runs
                                      (Presto-S, DMD-GAN) of the base row's prompts (`table_prompts`)
    data/presto_s/<run>/info.json     config, timings

Evaluation (FAD, MMD, CLAP, PRDC, RTF) and the tables/figures happen in notebook 06.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from presto_lib.diffusion.edm import EDM_KEYS
from presto_lib.diffusion.sampling import sample_pingpong
from presto_lib.distill.discriminator import DiscriminatorHead
from presto_lib.distill.presto_s import (FakeScore, PrestoS, PrestoSConfig, discrete_levels, init_from_base,
                                         pingpong_sigmas, snap_sigmas)

__all__ = ["run_config", "build_presto_s", "PrestoSStep", "distill", "schedule", "generator_sampler", "main"]

NOISE_KEYS = EDM_KEYS          # the `edm` params a run inherits (PrestoSConfig extends edm.EDMConfig)


def run_config(run: str, params: dict[str, Any]) -> PrestoSConfig:
    """PrestoSConfig of a run: edm noise settings < presto_s.algorithm < presto_s.runs[run]."""
    ps, e = params["presto_s"], params.get("edm", {})
    if run not in ps["runs"]:
        raise ValueError(f"unknown Presto-S run {run!r}; params presto_s.runs has {sorted(ps['runs'])}")
    return PrestoSConfig.from_dict({**{k: e[k] for k in NOISE_KEYS if k in e}, **ps.get("algorithm", {}),
                                    **(ps["runs"][run] or {})})


def build_presto_s(base_dir: str | os.PathLike, cfg: PrestoSConfig, head: dict[str, Any] | None = None,
                   device: str | torch.device = "cpu") -> tuple[PrestoS, dict[str, Any]]:
    """(PrestoS, base config): the base model is mu_real; G and mu_psi are fresh modules holding its weights."""
    from presto_lib.diffusion.score_model import build_score_model, load_score_model
    from presto_lib.models.dit import DiTConfig

    real, base_cfg = load_score_model(base_dir, device)
    dit = DiTConfig.from_dict(base_cfg["dit"])
    make = lambda: build_score_model(dit, sigma_data=base_cfg["sigma_data"])
    state = real.state_dict()
    h = dict(head or {})
    fb = int(h.pop("feature_block", -1))
    head_mod = DiscriminatorHead(dit.hidden_size, channels=h.pop("channels", None), n_down=int(h.pop("n_down", 2)))
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


def distill(ps: PrestoS, latents_dir: str | os.PathLike, run_dir: str | os.PathLike, p: dict[str, Any],
            seed: int) -> Any:
    """Run Algorithm 1 for p["iterations"] loop steps on the latent cache; returns the loop's Context."""
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, train

    betas = tuple(p.get("betas", (0.0, 0.99)))
    opts = {"generator": torch.optim.Adam(ps.G.parameters(), lr=float(p["lr_generator"]), betas=betas),
            "fake": torch.optim.Adam(ps.fake.parameters(), lr=float(p["lr_fake"]), betas=betas)}
    ema = ["generator"] if float(p.get("ema_decay", 0)) > 0 else []
    tc = TrainConfig(run_dir=str(run_dir), max_steps=int(p["iterations"]), batch_size=int(p["batch_size"]),
                     ckpt_every=int(p["ckpt_every"]), log_every=int(p["log_every"]),
                     grad_clip=float(p.get("grad_clip", 10.0)), ema_decay=float(p.get("ema_decay", 0) or 0.0),
                     seed=seed, desc=f"Presto-S {Path(run_dir).parent.name}")
    return train(PrestoSStep(ps, int(p.get("crop_frames", 0))), modules=ps.modules(), optimizers=opts, dataset=LatentDataset(latents_dir, "train"),
                 cfg=tc, ema=ema, frozen={"real": ps.real}, collate_fn=collate_latents)


# ---- sampling a distilled generator into the evaluation layout -----------------------------------

def schedule(cfg: PrestoSConfig, steps: int, rho: float | None = None) -> Tensor:
    """The ping-pong schedule of `steps` steps; a discrete generator's levels are snapped to its trained set."""
    sig = pingpong_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho if rho is None else rho)
    levels = discrete_levels(cfg)
    return sig if levels is None else snap_sigmas(sig, levels)


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
        noise = lambda s, s_next: torch.stack([torch.randn(t2m.latent_shape, generator=g) for g in gens]).to(x)
        with torch.no_grad():
            z = sample_pingpong(lambda xx, s: G(xx, s, cond), x, sig, noise_sampler=noise, disable=True)
        return t2m.decode(z)
    return generate


def main(argv: list[str] | None = None) -> int:
    """CLI of the per-run stage (see the module docstring)."""
    from presto_lib.config import find_root, load_params
    from presto_lib.diffusion.pipeline import TextToMusic, read_prompts, write_samples
    from presto_lib.diffusion.score_model import save_score_model

    ap = argparse.ArgumentParser(prog="python -m presto_lib.distill.presto_s_stage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    os.chdir(find_root())
    P = load_params(a.params)
    p, seed = P["presto_s"], int(P["common"]["seed"])
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("PRESTO_THREADS", "2"))))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = run_config(a.run, P)
    out = Path(p["out_dir"]) / a.run
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    ps, base_cfg = build_presto_s(p["base_model"], cfg, p.get("head"), device)
    ctx = distill(ps, p["latents"], out / "run", p["train"], seed)
    G = (ctx.ema["generator"] if "generator" in ctx.ema else ps.G).eval()
    info: dict[str, Any] = {"run": a.run, "config": cfg.to_dict(), "distill_s": time.perf_counter() - t0,
                            "iterations": ctx.step, "generator_updates": sum(map(ps.is_generator_turn, range(ctx.step)))}
    extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
    save_score_model(out / "generator", G, {**extras, "presto_s": cfg.to_dict()})

    t2m = TextToMusic.from_checkpoints(p["base_model"], p["vae"], device=device)
    prompts = read_prompts(p["manifest"], "test", limit=p.get("eval_prompts"))
    table = int(p["table_steps"])
    steps = sorted({int(k) for k in p["eval_steps"]} | {table}) if a.run in p.get("curve_runs", []) else [table]
    bs, info["samples_s"] = int(p["gen_batch_size"]), {}
    for k in steps:
        t1 = time.perf_counter()
        write_samples(generator_sampler(t2m, G, cfg, k), prompts, out / f"steps_{k}", t2m.sample_rate,
                      batch_size=bs, seed=seed)
        info["samples_s"][k] = time.perf_counter() - t1
    # data/samples/presto_s_<run>: the Table 2 runs use the base row's prompts, the others the steps_<table> set
    dst = Path(p["samples_dir"]) / f"presto_s_{a.run}"
    shutil.rmtree(dst, ignore_errors=True)
    if a.run in (p["presto_s_run"], p["dmd_gan_run"]):
        limit = p.get("table_prompts") or P.get("base", {}).get("eval_prompts")
        write_samples(generator_sampler(t2m, G, cfg, table), read_prompts(p["manifest"], "test", limit=limit), dst,
                      t2m.sample_rate, batch_size=bs, seed=seed)
    else:
        shutil.copytree(out / f"steps_{table}", dst)
    info["table_steps"] = table
    (out / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
