"""The Presto-S stages: distil one configuration (Table 1 row, Fig. 5 discrete run, DMD-GAN) and sample it.

    python -m presto_lib.stages.presto_s --run ls_ittt [--restart]

A run is a key of `presto_s.runs` in params: PrestoSConfig overrides on top of `presto_s.algorithm`. Starting
from the base score model (data/base/model), the generator G and the fake score model are fresh modules loaded
with the base weights (`distill.generator.build_presto_s`), the base model itself is the frozen teacher, and
Algorithm 1 runs in the shared training loop on the latent cache. Writes

    data/presto_s/<run>/run/          training state (resumable with unchanged params) and log.csv
    data/presto_s/<run>/generator/    the generator (EMA) in the score-model checkpoint format
    data/presto_s/<run>/fake/         psi = (mu_psi, D_psi) at the end of the run (`presto_s.save_fake_score`), which
                                      the Presto-LS step_then_layer setup continues (A.4)
    data/presto_s/<run>/steps_<k>/    `eval_prompts` test prompts at k ping-pong steps: k = table_steps (Table 1),
                                      every eval_steps for the continuous `curve_runs` (Fig. 5); a discrete run
                                      (discrete_k) only at its own k steps (`presto_s.native_budget`)
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
from typing import Any

from presto_lib.diffusion.edm import EDM_KEYS
from presto_lib.distill.generator import PrestoSStep, build_presto_s, generator_sampler
from presto_lib.distill.optim import OPTIM_PRESETS, PlayerOptimConfig, build_optimizers
from presto_lib.distill.presto_s import PrestoS, PrestoSConfig, native_budget, save_fake_score
from presto_lib.stages.common import resume_or_restart, start, write_json
from presto_lib.stages.learning_curve import generator_validation, validate_every, write_curve

__all__ = ["run_config", "optim_config", "set_checkpointing", "sample_steps", "distill", "main"]


def run_config(run: str, params: dict[str, Any]) -> PrestoSConfig:
    """PrestoSConfig of a run: edm noise settings < presto_s.algorithm < presto_s.runs[run]."""
    ps, e = params["presto_s"], params["edm"]
    if run not in ps["runs"]:
        raise ValueError(f"unknown Presto-S run {run!r}; params presto_s.runs has {sorted(ps['runs'])}")
    return PrestoSConfig.from_dict({**{k: e[k] for k in EDM_KEYS if k in e}, **ps["algorithm"],
                                    **(ps["runs"][run] or {})})


def optim_config(p: dict[str, Any]) -> PlayerOptimConfig:
    """The two players' optimiser from `presto_s.train`: the `optimizer` preset (distill.optim) at its two rates."""
    if p["optimizer"] not in OPTIM_PRESETS:
        raise ValueError(f"presto_s.train.optimizer {p['optimizer']!r} is none of {sorted(OPTIM_PRESETS)}")
    return PlayerOptimConfig.from_dict({"preset": p["optimizer"], "lr_generator": float(p["lr_generator"]),
                                        "lr_fake": float(p["lr_fake"])})


def set_checkpointing(ps: PrestoS, on: bool) -> None:
    """Activation checkpointing of G's and mu_psi's DiT blocks (training memory only; the maths is unchanged)."""
    from presto_lib.distill.presto_ls import dit_of

    dit_of(ps.G).checkpoint_blocks = bool(on)
    dit_of(getattr(ps.fake, "module", ps.fake).score).checkpoint_blocks = bool(on)


def sample_steps(cfg: PrestoSConfig, table: int, eval_steps: list[int], curve: bool) -> tuple[list[int], int]:
    """(the step counts a run is sampled at, its Table step count): a discrete-input run (discrete_k) only at its own
    k steps (`native_budget`; Figs 5, 11), a continuous one at `table` and, for a curve run, every eval_steps."""
    if cfg.discrete_levels and not native_budget(cfg, table):
        return [int(cfg.discrete_levels)], int(cfg.discrete_levels)
    steps = {int(table)} | ({int(k) for k in eval_steps if native_budget(cfg, k)} if curve else set())
    return sorted(steps), int(table)


def distill(ps: PrestoS, latents_dir: str | os.PathLike, run_dir: str | os.PathLike, p: dict[str, Any],
            seed: int, restart: bool | None = None, validate: Any = None, validate_every: int = 0) -> Any:
    """Run Algorithm 1 for p["iterations"] loop steps on the latent cache; returns the loop's Context.

    `validate` / `validate_every`: the loop's learning-curve hook (`stages.learning_curve`).

    A run dir left by a run with another PrestoSConfig or other `train` params is refused (or restarted).
    Both players train with `optim_config(p)` (default DMD2's AdamW); `checkpoint_blocks` trades compute for memory.
    """
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, train

    free = ("iterations", "log_every", "ckpt_every", "checkpoint_blocks")     # may change on resume
    fixed = {k: v for k, v in p.items() if k not in free}
    resume_or_restart(run_dir, {"config": ps.cfg.to_dict(), "train": fixed, "seed": seed}, restart=restart)
    set_checkpointing(ps, bool(p.get("checkpoint_blocks", False)))
    opts = build_optimizers(ps, optim_config(p))
    decay = float(p["ema_decay"] or 0.0)
    tc = TrainConfig(run_dir=str(run_dir), max_steps=int(p["iterations"]), batch_size=int(p["batch_size"]),
                     ckpt_every=int(p["ckpt_every"]), log_every=int(p["log_every"]),
                     grad_clip=float(p["grad_clip"]), ema_decay=decay,
                     seed=seed, desc=f"Presto-S {Path(run_dir).parent.name}",
                     validate_every=validate_every if validate is not None else 0)
    return train(PrestoSStep(ps, int(p.get("crop_frames", 0))), modules=ps.modules(), optimizers=opts,
                 dataset=LatentDataset(latents_dir, "train"), cfg=tc, ema=["generator"] if decay > 0 else [],
                 frozen={"real": ps.real}, collate_fn=collate_latents, validate=validate)


def main(argv: list[str] | None = None) -> int:
    """CLI of the per-run stage (see the module docstring)."""
    from presto_lib.diffusion.pipeline import TextToMusic, copy_head, read_prompts, write_samples
    from presto_lib.diffusion.score_model import save_score_model

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.presto_s", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--restart", action="store_true", help="restart a run whose params changed")
    a = ap.parse_args(argv)
    S = start(f"presto_s.{a.run}", a.params)
    P, device, seed = S.P, S.device, S.seed
    p = P["presto_s"]
    cfg = run_config(a.run, P)
    out = Path(p["out_dir"]) / a.run
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    ps, base_cfg = build_presto_s(p["base_model"], cfg, p["head"], device)
    every = validate_every(int(p["train"]["iterations"]), P.get("curves"))
    validate = (generator_validation(p["latents"], int(P["curves"]["clips"]), cfg=cfg, steps=int(p["table_steps"]),
                                     seed=seed) if every else None)
    ctx = distill(ps, p["latents"], out / "run", p["train"], seed, restart=a.restart or None, validate=validate,
                  validate_every=every)
    if ctx.is_main and validate is not None:
        write_curve(out / "run", S.results, f"presto_s_{a.run}")
    G = (ctx.ema["generator"] if "generator" in ctx.ema else ps.G).eval()
    info: dict[str, Any] = {"run": a.run, "config": cfg.to_dict(), "distill_s": time.perf_counter() - t0,
                            "iterations": ctx.step, "generator_updates": sum(map(ps.is_generator_turn, range(ctx.step)))}
    extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
    save_score_model(out / "generator", G, {**extras, "presto_s": cfg.to_dict()})
    save_fake_score(out / "fake", ctx.raw["fake"], {"presto_s": cfg.to_dict(), "iterations": ctx.step})

    t2m = TextToMusic.from_checkpoints(p["base_model"], p["vae"], device=device)
    prompts = read_prompts(p["manifest"], "test", limit=p["eval_prompts"])
    steps, table = sample_steps(cfg, int(p["table_steps"]), p["eval_steps"], a.run in p["curve_runs"])
    bs, info["samples_s"] = int(p["gen_batch_size"]), {}
    # data/samples/presto_s_<run>: the Table 2 runs use the base row's prompts, the others the steps_<table> set
    dst = Path(p["samples_dir"]) / f"presto_s_{a.run}"
    shutil.rmtree(dst, ignore_errors=True)
    head = None                                     # the step count whose eval folder is the head of dst
    if a.run in (p["presto_s_run"], p["dmd_gan_run"]):
        t_prompts = read_prompts(p["manifest"], "test", limit=p["table_prompts"] or P["base"]["eval_prompts"])
        t1 = time.perf_counter()
        write_samples(generator_sampler(t2m, G, cfg, table), t_prompts, dst, t2m.sample_rate, batch_size=bs,
                      seed=seed)
        info["samples_s"]["table_prompts"] = time.perf_counter() - t1
        if t_prompts[:len(prompts)] == prompts and len(prompts) % bs == 0:
            head = table
    for k in steps:
        t1 = time.perf_counter()
        if k == head:                               # same prompts, seeds and batches: copy, do not regenerate
            copy_head(dst, out / f"steps_{k}", len(prompts))
        else:
            write_samples(generator_sampler(t2m, G, cfg, k), prompts, out / f"steps_{k}", t2m.sample_rate,
                          batch_size=bs, seed=seed)
        info["samples_s"][k] = time.perf_counter() - t1
    if not dst.is_dir():
        shutil.copytree(out / f"steps_{table}", dst)
    info["table_steps"] = table
    write_json(out / "info.json", info)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
