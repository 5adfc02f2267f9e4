#!/usr/bin/env python
"""Does a longer distillation budget move Table 2's claims? The main Presto-S run and Presto-LS at N iterations.

    # in a scratch copy of a workspace where `make repro` has finished (this overwrites two of its outputs):
    git clone -q . ../scratch && cp -a data ../scratch/ && cd ../scratch
    python benchmarks/distill_budget.py --iterations 1200 --out results/benchmarks

The pipeline gives every Presto-S run `presto_s.train.iterations` loop steps (Table 1's grid, the Table 2 runs
and Presto-LS alike) and its learning curves are still falling at the end. This trial shows what a larger budget
for the Table 2 systems alone would buy:
1. keep the workspace's per-clip evaluations (data/evaluations -> data/budget/evaluations_<n0>),
2. write params_budget.yaml with presto_s.train.iterations = presto_ls.iterations = N,
3. continue the main Presto-S run (`presto_s.presto_s_run`; `iterations` may change on resume, so the run goes on
   from its last checkpoint exactly as an N-iteration run would) and rerun the Presto-LS distillation (it restarts),
4. judge the ledger's Table 2 claims (C7, C8, C15, `stages.claims`) and Presto-S vs the base model at both budgets,
   the baselines (DMD-GAN, CM, SoundCTM, DITTO-CTM) kept at their pipeline budgets.
Writes distill_budget.csv (one row per cell and budget) and distill_budget.md to --out.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

EVALS = Path("data/evaluations")


def budget_params(P: dict[str, Any], iterations: int) -> dict[str, Any]:
    """`P` with the Presto-S loop and the Presto-LS distillation at `iterations` steps (nothing else changed)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    Q = copy.deepcopy(P)
    Q["presto_s"]["train"]["iterations"] = int(iterations)
    Q["presto_ls"]["iterations"] = int(iterations)
    return Q


def stale_evaluations(P: dict[str, Any], root: Path = EVALS) -> list[Path]:
    """The saved evaluations of the two folders this trial regenerates (Presto-S's Table 2 run, Presto-LS)."""
    from presto_lib.eval.evaluate import eval_key

    S = Path(P["presto_s"]["samples_dir"])
    keys = {eval_key(S / f"presto_s_{P['presto_s']['presto_s_run']}"), eval_key(S / "presto_ls")}
    return sorted(p for p in root.glob("*/*.npz") if p.stem in keys)


def judge(inputs: Any, budget: int) -> pd.DataFrame:
    """Every cell of C7, C8, C15 and of "Presto-S vs base" on `inputs` (a `stages.claims.Inputs`), one row each."""
    from presto_lib.stages.claims import _samples, c7, c8, c15

    groups = [(cid, r.cells, r.verdict) for cid, r in (("C7", c7(inputs)), ("C8", c8(inputs)), ("C15", c15(inputs)))]
    # not a paper claim (no verdict of its own): how close the student gets to its teacher
    groups.append(("S vs base", inputs.cells(_samples(inputs, "presto_s"), _samples(inputs, "base"),
                                             label="Presto-S vs base"), ""))
    rows = []
    for cid, cells, verdict in groups:
        for c in cells:
            a, b = c.values if c.values is not None else (float("nan"), float("nan"))
            rows.append({"budget": budget, "claim": cid, "cell": c.name, "A": a, "B": b, "estimate": c.estimate,
                         "lo": c.lo, "hi": c.hi, "n": c.n, "verdict": c.verdict, "claim verdict": verdict})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, curves: pd.DataFrame, minutes: dict[str, float]) -> str:
    """The report: verdict per claim and budget, every cell, the learning curves' last points."""
    claims = df[df["claim"] != "S vs base"].groupby(["claim", "budget"])["claim verdict"].first().unstack("budget")
    cells = df.pivot_table(index=["claim", "cell"], columns="budget", values=["A", "estimate", "lo", "hi"],
                           aggfunc="first")
    cells.columns = [f"{v} @{b}" for v, b in cells.columns]
    timing = ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items())
    return "\n\n".join([
        "Distillation budget trial (`benchmarks/distill_budget.py`): the main Presto-S run and Presto-LS at "
        f"{', '.join(map(str, sorted(df['budget'].unique())))} loop iterations (one generator update in "
        "`fake_updates + 1`), everything else (base model, baselines, prompts, seeds) as in the pipeline. "
        "Verdicts by the ledger's rule (`eval.claims`); `A` is the first system of a cell, its metric value.",
        "Claim verdicts:\n\n" + claims.to_markdown(),
        "Cells (A - B and 95% interval):\n\n" + cells.round(3).to_markdown(),
        "Learning curves (validation latent MMD at 4 steps, `stages.learning_curve`):\n\n"
        + curves.round(2).to_markdown(index=False),
        f"Wall time of the trial's stages: {timing}."])


def _curve_tail(path: Path, name: str) -> pd.DataFrame:
    d = pd.read_csv(path)
    return pd.DataFrame({"model": name, "step": d["step"], "val_latent_mmd": d.iloc[:, 1]})


def main(argv: list[str] | None = None) -> int:
    from presto_lib.stages.claims import Inputs
    from presto_lib.stages.common import results_root
    from presto_lib.stages.evaluation import make_evaluator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)
    P = yaml.safe_load(Path(a.params).read_text())
    n0 = int(P["presto_s"]["train"]["iterations"])
    if P["presto_ls"].get("iterations") not in (None, n0):
        raise SystemExit("presto_ls.iterations differs from presto_s.train.iterations; the trial assumes one budget")
    kept = Path(f"data/budget/evaluations_{n0}")
    if not kept.exists():
        shutil.copytree(EVALS, kept)
    for p in stale_evaluations(P):
        p.unlink()
    Q = budget_params(P, a.iterations)
    qpath = Path("params_budget.yaml")
    qpath.write_text(yaml.safe_dump(Q, sort_keys=False))
    run, minutes = P["presto_s"]["presto_s_run"], {}
    for name, cmd in ((f"presto_s {run}", ["-m", "presto_lib.stages.presto_s", "--run", run]),
                      ("presto_ls distill", ["-m", "presto_lib.stages.presto_ls", "distill"])):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *cmd, "--params", str(qpath)], check=True)
        minutes[name] = (time.perf_counter() - t0) / 60
    ev = make_evaluator(P, "presto_s", save=False)
    ref = ev.reference()
    results = results_root(P)
    before = Inputs(P, results, ref["audio"], float(ref["sigma"]), scorer=None, eval_root=kept)
    after = Inputs(Q, results, ref["audio"], float(ref["sigma"]), scorer=ev)
    df = pd.concat([judge(before, n0), judge(after, a.iterations)], ignore_index=True)
    plots = Path(results) / "plots"
    curves = pd.concat([_curve_tail(plots / f"presto_s_{run}_learning_curve.csv", f"Presto-S {run}"),
                        _curve_tail(plots / "presto_ls_learning_curve.csv", "Presto-LS")])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "distill_budget.csv", index=False)
    (out / "distill_budget.md").write_text(markdown(df, curves, minutes) + "\n")
    print((out / "distill_budget.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
