"""The consistency-baseline stages of Table 2 (paper A.2): distil CM, SoundCTM or DITTO-CTM, sample and score it.

    python -m presto_lib.stages.consistency --run soundctm [--restart]

A run is a key of `consistency.runs` in params (the Table 2 system: cm, soundctm, ditto_ctm): CMConfig options, or
a CTM `variant` with options, on top of the edm noise settings. Starting from the base score model
(data/base/model), the student is a copy of it with zero-initialised w (and, for SoundCTM, target-time)
embeddings (`distill.consistency.make_student`); the base model itself is the frozen teacher, and one
consistency update per loop step runs in the shared training loop on the latent cache. The budget is Presto-S's
main run at the same profile: `train.iterations` = its generator updates, same batch and crop. Writes

    data/consistency/<run>/run/         training state (resumable with unchanged params) and log.csv
    data/consistency/<run>/student/     the student (EMA when ema_decay > 0; `distill.consistency.save_student`)
    data/consistency/<run>/info.json    config, updates, seconds (distillation, sampling), RTF
    data/samples/<run>/                 the base row's prompts at `table_steps` steps (the eval layout)
    <results>/tables/table2_rows/<run>.csv + <results>/metrics/table2_<run>.json   its Table 2 row

The row has Presto-S's columns (NFE, RTF, FAD, MMD, CLAP (corpus), Density, Recall, Coverage, Precision), scored
by the same evaluator (`stages.evaluation.make_evaluator`) on the same prompts, so `stages.tables` assembles it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from presto_lib.diffusion.edm import EDM_KEYS
from presto_lib.distill.cm import CMConfig
from presto_lib.distill.consistency import make_step, make_student, save_student, student_sampler
from presto_lib.distill.ctm import ctm_config
from presto_lib.stages.common import resume_or_restart, start, write_json

__all__ = ["RUNS", "run_config", "distill", "table2_row", "main"]

RUNS = ("cm", "soundctm", "ditto_ctm")      # the Table 2 systems (stages.tables.TABLE2_ORDER)


# ---- configuration -------------------------------------------------------------------------------

def run_config(run: str, params: dict[str, Any]) -> CMConfig:
    """CMConfig / CTMConfig of a run: edm noise settings < consistency.runs[run] (`variant` picks a CTM)."""
    c, e = params["consistency"], params["edm"]
    if run not in c["runs"]:
        raise ValueError(f"unknown consistency run {run!r}; params consistency.runs has {sorted(c['runs'])}")
    d = {**{k: e[k] for k in EDM_KEYS if k in e}, **(c["runs"][run] or {})}
    variant = d.pop("variant", None)
    return ctm_config(variant, **d) if variant else CMConfig.from_dict(d)


# ---- training ------------------------------------------------------------------------------------

def distill(student: torch.nn.Module, teacher: torch.nn.Module, cfg: CMConfig, latents_dir: str | os.PathLike,
            run_dir: str | os.PathLike, p: dict[str, Any], seed: int, restart: bool | None = None) -> Any:
    """p["iterations"] student updates (one per loop step) on the latent cache; returns the loop's Context.

    A run dir left by a run with another config or other `train` params is refused (or restarted).
    """
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, train

    fixed = {k: v for k, v in p.items() if k not in ("iterations", "log_every", "ckpt_every")}
    resume_or_restart(run_dir, {"config": cfg.to_dict(), "train": fixed, "seed": seed}, restart=restart)
    decay = float(p["ema_decay"] or 0.0)
    if cfg.target == "ema" and decay <= 0:
        raise ValueError("target 'ema' needs consistency.train.ema_decay > 0")
    opt = torch.optim.Adam(student.parameters(), lr=float(p["lr"]), betas=tuple(p["betas"]))
    tc = TrainConfig(run_dir=str(run_dir), max_steps=int(p["iterations"]), batch_size=int(p["batch_size"]),
                     ckpt_every=int(p["ckpt_every"]), log_every=int(p["log_every"]),
                     grad_clip=float(p["grad_clip"]), ema_decay=decay, seed=seed,
                     desc=f"consistency {Path(run_dir).parent.name}")
    return train(make_step(cfg, crop_frames=int(p["crop_frames"])), modules={"student": student},
                 optimizers={"student": opt}, dataset=LatentDataset(latents_dir, "train"), cfg=tc,
                 ema=["student"] if decay > 0 else [], frozen={"teacher": teacher}, collate_fn=collate_latents)


# ---- the Table 2 row -----------------------------------------------------------------------------

def table2_row(scores: dict[str, Any], clap: str, nfe: int, rtf: float) -> dict[str, Any]:
    """A Table 2 row in Presto-S's columns from an `Evaluator.evaluate_dir` result."""
    return {"NFE": nfe, "RTF": rtf, "FAD": scores["FAD"], "MMD": scores["MMD"], clap: scores[clap],
            "Density": scores["Density"], "Recall": scores["Recall"], "Coverage": scores["Coverage"],
            "Precision": scores["Precision"]}


def main(argv: list[str] | None = None) -> int:
    """CLI of the per-run stage (see the module docstring)."""
    from presto_lib.diffusion.pipeline import TextToMusic, read_prompts, write_samples
    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.eval.latency import real_time_factor
    from presto_lib.stages.evaluation import make_evaluator
    from presto_lib.stages.tables import write_rows

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.consistency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, choices=RUNS)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--restart", action="store_true", help="restart a run whose params changed")
    a = ap.parse_args(argv)
    S = start(f"consistency.{a.run}", a.params)
    P, device, seed = S.P, S.device, S.seed
    p = P["consistency"]
    cfg = run_config(a.run, P)
    out = Path(p["out_dir"]) / a.run
    out.mkdir(parents=True, exist_ok=True)

    # ---- distil: one student update per loop step (Presto-S: 1 generator update per fake_updates + 1) ----
    t0 = time.perf_counter()
    base, base_cfg = load_score_model(p["base_model"], device)
    base.requires_grad_(False)
    student = make_student(base, cfg).to(device)
    ctx = distill(student, base, cfg, p["latents"], out / "run", p["train"], seed, restart=a.restart or None)
    student = (ctx.ema["student"] if "student" in ctx.ema else ctx.raw["student"]).eval()
    info: dict[str, Any] = {"run": a.run, "method": type(cfg).__name__, "config": cfg.to_dict(),
                            "student_updates": ctx.step, "distill_s": time.perf_counter() - t0}
    extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
    save_student(out / "student", student, cfg, extras)

    # ---- sample the base row's prompts at table_steps (w = cfg.sample_w, no CFG pass: w is an input) ----
    t2m = TextToMusic.from_checkpoints(p["base_model"], p["vae"], device=device)
    steps = int(p["table_steps"])
    gen = student_sampler(t2m, student, cfg, steps, w=cfg.sample_w)
    prompts = read_prompts(p["manifest"], "test", limit=p["table_prompts"] or P["base"]["eval_prompts"])
    dst = Path(p["samples_dir"]) / a.run
    shutil.rmtree(dst, ignore_errors=True)
    t1 = time.perf_counter()
    write_samples(gen, prompts, dst, t2m.sample_rate, batch_size=int(p["gen_batch_size"]), seed=seed)
    info["samples_s"] = time.perf_counter() - t1

    # ---- score: Presto-S's metrics and RTF (batch 1, + VAE decode), the row file of Table 2 ----
    first = prompts[0]
    rtf = real_time_factor(lambda: gen([first["caption"]], [first["bpm"]], [seed]), t2m.seconds, warmup=1,
                           repeats=int(p["latency_repeats"])).rtf
    ev = make_evaluator(P, "consistency")
    scores = ev.evaluate_dir(dst, system=a.run)
    row = table2_row(scores, ev.clap_name, steps, rtf)
    write_rows(S, {a.run: row})
    info.update(table_steps=steps, rtf=rtf, row=row)
    write_json(out / "info.json", info)
    print(json.dumps(info, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
