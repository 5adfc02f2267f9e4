"""The Presto-LS stages: Presto-L with the reduced schedule, then Presto-S on it; the Fig. 8 early runs.

    python -m presto_lib.stages.presto_ls layer                 # Presto-L, reduced schedule (sec. 3.4)
    python -m presto_lib.stages.presto_ls distill               # Presto-S on it -> Presto-LS (+ samples)
    python -m presto_lib.stages.presto_ls early --setup ls_lfake   # a Fig. 8 run (A.4)

`layer` fine-tunes the base model (data/base) with the `presto_l` group's recipe but the reduced dropping
schedule [12, 8, 8, 0, 0] (scaled to our depth). `distill` and `early` run Algorithm 1 with the recipe of the
Presto-S run `presto_ls.presto_s_run` (its PrestoSConfig, optimisers, discriminator head: `stages.presto_s`), so
a setup differs from Presto-S only in where its networks start and whether its generator also learns layer
dropping with Presto-L's losses (`presto_ls.SETUPS`, A.4): step_then_layer continues that Presto-S run's generator
*and* its psi = (mu_psi, D_psi) (data/presto_s/<run>/fake); step_and_layer starts everything from the base
model; both add layer_weight (L_DSM + st_weight L_st) to the generator's loss. They log every iteration
(`log_every = 1`) for `presto_ls.fig8_curves`. Writes

    data/presto_ls/presto_l/{run, model}/         the reduced-schedule Presto-L model (`load_layer_drop_model`)
    data/presto_ls/presto_ls/{run, generator}/    Presto-LS: log.csv, the EMA generator, info.json
    data/presto_ls/fig8/<setup>/run/log.csv       early distillation of each failing setup (and of Presto-S)
    data/samples/presto_ls/                       Presto-LS samples at the Presto-S table step count (Table 2)
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from presto_lib.distill.presto_ls import SETUPS, build_setup
from presto_lib.stages.common import results_root, start, write_json
from presto_lib.stages.learning_curve import generator_validation, validate_every, write_curve

__all__ = ["layer_config", "distill_setup", "run_layer", "run_distill", "main"]

OUT = Path("data/presto_ls")


def layer_config(P: dict[str, Any]):
    """Presto-L (shift, budget, self-teacher) under the `presto_l` group, with `presto_ls.schedule`."""
    from presto_lib.distill.layer_drop import SCHEDULES
    from presto_lib.distill.presto_l import with_schedule
    from presto_lib.stages.presto_l import stage_config

    sched = P["presto_ls"].get("schedule", "presto_ls")
    if isinstance(sched, str) and sched not in SCHEDULES:
        raise ValueError(f"presto_ls.schedule {sched!r} is neither a list nor one of {sorted(SCHEDULES)}")
    return with_schedule(stage_config("presto_l", P), sched)


def _train_params(P: dict[str, Any], iterations: int) -> dict[str, Any]:
    """The Presto-S run's optimiser / loop settings, for `iterations` steps logged one by one."""
    return {**P["presto_s"]["train"], "iterations": int(iterations), "log_every": 1,
            "ckpt_every": max(int(iterations), 1)}


def distill_setup(setup: str, P: dict[str, Any], run_dir: Path, iterations: int, device: str = "cpu",
                  curve: bool = False):
    """Build `setup` from the base / Presto-L / Presto-S checkpoints and run Algorithm 1; returns (ps, ctx).

    `curve`: log the generator's validation metric (`stages.learning_curve`, params `curves`) in run_dir."""
    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.distill.presto_l import load_layer_drop_model
    from presto_lib.distill.presto_s import load_fake_score
    from presto_lib.stages.presto_s import distill, run_config

    ls, ps_p = P["presto_ls"], P["presto_s"]
    st = SETUPS[setup]
    base, _ = load_score_model(ps_p["base_model"], device)
    need = {st.generator, st.scores}
    presto_l = load_layer_drop_model(OUT / "presto_l" / "model", device)[0] if "presto_l" in need else None
    run = Path(ps_p["out_dir"]) / ls["presto_s_run"]
    presto_s = load_score_model(run / "generator", device)[0] if "presto_s" in need else None
    fake = load_fake_score(run / "fake", device)[0] if st.fake == "presto_s" else None     # A.4: continue psi
    head = dict(ps_p["head"] or {})
    ps = build_setup(setup, base, presto_l=presto_l, presto_s=presto_s, presto_s_fake=fake,
                     s_cfg=run_config(ls["presto_s_run"], P), l_cfg=layer_config(P),
                     layer_weight=float(ls.get("layer_weight", 1.0)), head_channels=head.get("channels"),
                     head_down=int(head.get("n_down", 2)), feature_block=int(head.get("feature_block", -1)))
    every = validate_every(iterations, P.get("curves")) if curve else 0
    validate = (generator_validation(ps_p["latents"], int(P["curves"]["clips"]), cfg=ps.cfg,
                                     steps=int(ls["table_steps"] or ps_p["table_steps"]),
                                     seed=int(P["common"]["seed"])) if every else None)
    ctx = distill(ps, ps_p["latents"], run_dir, _train_params(P, iterations), int(P["common"]["seed"]),
                  restart=True, validate=validate, validate_every=every)   # run_distill clears the run dir
    return ps, ctx


# ---- the stages -----------------------------------------------------------------------------------------

def run_layer(P: dict[str, Any], device: str) -> dict[str, Any]:
    """Presto-L with the reduced schedule from the base model -> data/presto_ls/presto_l/model."""
    from types import SimpleNamespace

    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.distill.presto_l import save_layer_drop_model
    from presto_lib.stages.presto_l import finetune

    ls, pl = P["presto_ls"], dict(P["presto_l"])
    if ls["layer_steps"] is not None:
        pl["steps"] = int(ls["layer_steps"])
    base_dir = pl["base_model"]
    cfg = layer_config(P)
    base, base_cfg = load_score_model(base_dir, device)
    t0 = time.perf_counter()
    shutil.rmtree(OUT / "presto_l" / "run", ignore_errors=True)      # a DVC rerun starts over (no stale resume)
    model = finetune(SimpleNamespace(model=base), cfg, pl["latents"], OUT / "presto_l", pl,
                     int(P["common"]["seed"]))
    extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
    save_layer_drop_model(OUT / "presto_l" / "model", model, extras)
    return {"finetune_s": time.perf_counter() - t0, "steps": int(pl["steps"]), "config": cfg.to_dict(),
            "drops": list(model.schedule.drops), "depth": model.schedule.depth}


def run_distill(P: dict[str, Any], device: str, setup: str = "presto_ls", early: bool = False) -> dict[str, Any]:
    """Presto-S on a setup; the full Presto-LS run also saves its EMA generator and the Table 2 samples."""
    from presto_lib.diffusion.pipeline import TextToMusic, read_prompts, write_samples
    from presto_lib.distill.presto_l import save_layer_drop_model
    from presto_lib.distill.generator import generator_sampler

    ls, ps_p = P["presto_ls"], P["presto_s"]
    iters = int(ls["fig8_iterations"] if early else (ls["iterations"] or ps_p["train"]["iterations"]))
    out = OUT / "fig8" / setup if early else OUT / setup
    shutil.rmtree(out / "run", ignore_errors=True)      # a DVC rerun starts over (no stale resume)
    t0 = time.perf_counter()
    ps, ctx = distill_setup(setup, P, out / "run", iters, device, curve=not early)
    if not early and ctx.is_main:
        write_curve(out / "run", results_root(P), setup)
    info: dict[str, Any] = {"setup": setup, "label": SETUPS[setup].label, "iterations": ctx.step,
                            "generator_updates": sum(map(ps.is_generator_turn, range(ctx.step))),
                            "distill_s": time.perf_counter() - t0, "config": ps.cfg.to_dict()}
    if not early:
        from presto_lib.checkpoint import load_checkpoint

        G = (ctx.ema.get("generator") or ps.G).eval()
        _, base_cfg = load_checkpoint(ps_p["base_model"], "cpu")
        extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
        save_layer_drop_model(out / "generator", G, {**extras, "presto_s": ps.cfg.to_dict()})
        t2m = TextToMusic.from_checkpoints(ps_p["base_model"], ps_p["vae"], device=device)
        limit = ps_p["table_prompts"] or P["base"]["eval_prompts"]   # the Presto-S Table 2 row's
        prompts = read_prompts(ps_p["manifest"], "test", limit=limit)
        steps = int(ls["table_steps"] or ps_p["table_steps"])
        t1 = time.perf_counter()
        write_samples(generator_sampler(t2m, G, ps.cfg, steps), prompts, Path(ps_p["samples_dir"]) / "presto_ls",
                      t2m.sample_rate, batch_size=int(ps_p["gen_batch_size"]), seed=int(P["common"]["seed"]))
        info.update(table_steps=steps, samples_s=time.perf_counter() - t1)
    write_json(out / "info.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    """CLI of the Presto-LS stages (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.presto_ls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["layer", "distill", "early"])
    ap.add_argument("--setup", default="presto_ls", choices=list(SETUPS))
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start(f"presto_ls.{a.what}", a.params)
    if a.what == "layer":
        info = run_layer(S.P, S.device)
        write_json(OUT / "presto_l" / "info.json", info)
    else:
        info = run_distill(S.P, S.device, a.setup, early=a.what == "early")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
