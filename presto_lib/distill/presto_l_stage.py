"""The Presto-L DVC stages: fine-tune one layer-dropping variant and generate its samples (sec. 4.3, A.7).

    python -m presto_lib.distill.presto_l_stage --variant presto_l   # ASE, the Fig. 10 ablations or Presto-L
    python -m presto_lib.distill.presto_l_stage --variant base       # the base model's curve, no fine-tune

A variant (`presto_l.VARIANTS`) starts from the base score model (data/base/model), fine-tunes on the latent cache
with `PrestoLStep` in the shared training loop, and writes

    data/presto_l/<variant>/run/          training state (resumable) and log.csv
    data/presto_l/<variant>/model/        the EMA weights (`load_layer_drop_model`)
    data/presto_l/<variant>/steps_<k>/    samples of the evaluation prompts at k DPM-2S + CFG++ steps (Fig. 6, 10)
    data/samples/<variant>/               the base row's prompts at its step count (Table 2; the `eval` layout)

Evaluation (FAD, MMD, CLAP) happens in notebook 05, which reads these folders.
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
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic, read_prompts, write_samples
from presto_lib.distill.presto_l import (VARIANTS, LayerDropModel, PrestoLConfig, PrestoLStep,
                                         save_layer_drop_model, variant_config)

__all__ = ["CONFIG_KEYS", "PATH_KEYS", "stage_config", "sampling_config", "finetune", "generate_all", "main"]

# Keys of the `presto_l` params group that configure the fine-tune itself (the rest is sizes and evaluation).
CONFIG_KEYS = ("schedule", "ref_depth", "st_weight", "sigma_dist", "cond_dropout", "budget_scale")
PATH_KEYS = ("base_model", "vae", "latents", "manifest", "out_dir", "samples_dir")


def stage_config(variant: str, params: dict[str, Any]) -> PrestoLConfig:
    """The PrestoLConfig of a variant under the `presto_l` params group (and the EDM group's noise settings)."""
    pl, e = params["presto_l"], params.get("edm", {})
    noise = {k: e[k] for k in EDM_KEYS if k in e}            # PrestoLConfig extends edm.EDMConfig
    return variant_config(variant, **noise, **{k: pl[k] for k in CONFIG_KEYS if k in pl})


def sampling_config(params: dict[str, Any]) -> SamplingConfig:
    """The base row's sampler (A.1: DPM-2S + CFG++ w = 0.8) and eq. 9's sigma range, from the params."""
    b, e = params.get("base", {}), params.get("edm", {})
    return SamplingConfig(sampler=b.get("sampler", "dpmpp_2s"), guidance=b.get("guidance", "cfgpp"),
                          w=float(b.get("cfg_weight", 0.8)), steps=int(b.get("sample_steps", 40)),
                          **{k: float(e[k]) for k in ("sigma_min", "sigma_max", "rho") if k in e})


def finetune(t2m: TextToMusic, cfg: PrestoLConfig, latents_dir: str | os.PathLike, out_dir: Path,
             pl: dict[str, Any], seed: int) -> LayerDropModel:
    """Fine-tune t2m's base model as `cfg` prescribes; returns the EMA LayerDropModel (eval mode)."""
    from presto_lib.data.latents import LatentDataset, collate_latents
    from presto_lib.train import TrainConfig, train

    model = LayerDropModel(t2m.model, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=float(pl["lr"]))
    tc = TrainConfig(run_dir=str(out_dir / "run"), max_steps=int(pl["steps"]), batch_size=int(pl["batch_size"]),
                     ckpt_every=int(pl["ckpt_every"]), log_every=int(pl["log_every"]),
                     ema_decay=float(pl["ema_decay"]), grad_clip=float(pl["grad_clip"]), seed=seed,
                     desc=f"fine-tune {out_dir.name}")
    ctx = train(PrestoLStep(cfg), modules={"model": model}, optimizers={"model": opt},
                dataset=LatentDataset(latents_dir, "train"), cfg=tc, ema=["model"], collate_fn=collate_latents)
    return ctx.ema["model"].eval()


def _generate(t2m: TextToMusic, prompts: list[dict], steps: int, out: Path, batch_size: int,
              seed: int) -> dict[str, float]:
    """Samples of `prompts` at `steps` DPM-2S steps into `out` (eval layout); returns {seconds, nfe}."""
    t0 = time.perf_counter()
    write_samples(lambda c, b, s: t2m.generate(c, b, s, steps=steps), prompts, out, t2m.sample_rate,
                  batch_size=batch_size, seed=seed)
    return {"seconds": time.perf_counter() - t0, "nfe": t2m.nfe}


def _head(src: Path, dst: Path, n: int) -> None:
    """The first n samples of a samples folder as a folder of their own (same prompts, seeds and audio)."""
    import pandas as pd

    rows = pd.read_csv(src / "samples.csv").head(n)
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in rows["path"]:
        shutil.copy2(src / f, dst / f)
    rows.to_csv(dst / "samples.csv", index=False)


def generate_all(t2m: TextToMusic, curve_prompts: list[dict], steps: list[int], out_dir: Path,
                 table: tuple[list[dict], int, Path] | None, batch_size: int, seed: int) -> dict[str, Any]:
    """Curve samples out_dir/steps_<k>/ for every k, and the Table 2 set (prompts, steps, folder) when given.

    Each sample draws its noise from its own seed (`TextToMusic`), so when the curve prompts are the first
    prompts of the Table 2 set at the same steps, that curve folder is the head of the Table 2 folder.
    """
    runs: dict[str, Any] = {"curves": {}}
    reuse = None
    if table is not None:
        t_prompts, t_steps, t_dir = table
        runs["table"] = {"steps": t_steps, "prompts": len(t_prompts),
                         **_generate(t2m, t_prompts, t_steps, t_dir, batch_size, seed)}
        if t_steps in steps and t_prompts[:len(curve_prompts)] == curve_prompts:
            reuse = t_steps
    for k in steps:
        if k == reuse:
            _head(table[2], out_dir / f"steps_{k}", len(curve_prompts))
            runs["curves"][k] = {"seconds": 0.0, "nfe": runs["table"]["nfe"]}
        else:
            runs["curves"][k] = _generate(t2m, curve_prompts, k, out_dir / f"steps_{k}", batch_size, seed)
    return runs


def main(argv: list[str] | None = None) -> int:
    """CLI of the fine-tune stages (see the module docstring)."""
    from presto_lib.checkpoint import load_checkpoint
    from presto_lib.config import find_root, load_params

    ap = argparse.ArgumentParser(prog="python -m presto_lib.distill.presto_l_stage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True, choices=["base", *VARIANTS])
    ap.add_argument("--params", default="params.yaml")
    for key in PATH_KEYS:     # defaults: the `presto_l` params group (data/base/model, data/vae, ...)
        ap.add_argument(f"--{key.replace('_', '-')}", default=None)
    a = ap.parse_args(argv)
    os.chdir(find_root())
    P = load_params(a.params)
    pl, seed = P["presto_l"], int(P["common"]["seed"])
    path = {k: Path(getattr(a, k) or pl[k]) for k in PATH_KEYS}
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("PRESTO_THREADS", "2"))))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = path["out_dir"] / a.variant
    out.mkdir(parents=True, exist_ok=True)

    t2m = TextToMusic.from_checkpoints(path["base_model"], path["vae"], device=device, sampling=sampling_config(P))
    t2m.model.eval()
    info: dict[str, Any] = {"variant": a.variant, "base": str(path["base_model"])}
    if a.variant != "base":
        cfg = stage_config(a.variant, P)
        t0 = time.perf_counter()
        model = finetune(t2m, cfg, path["latents"], out, pl, seed)
        info["finetune_s"] = time.perf_counter() - t0
        _, base_cfg = load_checkpoint(path["base_model"], "cpu")
        extras = {k: v for k, v in base_cfg.items() if k not in ("dit", "sigma_data")}
        save_layer_drop_model(out / "model", model, extras)
        t2m.model = model
        info.update(config=cfg.to_dict(), drops=list(model.schedule.drops), shift=model.schedule.shift)

    curve_prompts = read_prompts(path["manifest"], "test", limit=pl.get("eval_prompts"))
    table = None
    if a.variant != "base":   # Table 2: the base row's prompts and steps, into data/samples/<variant>/
        b = P.get("base", {})
        table = (read_prompts(path["manifest"], "test", limit=pl.get("table_prompts") or b.get("eval_prompts")),
                 int(pl.get("table_steps") or b["sample_steps"]), path["samples_dir"] / a.variant)
    info.update(generate_all(t2m, curve_prompts, [int(k) for k in pl["eval_steps"]], out, table,
                             int(pl["gen_batch_size"]), seed))
    (out / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
