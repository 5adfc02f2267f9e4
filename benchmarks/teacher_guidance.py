#!/usr/bin/env python
"""Is the distilled students' gap to the base model their teacher's? The base model sampled with plain CFG.

    python benchmarks/teacher_guidance.py --weights 1 2 4.5 --out results/benchmarks    # after `make repro`

Presto-S matches the distribution of the CFG-augmented teacher (eq. 5: plain CFG at `presto_s.algorithm.cfg_w`,
4.5 as in A.1 and DMD2), while the base row samples with CFG++ at w = 0.8 (A.1). If plain CFG at 4.5 is itself
far from the data at our scale, a student that learns its teacher well is as far, and "Presto-S vs base" measures
the guidance, not the distillation. This samples the base model with plain CFG at each weight (the base row's
sampler, steps, prompts and seeds) into data/teacher_guidance/cfg_<w>/, scores each with the shared evaluator,
and judges "Presto-S beats the base model at plain CFG w" by the ledger's rule (`eval.claims`).
Writes teacher_guidance.csv and .md to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

OUT = Path("data/teacher_guidance")
SET_COLUMNS = ("FAD", "MMD", "Recall", "Coverage")


def guided(sampling: Any, w: float) -> Any:
    """The base row's SamplingConfig with plain CFG at weight w (w = 1: the conditional model alone)."""
    return dataclasses.replace(sampling, guidance="cfg", w=float(w))


def summary(scores: dict[str, dict[str, float]], clap_name: str) -> pd.DataFrame:
    """One row per system: the set metrics and the mean CLAP score."""
    return pd.DataFrame([{"system": s, **{c: v.get(c) for c in (*SET_COLUMNS, clap_name)}}
                         for s, v in scores.items()])


def cells_table(inputs: Any, student: str, systems: dict[str, str], metrics: Sequence[str]) -> pd.DataFrame:
    """"student beats <system>" cells (A - B, 95% interval, verdict) for each system folder."""
    rows = []
    for name, folder in systems.items():
        for c in inputs.cells(student, folder, metrics, label=f"Presto-S vs {name}"):
            rows.append({"cell": c.name, "A": c.values[0] if c.values else None,
                         "B": c.values[1] if c.values else None, "estimate": c.estimate, "lo": c.lo, "hi": c.hi,
                         "n": c.n, "verdict": c.verdict})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    import torch

    from presto_lib.config import load_params
    from presto_lib.diffusion.pipeline import TextToMusic, read_prompts, write_samples
    from presto_lib.stages.base import sampling_config
    from presto_lib.stages.claims import Inputs
    from presto_lib.stages.common import results_root
    from presto_lib.stages.evaluation import EVALUATIONS, make_evaluator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 4.5])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-root", default=str(EVALUATIONS), help="saved evaluations of the pipeline's systems")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    P = load_params(a.params)
    B, PS, seed = P["base"], P["presto_s"], int(P["common"]["seed"])
    prompts = read_prompts(B["manifest"], "test", limit=B["eval_prompts"])
    base_sampling = sampling_config(P)
    systems = {"base (CFG++ 0.8)": str(Path(B["samples_dir"]))}
    for w in a.weights:
        folder = OUT / f"cfg_{w:g}"
        t2m = TextToMusic.from_checkpoints(PS["base_model"], B["vae"], sampling=guided(base_sampling, w))
        gen = lambda c, b, s: t2m.generate(c, b, s)                              # noqa: E731
        write_samples(gen, prompts, folder, t2m.sample_rate, batch_size=int(B["gen_batch_size"]), seed=seed)
        systems[f"base (CFG {w:g})"] = str(folder)
    ev = make_evaluator(P, "base", save=False)
    ref = ev.reference()
    I = Inputs(P, results_root(P), ref["audio"], float(ref["sigma"]), scorer=ev, eval_root=Path(a.eval_root))
    student = str(Path(PS["samples_dir"]) / f"presto_s_{PS['presto_s_run']}")
    scores = {name: ev.evaluate_dir(folder, system=name) for name, folder in
              {"Presto-S (4 steps)": student, **systems}.items()}
    table = summary(scores, ev.clap_name)
    cells = cells_table(I, student, systems, ("FAD", "MMD", "CLAP", "recall"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "teacher_guidance.csv", index=False)
    cells.to_csv(out / "teacher_guidance_cells.csv", index=False)
    (out / "teacher_guidance.md").write_text(
        f"The base model with plain CFG (Presto-S's teacher guidance, `presto_s.algorithm.cfg_w` = "
        f"{PS['algorithm']['cfg_w']}) beside the base row (CFG++ w = {B['cfg_weight']}) and Presto-S "
        f"(`{PS['presto_s_run']}`, {PS['train']['iterations']} iterations, {PS['table_steps']} steps); "
        f"{B['sample_steps']}-step {B['sampler']}, the base row's {len(prompts)} prompts and seeds "
        "(`benchmarks/teacher_guidance.py`).\n\n" + table.round(3).to_markdown(index=False)
        + "\n\nPresto-S vs each (A - B, 95% interval, the ledger's rule):\n\n"
        + cells.round(3).to_markdown(index=False) + "\n")
    print((out / "teacher_guidance.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
