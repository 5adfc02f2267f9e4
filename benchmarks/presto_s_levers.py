#!/usr/bin/env python
"""Which training setting brings Presto-S closer to its teacher? Fresh Presto-S runs with one change each.

    # in a scratch copy of a workspace where `make repro` has finished (writes only under data/levers/):
    git clone -q . ../scratch && cp -a data ../scratch/ && cd ../scratch
    python benchmarks/presto_s_levers.py --iterations 1200 --lever ema_0.99:train.ema_decay=0.99 \
        --lever lr_g_1e-5:train.lr_generator=1e-5 --lever ema_0.99_300:train.ema_decay=0.99,train.iterations=300 \
        --lever ema_0.99_lr_g_2e-5:train.ema_decay=0.99,train.lr_generator=2e-5
    python benchmarks/presto_s_levers.py --lever ema_0.99:train.ema_decay=0.99 --presto-ls ema_0.99 \
        --name presto_s_levers_presto_ls              # the two committed reports (results/benchmarks/)

At `cpu` the main Presto-S run (`presto_s.presto_s_run`) ends 7.8 FAD / 46 MMD behind the base model, and
continuing it from 300 to 1200 iterations made it worse (`distill_budget.md`). Each lever here is a fresh run of
that recipe with a few `presto_s` keys changed (dotted paths, values read as YAML) and `iterations` loop steps,
written to data/levers/<lever>/ so the pipeline's own outputs stay untouched. Every lever is sampled on the base
row's prompts (Table 2's), scored by the pipeline's evaluator and compared, per prompt, with the base model and
with the committed Presto-S run and with Table 2's step-distillation baselines (claim C7's) by the ledger's
rule (`eval.claims`, paired bootstrap). With --presto-ls, the Presto-LS distillation also runs on a lever's recipe
and budget (it overwrites data/presto_ls/presto_ls/, its samples go beside the lever's) and is compared with the
base model, the committed Presto-S run and the lever's own Presto-S run (claims C8 and C15). Writes <name>.csv (one
row per system and cell) and <name>.md to --out.
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

ROOT = Path("data/levers")
METRICS = ("FAD", "MMD", "CLAP", "recall")


def parse_lever(text: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, {dotted key: YAML value}); keys are paths under `presto_s`."""
    name, _, body = text.partition(":")
    if not name or not body:
        raise ValueError(f"lever {text!r}: expected name:key=value[,key=value]")
    sets = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"lever {text!r}: {item!r} is not key=value")
        sets[key.strip()] = _value(value)
    return name, sets


def _value(text: str) -> Any:
    """A YAML scalar, with '1e-5' read as a number (YAML 1.1 wants a dot in an exponent float)."""
    v = yaml.safe_load(text)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def lever_params(P: dict[str, Any], name: str, sets: dict[str, Any], iterations: int,
                 root: Path = ROOT) -> dict[str, Any]:
    """`P` with the main Presto-S run at `iterations` steps, then `sets` applied, its outputs under root/name."""
    Q = copy.deepcopy(P)
    p = Q["presto_s"]
    p["train"]["iterations"] = int(iterations)      # a lever may set its own (train.iterations=...)
    for key, value in sets.items():
        *path, leaf = key.split(".")
        node = p
        for k in path:
            node = node[k]
        if leaf not in node:
            raise KeyError(f"presto_s.{key} is not a parameter")
        node[leaf] = value
    p["out_dir"] = str(root / name / "presto_s")
    p["samples_dir"] = str(root / name / "samples")
    p["curve_runs"] = []                    # one sample set: Table 2's (the base row's prompts)
    p["eval_prompts"] = 8                   # the steps_<k> copy, unused here
    return Q


def lever_samples(Q: dict[str, Any]) -> Path:
    """Where the lever run's Table 2 samples land."""
    return Path(Q["presto_s"]["samples_dir"]) / f"presto_s_{Q['presto_s']['presto_s_run']}"


def ls_params(Q: dict[str, Any]) -> dict[str, Any]:
    """A lever's params with the Presto-LS distillation on its recipe and budget (samples beside the lever's)."""
    R = copy.deepcopy(Q)
    R["presto_ls"]["iterations"] = int(R["presto_s"]["train"]["iterations"])
    return R


def ls_samples(Q: dict[str, Any]) -> Path:
    """Where the Presto-LS run on a lever's recipe writes its Table 2 samples."""
    return Path(Q["presto_s"]["samples_dir"]) / "presto_ls"


def cell_rows(inputs: Any, lever: str, a: Path, against: dict[str, Path]) -> pd.DataFrame:
    """Every metric cell of `a` vs each system in `against` (A beats B), one row each."""
    rows = []
    for who, b in against.items():
        for c in inputs.cells(a, b, METRICS, label=f"vs {who}"):
            A, B = c.values if c.values is not None else (float("nan"), float("nan"))
            rows.append({"lever": lever, "against": who, "metric": c.name.split()[-1], "A": A, "B": B,
                         "estimate": c.estimate, "lo": c.lo, "hi": c.hi, "n": c.n, "verdict": c.verdict})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, info: pd.DataFrame, iterations: int) -> str:
    """The report: each lever's metrics, its paired differences, its learning curve's best and last points."""
    vals = df.drop_duplicates(["lever", "metric"]).pivot(index="lever", columns="metric", values="A")
    diffs = df.assign(cell=lambda d: d.apply(lambda r: f"{r.estimate:+.3g} [{r.lo:.3g}, {r.hi:.3g}]", axis=1))
    diffs = diffs.pivot(index=["lever", "against"], columns="metric", values="cell")
    return "\n\n".join([
        f"Presto-S levers (`benchmarks/presto_s_levers.py`): fresh runs of the main Presto-S recipe, {iterations} "
        "loop iterations each unless a lever sets `train.iterations` (one generator update in `fake_updates + 1`), "
        "one change per lever; sampled at 4 "
        "steps on the base row's prompts and scored by the pipeline's evaluator. `committed` is the pipeline's "
        "run as it stands (its own budget); dmd_gan, cm, soundctm, ditto_ctm are C7's baselines at their pipeline "
        "budgets.",
        "Metrics:\n\n" + vals[list(METRICS)].round(3).to_markdown(),
        "A - B with 95% paired bootstrap interval (negative FAD/MMD and positive CLAP/recall favour the lever):\n\n"
        + diffs[list(METRICS)].to_markdown(),
        "Runs (validation latent MMD at 4 steps, 16 clips, `stages.learning_curve`):\n\n"
        + info.round(2).to_markdown(index=False)])


def _curve_summary(path: Path) -> dict[str, float]:
    d = pd.read_csv(path)
    v = d.iloc[:, 1]
    return {"val_mmd_best": float(v.min()), "best_step": int(d["step"][v.idxmin()]), "val_mmd_last": float(v.iloc[-1])}


def _run(lever: str, tag: str, Q: dict[str, Any], cmd: list[str], curve: Path) -> dict[str, Any]:
    """Run a stage command on params Q (written to data/levers/<lever>/params<tag>.yaml) unless it ran before;
    keep its wall time and learning curve beside them; returns {minutes, curve summary}."""
    d = ROOT / lever
    minutes, kept = d / f"minutes{tag}.txt", d / f"learning_curve{tag}.csv"
    if not minutes.is_file():
        qpath = d / f"params{tag}.yaml"
        qpath.parent.mkdir(parents=True, exist_ok=True)
        qpath.write_text(yaml.safe_dump(Q, sort_keys=False))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", *cmd, "--params", str(qpath)], check=True)
        minutes.write_text(f"{(time.perf_counter() - t0) / 60:.2f}\n")
        shutil.copy(curve, kept)
    return {**_curve_summary(kept), "minutes": float(minutes.read_text())}


def main(argv: list[str] | None = None) -> int:
    from presto_lib.stages.claims import BASELINES, Inputs, _samples
    from presto_lib.stages.common import results_root
    from presto_lib.stages.evaluation import make_evaluator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lever", action="append", required=True, help="name:key=value[,key=value] under presto_s")
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--presto-ls", nargs="*", default=[], metavar="LEVER",
                    help="levers whose recipe also runs the Presto-LS distillation (claims C8, C15)")
    ap.add_argument("--out", default="results/benchmarks")
    ap.add_argument("--name", default="presto_s_levers", help="stem of the output files")
    a = ap.parse_args(argv)
    P = yaml.safe_load(Path(a.params).read_text())
    levers = dict(map(parse_lever, a.lever))
    Qs = {n: lever_params(P, n, sets, a.iterations) for n, sets in levers.items()}
    run = P["presto_s"]["presto_s_run"]
    plots = Path(results_root(P)) / "plots"
    info = []
    for name, sets in levers.items():
        info.append({"lever": name, "change": ", ".join(f"{k}={v}" for k, v in sets.items()),
                     "iterations": int(Qs[name]["presto_s"]["train"]["iterations"]),
                     **_run(name, "", Qs[name], ["presto_lib.stages.presto_s", "--run", run, "--restart"],
                            plots / f"presto_s_{run}_learning_curve.csv")})
    for name in a.presto_ls:
        Q = ls_params(Qs[name])
        info.append({"lever": f"{name} Presto-LS", "change": "presto_ls.iterations = train.iterations",
                     "iterations": int(Q["presto_ls"]["iterations"]),
                     **_run(name, "_presto_ls", Q, ["presto_lib.stages.presto_ls", "distill"],
                            plots / "presto_ls_learning_curve.csv")})
    ev = make_evaluator(P, "presto_s", save=False)
    ref = ev.reference()
    I = Inputs(P, Path(results_root(P)), ref["audio"], float(ref["sigma"]), scorer=ev)
    baselines = {k: Path(d) if d else _samples(I, k) for k, d in BASELINES}     # C7's, as stages.claims.c7 reads them
    against = {"base": _samples(I, "base"), "committed": _samples(I, "presto_s"),
               **{k: d for k, d in baselines.items() if (d / "samples.csv").is_file()}}
    committed = {k: d for k, d in against.items() if k != "committed"}
    df = pd.concat([cell_rows(I, "committed", against["committed"], committed)]
                   + [cell_rows(I, n, lever_samples(Qs[n]), against) for n in levers]
                   + [cell_rows(I, f"{n} Presto-LS", ls_samples(ls_params(Qs[n])),
                                {"base": against["base"], "committed": against["committed"], n: lever_samples(Qs[n])})
                      for n in a.presto_ls], ignore_index=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{a.name}.csv", index=False)
    (out / f"{a.name}.md").write_text(markdown(df, pd.DataFrame(info), a.iterations) + "\n")
    print((out / f"{a.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
