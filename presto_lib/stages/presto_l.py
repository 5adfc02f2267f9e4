"""The Presto-L stages: fine-tune one layer-dropping variant and generate its samples (sec. 4.3, A.7).

    python -m presto_lib.stages.presto_l --variant presto_l   # ASE, the Fig. 10 ablations or Presto-L
    python -m presto_lib.stages.presto_l --variant base       # the base model's curve, no fine-tune

A variant (`presto_l.VARIANTS`) starts from the base score model (data/base/model), fine-tunes on the latent cache
with `PrestoLStep` in the shared training loop, and writes

    data/presto_l/<variant>/run/          training state (resumable with unchanged params) and log.csv
    data/presto_l/<variant>/model/        the EMA weights (`load_layer_drop_model`)
    data/presto_l/<variant>/steps_<k>/    samples of the evaluation prompts at k DPM-2S + CFG++ steps (Fig. 6, 10)
    data/samples/<variant>/               the base row's prompts at its step count (Table 2; the `eval` layout)

Evaluation (FAD, MMD, CLAP) happens in notebook 05, which reads these folders.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from presto_lib.diffusion.edm import EDM_KEYS
from presto_lib.diffusion.pipeline import TextToMusic, copy_head, read_prompts, write_samples
from presto_lib.distill.presto_l import (VARIANTS, LayerDropModel, PrestoLConfig, PrestoLStep,
                                         save_layer_drop_model, variant_config)
from presto_lib.stages.base import sampling_config
from presto_lib.stages.common import resume_or_restart, start, write_json
from presto_lib.stages.learning_curve import dsm_validation, validate_every, write_curve

__all__ = ["CONFIG_KEYS", "PATH_KEYS", "stage_config", "finetune", "generate_all", "main"]

# Keys of the `presto_l` params group that configure the fine-tune itself (the rest is sizes and evaluation).
CONFIG_KEYS = ("schedule", "ref_depth", "st_weight", "sigma_dist", "sigma_mix", "cond_dropout", "budget_scale")
PATH_KEYS = ("base_model", "vae", "latents", "manifest", "out_dir", "samples_dir")


def stage_config(variant: str, params: dict[str, Any]) -> PrestoLConfig:
    """The PrestoLConfig of a variant under the `presto_l` params group (and the EDM group's noise settings)."""
    pl, e = params["presto_l"], params["edm"]
    noise = {k: e[k] for k in EDM_KEYS if k in e}            # PrestoLConfig extends edm.EDMConfig
    return variant_config(variant, **noise, **{k: pl[k] for k in CONFIG_KEYS if k in pl})


def finetune(t2m: TextToMusic, cfg: PrestoLConfig, latents_dir: str | os.PathLike, out_dir: Path,
             pl: dict[str, Any], seed: int, restart: bool | None = None, curves: dict[str, Any] | None = None,
             results: Path | None = None) -> LayerDropModel:
    """Fine-tune t2m's base model as `cfg` prescribes; returns the EMA LayerDropModel (eval mode).

    With params `curves` (points > 0) the loop logs the validation denoising loss, written to `results`'s
    plots/presto_l_<variant>_learning_curve.csv (`stages.learning_curve`).

    A run dir left by a run with another config or optimiser settings is refused (or restarted).
    """
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, train

    fixed = ("lr", "batch_size", "grad_clip", "ema_decay")
    resume_or_restart(out_dir / "run", {"config": cfg.to_dict(), "seed": seed, **{k: pl[k] for k in fixed}},
                      restart=restart)
    model = LayerDropModel(t2m.model, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=float(pl["lr"]))
    tc = TrainConfig(run_dir=str(out_dir / "run"), max_steps=int(pl["steps"]), batch_size=int(pl["batch_size"]),
                     ckpt_every=int(pl["ckpt_every"]), log_every=int(pl["log_every"]),
                     ema_decay=float(pl["ema_decay"]), grad_clip=float(pl["grad_clip"]), seed=seed,
                     desc=f"fine-tune {out_dir.name}", validate_every=validate_every(int(pl["steps"]), curves))
    validate = (dsm_validation(latents_dir, int(curves["clips"]), sigma_data=float(cfg.sigma_data), module="model",
                               seed=seed) if tc.validate_every else None)
    ctx = train(PrestoLStep(cfg), modules={"model": model}, optimizers={"model": opt},
                dataset=LatentDataset(latents_dir, "train"), cfg=tc, ema=["model"], collate_fn=collate_latents,
                validate=validate)
    if ctx.is_main and validate is not None and results is not None:
        write_curve(tc.run_dir, results, f"presto_l_{out_dir.name}")
    return ctx.ema["model"].eval()


def _generate(t2m: TextToMusic, prompts: list[dict], steps: int, out: Path, batch_size: int,
              seed: int) -> dict[str, float]:
    """Samples of `prompts` at `steps` DPM-2S steps into `out` (eval layout); returns {seconds, nfe}."""
    t0 = time.perf_counter()
    write_samples(lambda c, b, s: t2m.generate(c, b, s, steps=steps), prompts, out, t2m.sample_rate,
                  batch_size=batch_size, seed=seed)
    return {"seconds": time.perf_counter() - t0, "nfe": t2m.nfe}


def generate_all(t2m: TextToMusic, curve_prompts: list[dict], steps: list[int], out_dir: Path,
                 table: tuple[list[dict], int, Path] | None, batch_size: int, seed: int) -> dict[str, Any]:
    """Curve samples out_dir/steps_<k>/ for every k, and the Table 2 set (prompts, steps, folder) when given.

    Each sample draws its noise from its own seed (`TextToMusic`), so when the curve prompts are the first
    prompts of the Table 2 set at the same steps and batches, that curve folder is the head of the Table 2 folder.
    """
    runs: dict[str, Any] = {"curves": {}}
    reuse = None
    if table is not None:
        t_prompts, t_steps, t_dir = table
        runs["table"] = {"steps": t_steps, "prompts": len(t_prompts),
                         **_generate(t2m, t_prompts, t_steps, t_dir, batch_size, seed)}
        if (t_steps in steps and t_prompts[:len(curve_prompts)] == curve_prompts
                and len(curve_prompts) % batch_size == 0):
            reuse = t_steps
    for k in steps:
        if k == reuse:
            copy_head(table[2], out_dir / f"steps_{k}", len(curve_prompts))
            runs["curves"][k] = {"seconds": 0.0, "nfe": runs["table"]["nfe"]}
        else:
            runs["curves"][k] = _generate(t2m, curve_prompts, k, out_dir / f"steps_{k}", batch_size, seed)
    return runs


def main(argv: list[str] | None = None) -> int:
    """CLI of the fine-tune stages (see the module docstring)."""
    from presto_lib.checkpoint import load_checkpoint

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.presto_l", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True, choices=["base", *VARIANTS])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--restart", action="store_true", help="restart a run whose params changed")
    a = ap.parse_args(argv)
    S = start(f"presto_l.{a.variant}", a.params)
    P, seed, device = S.P, S.seed, S.device
    pl = P["presto_l"]
    path = {k: Path(pl[k]) for k in PATH_KEYS}
    out = path["out_dir"] / a.variant
    out.mkdir(parents=True, exist_ok=True)

    t2m = TextToMusic.from_checkpoints(path["base_model"], path["vae"], device=device, sampling=sampling_config(P))
    t2m.model.eval()
    info: dict[str, Any] = {"variant": a.variant, "base": str(path["base_model"])}
    if a.variant != "base":
        cfg = stage_config(a.variant, P)
        t0 = time.perf_counter()
        model = finetune(t2m, cfg, path["latents"], out, pl, seed, restart=a.restart or None,
                         curves=P.get("curves"), results=S.results)
        info["finetune_s"] = time.perf_counter() - t0
        _, base_cfg = load_checkpoint(path["base_model"], "cpu")
        extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
        save_layer_drop_model(out / "model", model, extras)
        t2m.model = model
        info.update(config=cfg.to_dict(), drops=list(model.schedule.drops), shift=model.schedule.shift)

    curve_prompts = read_prompts(path["manifest"], "test", limit=pl["eval_prompts"])
    table = None
    if a.variant != "base":   # Table 2: the base row's prompts and steps, into data/samples/<variant>/
        b = P["base"]
        table = (read_prompts(path["manifest"], "test", limit=pl["table_prompts"] or b["eval_prompts"]),
                 int(pl["table_steps"] or b["sample_steps"]), path["samples_dir"] / a.variant)
    info.update(generate_all(t2m, curve_prompts, [int(k) for k in pl["eval_steps"]], out, table,
                             int(pl["gen_batch_size"]), seed))
    write_json(out / "info.json", info)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
