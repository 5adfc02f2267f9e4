"""The `claims` stage: the claims ledger (C1-C15) from the pipeline's per-clip evaluations and tables.

Every claim is judged by the one rule of `eval.claims` (paired bootstrap interval, every cell). Inputs:
- per-clip evaluation data of every scored samples folder, data/evaluations/<stage>/<key>.npz (saved by
  `stages.evaluation.make_evaluator`); a folder nobody scored (e.g. a consistency baseline's data/samples/cm) is
  scored here when it exists;
- the reference embeddings (data/metrics/reference, through the evaluator);
- stage tables under <results>/tables: table3_latency.csv (raw timings, C10), fig04_variance_per_clip.csv (C5),
  noise_floor.csv (the ledger's header), and "cells" CSVs (columns CELL_COLUMNS: one row per judged cell)
  for claims made elsewhere: fig13_claim_cells.csv (C11), fig09_claim_cells.csv (C12), fig07_claim_cells.csv (C6);
- training logs data/presto_ls/{presto_ls/run, fig8/<setup>/run}/log.csv (C9).
A claim whose inputs are missing is `not run`, with the reason. Writes <results>/claims.md + claims.csv and, for
the committed profile, the README's findings block between the claims markers.

    python -m presto_lib.stages.claims
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from presto_lib.eval.claims import Comparison, paired_diff_ci, ratio_ci, trend_ci
from presto_lib.eval.claims_cells import check_paired, metric_cells, spike_cells
from presto_lib.eval.claims_ledger import CLAIMS, ClaimResult, claim, not_run, readme_snippet, splice_readme, \
    write_ledger
from presto_lib.stages.common import COMMITTED_PROFILE, atomic_path, start
from presto_lib.stages.evaluation import EVALUATIONS, load_evaluation, make_evaluator

__all__ = ["CELL_COLUMNS", "BASELINES", "Inputs", "BUILDERS", "build_all", "read_cells", "write_cells",
           "floor_header", "main"]

N_BOOT = 300
MIN_PROMPTS = 8            # fewer paired prompts give a degenerate bootstrap (n = 2 has 3 distinct resamples)
CELL_COLUMNS = ("name", "estimate", "lo", "hi", "direction", "n")      # + optional seeds, null
BASELINES = (("dmd_gan", None), ("cm", "data/samples/cm"), ("soundctm", "data/samples/soundctm"),
             ("ditto_ctm", "data/samples/ditto_ctm"))                  # C7; dmd_gan's folder comes from params
METRICS = ("FAD", "MMD", "CLAP")


class Missing(FileNotFoundError):
    """An input of a claim does not exist in this pipeline (the claim is `not run`)."""


@dataclass
class Inputs:
    """What the claim builders read: params, results root, reference embeddings and per-clip data."""
    P: dict[str, Any]
    results: Path
    ref: np.ndarray
    sigma: float | None = None
    scorer: Any = None                        # an Evaluator for folders nobody scored (None: none are scored)
    eval_root: Path = EVALUATIONS
    root: Path = Path(".")
    _cache: dict[str, dict] = field(default_factory=dict)

    def clips(self, samples_dir: str | Path) -> dict[str, np.ndarray]:
        """Per-clip data of a samples folder (raises Missing when it was neither generated nor scored)."""
        key = str(samples_dir)
        if key not in self._cache:
            d = load_evaluation(self.root / samples_dir, self.scorer, self.eval_root)
            if d is None:
                raise Missing(f"no evaluation of {samples_dir}")
            self._cache[key] = d
        return self._cache[key]

    def table(self, name: str) -> pd.DataFrame:
        """A stage table under <results>/tables (raises Missing)."""
        p = self.results / "tables" / name
        if not p.is_file():
            raise Missing(f"{p} not found")
        return pd.read_csv(p)

    def cells(self, a: str | Path, b: str | Path, metrics=METRICS, label: str = "", a_better: bool = True):
        """"A beats B" cells on the same prompts (`claims_cells.metric_cells`)."""
        A, B = _common_prefix(self.clips(a), self.clips(b))
        if len(A["prompt"]) < MIN_PROMPTS:
            raise Missing(f"{a} vs {b}: {len(A['prompt'])} shared prompts, fewer than {MIN_PROMPTS} for a bootstrap "
                          "interval (a profile this small checks the wiring only)")
        ms = [m for m in metrics if not m.upper().startswith("CLAP") or
              (np.isfinite(A["clap"]).all() and np.isfinite(B["clap"]).all())]
        return metric_cells(A, B, self.ref, ms, a_better=a_better, label=label, n_boot=N_BOOT,
                            mmd_sigma=self.sigma)


def _common_prefix(a: dict, b: dict) -> tuple[dict, dict]:
    """Both systems on their shared first prompts: every set is "the first N test prompts", so when one system was
    prompted with more, the first min(N_a, N_b) clips of each are paired (prompts checked by `metric_cells`)."""
    n = min(len(a["prompt"]), len(b["prompt"]))
    cut = lambda d: {k: (v[:n] if np.ndim(v) >= 1 else v) for k, v in d.items()}      # noqa: E731
    return cut(a), cut(b)


def read_cells(path: str | Path) -> list[Comparison]:
    """Cells written by another stage as a CSV with CELL_COLUMNS (+ optional seeds, null)."""
    df = pd.read_csv(path)
    missing = set(CELL_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks the cell columns {sorted(missing)} (needs {', '.join(CELL_COLUMNS)})")
    return [Comparison(str(r["name"]), float(r["estimate"]), float(r["lo"]), float(r["hi"]), int(r["direction"]),
                       int(r["n"]), int(r.get("seeds", 1) or 1), float(r.get("null", 0.0) or 0.0))
            for _, r in df.iterrows()]


def write_cells(cells: list[Comparison], path: str | Path) -> Path:
    """Write cells as the CSV `read_cells` reads (CELL_COLUMNS + seeds, null), atomically."""
    df = pd.DataFrame([{"name": c.name, "estimate": c.estimate, "lo": c.lo, "hi": c.hi, "direction": c.direction,
                        "n": c.n, "seeds": c.seeds, "null": c.null, "verdict": c.verdict} for c in cells],
                      columns=[*CELL_COLUMNS, "seeds", "null", "verdict"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


# ---- Presto-S runs (Table 1, Fig. 5) ----

def _run_settings(P: dict) -> dict[str, dict]:
    """Each Presto-S run's full Algorithm 1 settings (the defaults + its overrides)."""
    PS = P["presto_s"]
    return {r: {**PS["algorithm"], **(o or {})} for r, o in PS["runs"].items()}


def _run_dir(P: dict, run: str, steps: int | None = None) -> Path:
    PS = P["presto_s"]
    return Path(PS["out_dir"]) / run / f"steps_{steps or PS['table_steps']}"


def _same_except(sa: dict, sb: dict, keys: frozenset[str]) -> bool:
    """Two runs' settings agree on every key outside `keys`."""
    return all(sa.get(k) == sb.get(k) for k in set(sa) | set(sb) if k not in keys)


def _pairs(P: dict, key: str, a_val: Any, b_val: Any, also: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(A run, B run) pairs with A[key] = a_val, B[key] = b_val that differ in no other key outside `also`."""
    s = _run_settings(P)
    free = frozenset({key, *also})
    return [(a, b) for a, sa in s.items() for b, sb in s.items()
            if sa.get(key) == a_val and sb.get(key) == b_val and _same_except(sa, sb, free)]


def _paired_runs(I: Inputs, cid: str, key: str, a_val: Any, b_val: Any, also: frozenset[str] = frozenset(),
                 note: str = "") -> ClaimResult:
    """Cells of every evaluated pair of runs that differ only in `key` (and `also`); pairs without samples are named."""
    what = " and ".join([key, *sorted(also)])
    pairs = _pairs(I.P, key, a_val, b_val, also)
    if not pairs:
        raise Missing(f"no pair of presto_s.runs differs only in {what} ({key} {a_val} vs {b_val})")
    cells, skipped = [], []
    for a, b in pairs:
        try:
            cells += I.cells(_run_dir(I.P, a), _run_dir(I.P, b), label=f"{a} vs {b}")
        except Missing as e:
            skipped.append(f"{a} vs {b} ({e})")
    if not cells:
        raise Missing(f"no pair of runs differing only in {what} could be judged: {'; '.join(skipped)}")
    return ClaimResult(claim(cid), cells, "; ".join([*([note] if note else []),
                                                     *([f"pairs not judged: {'; '.join(skipped)}"] if skipped else [])]))


def c1(I: Inputs) -> ClaimResult:
    return _paired_runs(I, "C1", "p_dmd", "train", "inf")


def c2(I: Inputs) -> ClaimResult:
    # Table 1 (bottom): each NS row uses DMD2's discriminator head, each LS row ours, so ls_X vs ns_X differ in both
    return _paired_runs(I, "C2", "gan_loss", "ls", "ns", also=frozenset({"disc_head"}),
                        note="each pair differs in GAN loss and discriminator head together (LS + Presto-S head vs "
                             "NS + DMD2 head), as the paper's Table 1 rows do")


def _discrete_runs(P: dict) -> dict[int, str]:
    """k -> the run that is the Presto-S run with `discrete_levels: k` (and nothing else changed)."""
    s = _run_settings(P)
    cont = s[P["presto_s"]["presto_s_run"]]
    out: dict[int, str] = {}
    for r, sr in s.items():
        k = int(sr.get("discrete_levels") or 0)
        if k and _same_except(sr, cont, frozenset({"discrete_levels"})):
            out.setdefault(k, r)
    return out


def c3(I: Inputs) -> ClaimResult:
    # Fig. 5 / sec. 3.2.1: one discrete model per step budget (discrete_k, sampled only at its own k steps)
    PS = I.P["presto_s"]
    steps = [int(k) for k in PS["eval_steps"]]
    if len(steps) < 3:
        raise Missing(f"a trend needs >= 3 step counts, presto_s.eval_steps = {steps}")
    disc_runs = _discrete_runs(I.P)
    if set(steps) - set(disc_runs):
        raise Missing(f"no discrete run (presto_s run with discrete_levels: k) for k = "
                      f"{sorted(set(steps) - set(disc_runs))}")
    cont = [I.clips(_run_dir(I.P, PS["presto_s_run"], k)) for k in steps]
    disc = [I.clips(_run_dir(I.P, disc_runs[k], k)) for k in steps]
    n = min(len(d["prompt"]) for d in cont + disc)
    for k, d in zip(steps * 2, cont + disc):
        check_paired(cont[0]["prompt"][:n], d["prompt"][:n], f"C3 at {k} steps")
    cont_a, disc_a = [d["audio"][:n] for d in cont], [d["audio"][:n] for d in disc]
    runs = ", ".join(f"{disc_runs[k]} at {k}" for k in steps)
    return ClaimResult(claim("C3"), [trend_ci(cont_a, steps, direction=-1, ref=I.ref, metric=m, against=disc_a,
                                              name=f"rho({m}, steps) continuous - discrete", n_boot=N_BOOT,
                                              mmd_sigma=I.sigma) for m in ("FAD", "MMD")],
                       f"continuous: {PS['presto_s_run']} at {', '.join(map(str, steps))} steps; discrete: one model "
                       f"per budget ({runs} steps)")


# ---- Presto-L (Figs. 4, 6, 10) ----

def _pl_dir(I: Inputs, variant: str, steps: int) -> Path:
    """A Presto-L variant's (or the base model's) samples at `steps`: at the Table 2 budget its Table 2 folder (the
    curve folder's prompts and seeds first, then the rest of the base row's prompts), else the curve folder."""
    pl, base = I.P["presto_l"], I.P.get("base", {})
    table = pl.get("table_steps") or base.get("sample_steps")
    if table is not None and int(steps) == int(table):
        return Path(base["samples_dir"]) if variant == "base" else Path(pl["samples_dir"]) / variant
    return Path(pl["out_dir"]) / variant / f"steps_{steps}"


def c4(I: Inputs) -> ClaimResult:
    cells = []
    for k in (int(s) for s in I.P["presto_l"]["eval_steps"]):
        for other in ("base", "ase"):
            cells += I.cells(_pl_dir(I, "presto_l", k), _pl_dir(I, other, k), label=f"{k} steps vs {other}")
    return ClaimResult(claim("C4"), cells)


def c13(I: Inputs) -> ClaimResult:
    k = max(int(s) for s in I.P["presto_l"]["eval_steps"])
    cells = []
    for v in ("ase_shift", "ase_budget", "ase_st"):
        cells += I.cells(_pl_dir(I, v, k), _pl_dir(I, "ase", k), label=f"{v} vs ase ({k} steps)")
    return ClaimResult(claim("C13"), cells)


def c5(I: Inputs) -> ClaimResult:
    # Fig. 4: one line per noise level, the last block "up to an order of magnitude" above: > 1x at every sigma
    t = I.table("fig04_variance_per_clip.csv")
    cells = spike_cells(t)
    ratios = ", ".join(f"{np.exp(c.estimate):.2f}x" for c in cells)
    return ClaimResult(claim("C5"), cells, f"geometric-mean spike var(L) / var(L-1) per noise level: {ratios} "
                                           "(paper: up to ~10x); judged > 1x at every noise level")


def _cells_claim(I: Inputs, cid: str, table: str) -> ClaimResult:
    p = I.results / "tables" / table
    if not p.is_file():
        raise Missing(f"{p} not found (the stage making it is not in this pipeline yet)")
    return ClaimResult(claim(cid), read_cells(p))


# ---- Table 2 systems (C7, C8, C15) ----

def _samples(I: Inputs, system: str) -> Path:
    S = Path(I.P["presto_s"]["samples_dir"])
    if system == "presto_s":
        return S / f"presto_s_{I.P['presto_s']['presto_s_run']}"
    if system == "dmd_gan":
        return S / f"presto_s_{I.P['presto_s']['dmd_gan_run']}"
    return S / system


def c7(I: Inputs) -> ClaimResult:
    cells, missing = [], []
    for name, folder in BASELINES:
        d = Path(folder) if folder else _samples(I, name)
        try:
            cells += I.cells(_samples(I, "presto_s"), d, label=f"vs {name}")
        except Missing:
            missing.append(name)
    if not cells:
        raise Missing(f"no step-distillation baseline was evaluated ({', '.join(missing)})")
    return ClaimResult(claim("C7"), cells, f"baselines not run: {', '.join(missing)}" if missing else "")


def c8(I: Inputs) -> ClaimResult:
    ps = Path(I.P["presto_s"]["samples_dir"]) / f"presto_s_{I.P['presto_ls']['presto_s_run']}"
    return ClaimResult(claim("C8"), I.cells(_samples(I, "presto_ls"), ps, ("MMD", "recall"), label="Presto-LS vs S"))


def c15(I: Inputs) -> ClaimResult:
    return ClaimResult(claim("C15"), I.cells(_samples(I, "presto_ls"), _samples(I, "base"), ("MMD",),
                                             label="Presto-LS vs base"))


# ---- training dynamics and speed (C9, C10) ----

def _real_acc(path: Path) -> pd.Series:
    """The discriminator's real-data accuracy by logged step (training log.csv)."""
    if not path.is_file():
        raise Missing(f"{path} not found")
    log = pd.read_csv(path)
    if "d_real_acc" not in log.columns:
        raise Missing(f"{path} logs no d_real_acc")
    return log.dropna(subset=["d_real_acc"]).groupby("step")["d_real_acc"].mean()


def c9(I: Inputs) -> ClaimResult:
    LS = I.P["presto_ls"]
    out = Path("data/presto_ls")
    ref = _real_acc(out / "presto_ls" / "run" / "log.csv")
    cells = []
    for setup in (s for s in LS["fig8_setups"] if s in ("step_then_layer", "step_and_layer")):
        acc = _real_acc(out / "fig8" / setup / "run" / "log.csv")
        common = acc.index.intersection(ref.index)[-max(2, int(LS["fig8_last"])):]
        if len(common) < 2:
            raise Missing(f"{setup} and Presto-LS share fewer than 2 logged steps")
        cells.append(paired_diff_ci(acc[common].to_numpy(), ref[common].to_numpy(), direction=1,
                                    name=f"{setup} - Presto-LS real-data accuracy"))
    if not cells:
        raise Missing("presto_ls.fig8_setups runs neither step_then_layer nor step_and_layer")
    return ClaimResult(claim("C9"), cells)


def _runs_s(row: pd.Series, column: str = "latency_runs_s") -> np.ndarray:
    """A table row's raw per-round timings (seconds, space-separated)."""
    return np.array([float(x) for x in str(row[column]).split()])


def _row(t: pd.DataFrame, system: str) -> pd.Series:
    """The table3_latency.csv row of `system` (raises Missing)."""
    rows = t[t["system"] == system]
    if rows.empty:
        raise Missing(f"table3_latency.csv has no row {system!r}")
    return rows.iloc[0]


def c10(I: Inputs) -> ClaimResult:
    # Table 3 (b = 1): base at the paper's budget (DPM-2S, 2 x base_paper_steps - 1 NFE) vs Presto-LS, and Presto-L
    # vs base on the same sampler and budget (the per-step speed-up)
    t = I.table("table3_latency.csv")
    if not {"latency_runs_s", "generation_runs_s"} <= set(t.columns):
        raise Missing("table3_latency.csv keeps medians only (no latency_runs_s / generation_runs_s columns: "
                      "rerun the tables34 stage)")
    nfe = 2 * int(I.P["artefacts"]["base_paper_steps"]) - 1
    base = _row(t, f"Base DM ({nfe} NFE)")
    cells = [ratio_ci(_runs_s(base), _runs_s(_row(t, "Presto-LS")), threshold=10.0,
                      name=f"base ({nfe} NFE) / Presto-LS mono latency (>= 10x)"),
             ratio_ci(_runs_s(base, "generation_runs_s"), _runs_s(_row(t, "Presto-L"), "generation_runs_s"),
                      threshold=1.0, name=f"base / Presto-L generation time, both {nfe} NFE (> 1x)")]
    return ClaimResult(claim("C10"), cells, "medians of repeated rounds, resampled per system (ratio_ci); Presto-L "
                                            "by generation time at equal steps, i.e. the per-step speed-up (paper: "
                                            "+27% RTF), judged faster (> 1x)")


def c14(I: Inputs) -> ClaimResult:
    return not_run("C14", "only human ratings count; the listening kit has simulated raters only")


BUILDERS: dict[str, Callable[[Inputs], ClaimResult]] = {
    "C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5,
    "C6": lambda I: _cells_claim(I, "C6", "fig07_claim_cells.csv"), "C7": c7, "C8": c8, "C9": c9, "C10": c10,
    "C11": lambda I: _cells_claim(I, "C11", "fig13_claim_cells.csv"),
    "C12": lambda I: _cells_claim(I, "C12", "fig09_claim_cells.csv"), "C13": c13, "C14": c14, "C15": c15}


def build_all(I: Inputs, log: Callable[[str], None] = print) -> list[ClaimResult]:
    """Every registered claim: its cells, or `not run` with the reason its inputs are missing or unusable."""
    out = []
    for c in CLAIMS:
        try:
            out.append(BUILDERS[c.id](I))
        except (Missing, ValueError, KeyError) as e:
            log(f"{c.id}: not run: {e}")
            out.append(not_run(c.id, f"not run: {type(e).__name__}: {e}" if not isinstance(e, Missing)
                               else f"not run: {e}"))
    return out


def floor_header(table: pd.DataFrame | None) -> str:
    """The ledger's header line: the smallest effect each metric resolves (two seeds of the base model)."""
    if table is None or table.empty:
        return "Noise floor: not measured (the `noise_floor` stage did not run).\n\n"
    parts = [f"{r['metric']} +/- {r['half_width']:.3g}" for _, r in table.iterrows()]
    return (f"Noise floor (the base model sampled with two seeds, n = {int(table['n'].iloc[0])} prompts): the "
            f"smallest resolvable effect is {', '.join(parts)} (95% half-widths of seed 1 - seed 2).\n\n")


def main(argv: list[str] | None = None) -> int:
    """CLI: build every claim, write the ledger, splice the README (committed profile only)."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.claims", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("claims", a.params, threads=1)
    ev = make_evaluator(S.P, "presto_s", save=False)
    ref = ev.reference()
    I = Inputs(S.P, S.results, ref["audio"], float(ref["sigma"]), scorer=ev)
    floor = S.tables / "noise_floor.csv"
    md, csv_path = write_ledger(build_all(I, S.log.info), S.results,
                                header=floor_header(pd.read_csv(floor) if floor.is_file() else None))
    if S.profile == COMMITTED_PROFILE:
        readme = Path("README.md")
        readme.write_text(splice_readme(readme.read_text(), readme_snippet(csv_path)))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
