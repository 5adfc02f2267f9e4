"""Listening test analysis (paper sec. 4.5, Fig. 12): unblind, means + 95% CIs, paired t-tests + Bonferroni.

The paper: "We run multiple paired t-tests with Bonferroni correction and find Presto-LS rates highest against
all baselines (p < 0.05)". Here the chosen system is compared with every other system by a paired t-test over
the unit of analysis, and each p-value is multiplied by the number of comparisons m (capped at 1):

- unit "rater" (default): each rater's mean rating of a system over the sets; pairs = raters. Raters are the
  independent units, so this is the conservative choice.
- unit "rater_set": every (rater, set) pair is a unit; more pairs, but ratings by one rater are correlated,
  so its p-values are optimistic. Reported only when asked for.

With no human ratings, `simulate_ratings` draws raters from a documented model (see its docstring); every
output made from them is labelled SIM_LABEL.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from presto_lib.eval.listening_server import RATING_COLUMNS

log = logging.getLogger(__name__)
SIM_LABEL = "simulated raters - not human data"
HUMAN_LABEL = "human raters"
UNITS = {"rater": ["rater"], "rater_set": ["rater", "set"]}


# ---- inputs ----


def load_key(kit_dir: str | os.PathLike) -> pd.DataFrame:
    """The kit's private key: blinded clip id -> set, system, prompt."""
    path = Path(kit_dir) / "key.csv"
    if not path.is_file():
        raise ValueError(f"{path} not found: the key is written by `listening build`")
    return pd.read_csv(path, dtype={"clip": str, "set": str})


def load_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """A ratings CSV (rater, set, clip, rating, timestamp), checked: ratings in [0, 100], no clip rated twice."""
    df = pd.read_csv(path, dtype={"rater": str, "set": str, "clip": str, "timestamp": str})
    missing = set(RATING_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    r = pd.to_numeric(df["rating"], errors="coerce")
    if r.isna().any() or not r.between(0, 100).all():
        raise ValueError(f"{path}: every rating must be a number in [0, 100]")
    if df.duplicated(["rater", "clip"]).any():
        raise ValueError(f"{path}: some rater rated a clip twice")
    return df.assign(rating=r.astype(float))


def unblind(ratings: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Attach each rating's system (and prompt) from the key; unknown clips or mismatched sets are errors."""
    unknown = set(ratings["clip"]) - set(key["clip"])
    if unknown:
        raise ValueError(f"{len(unknown)} rated clip ids are not in the key (ratings from another kit?): "
                         f"{sorted(unknown)[:5]}")
    df = ratings.merge(key[["clip", "set", "system", "prompt"]], on="clip", suffixes=("", "_key"))
    if (df["set"] != df["set_key"]).any():
        raise ValueError("some ratings name a set that does not hold their clip")
    return df.drop(columns="set_key")


def simulate_ratings(key: pd.DataFrame, n_raters: int, quality: Mapping[str, float], default_quality: float = 50.0,
                     rater_sd: float = 8.0, set_sd: float = 6.0, noise_sd: float = 12.0, seed: int = 0) -> pd.DataFrame:
    """Simulated raters (NOT human data): rating = clip(round(q[system] + b_rater + s_set + e), 0, 100).

    q[system] is the system's true quality (`quality`, else `default_quality`), b_rater ~ N(0, rater_sd) a
    rater's leniency, s_set ~ N(0, set_sd) how much a prompt's music pleases, e ~ N(0, noise_sd) per rating.
    Every rater rates every set (a complete design, like the paper's).
    """
    if n_raters < 2:
        raise ValueError(f"a paired t-test needs at least 2 raters, got {n_raters}")
    for s in sorted(set(key["system"]) - set(quality)):
        log.info("simulated raters: no quality given for %r, using %s", s, default_quality)
    rng = np.random.default_rng(seed)
    sets = sorted(key["set"].unique())
    b = dict(zip(range(n_raters), rng.normal(0, rater_sd, n_raters)))
    s_eff = dict(zip(sets, rng.normal(0, set_sd, len(sets))))
    rows = []
    for i in range(n_raters):
        for k in key.itertuples():
            q = float(quality.get(k.system, default_quality))
            r = q + b[i] + s_eff[k.set] + rng.normal(0, noise_sd)
            rows.append({"rater": f"sim{i + 1:02d}", "set": k.set, "clip": k.clip,
                         "rating": float(np.clip(np.round(r), 0, 100)), "timestamp": "simulated"})
    return pd.DataFrame(rows, columns=list(RATING_COLUMNS))


# ---- statistics ----


def unit_means(df: pd.DataFrame, unit: str = "rater") -> pd.DataFrame:
    """Mean rating per unit (rows) and system (columns); NaN where a unit did not rate a system."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {sorted(UNITS)}")
    return df.pivot_table(index=UNITS[unit], columns="system", values="rating", aggfunc="mean")


def summarize(df: pd.DataFrame, unit: str = "rater", confidence: float = 0.95) -> pd.DataFrame:
    """Per system: units, ratings, mean and a t-interval CI of the mean over units."""
    wide, rows = unit_means(df, unit), []
    for system in wide.columns:
        x = wide[system].dropna().to_numpy()
        n, m = len(x), float(np.mean(x))
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(x, ddof=1) / np.sqrt(n) if n > 1 else np.nan
        rows.append({"system": system, "n_units": n, "n_ratings": int((df["system"] == system).sum()),
                     "mean": m, "ci_low": m - half, "ci_high": m + half})
    return pd.DataFrame(rows).sort_values("mean", ascending=False, ignore_index=True)


def paired_tests(df: pd.DataFrame, chosen: str, unit: str = "rater", alternative: str = "two-sided",
                 alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-test of `chosen` vs every other system over units, with Bonferroni-corrected p-values.

    `scipy.stats.ttest_rel` over the units both systems were rated by: t = mean(d) / (sd(d) / sqrt(n)),
    d = chosen - other, dof = n - 1; alternative "greater" tests chosen > other. p_bonferroni = min(1, m * p)
    for m comparisons.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"unknown alternative {alternative!r}")
    wide = unit_means(df, unit)
    if chosen not in wide.columns:
        raise ValueError(f"chosen system {chosen!r} not among the rated systems {sorted(wide.columns)}")
    others = [s for s in wide.columns if s != chosen]
    rows = []
    for other in others:
        pair = wide[[chosen, other]].dropna()
        d = (pair[chosen] - pair[other]).to_numpy()
        n = len(d)
        t, p = np.nan, np.nan
        if n > 1 and np.std(d, ddof=1) > 0:
            res = stats.ttest_rel(pair[chosen].to_numpy(), pair[other].to_numpy(), alternative=alternative)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({"system": other, "vs": chosen, "n_pairs": n, "mean_diff": float(np.mean(d)) if n else np.nan,
                     "t": t, "dof": n - 1, "p": p})
    out = pd.DataFrame(rows, columns=["system", "vs", "n_pairs", "mean_diff", "t", "dof", "p"])
    out["p_bonferroni"] = np.minimum(1.0, out["p"] * len(others))
    out["significant"] = out["p_bonferroni"] < alpha
    return out


# ---- the whole analysis ----


@dataclass
class Result:
    """Unblinded ratings, summary, tests and the merged table, labelled human or simulated."""

    ratings: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    table: pd.DataFrame
    label: str
    chosen: str
    unit: str
    alternative: str


def analyse(df: pd.DataFrame, chosen: str, unit: str = "rater", alternative: str = "two-sided",
            alpha: float = 0.05, label: str = HUMAN_LABEL) -> Result:
    """Summary + paired tests of unblinded ratings, merged into the results table."""
    summary, tests = summarize(df, unit), paired_tests(df, chosen, unit, alternative, alpha)
    table = summary.merge(tests.drop(columns="n_pairs"), on="system", how="left")
    table["vs"] = table["vs"].fillna("")
    table["significant"] = table["significant"].map({True: "yes", False: "no"}).fillna("")
    table["data"] = label
    return Result(df, summary, tests, table, label, chosen, unit, alternative)


def run_analysis(kit_dir: str | os.PathLike, ratings_path: str | os.PathLike | None, L: Mapping[str, Any],
                 seed: int = 0) -> Result:
    """Analyse real ratings when `ratings_path` exists, else simulated raters (params' `listening.simulate`)."""
    key = load_key(kit_dir)
    if ratings_path and Path(ratings_path).is_file():
        ratings, label = load_ratings(ratings_path), HUMAN_LABEL
    else:
        log.warning("no ratings at %s: analysing SIMULATED raters (not human data)", ratings_path)
        S = L["simulate"]
        ratings = simulate_ratings(key, int(S["n_raters"]), S.get("quality") or {}, float(S["default_quality"]),
                                   float(S["rater_sd"]), float(S["set_sd"]), float(S["noise_sd"]), seed)
        label = SIM_LABEL
    return analyse(unblind(ratings, key), L["chosen"], L.get("unit", "rater"), L.get("alternative", "two-sided"),
                   float(L.get("alpha", 0.05)), label)


# ---- outputs ----


def write_table(res: Result, csv_path: str | os.PathLike) -> tuple[Path, Path]:
    """results/tables/listening_test.csv + .md (the Markdown names the data source and the test)."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    res.table.to_csv(csv_path, index=False, float_format="%.6g")
    m = len(res.tests)
    md = (f"# Listening test (paper sec. 4.5, Fig. 12)\n\n**Data: {res.label}.** Ratings 0-100; mean and 95% CI "
          f"over {res.unit.replace('_', ' x ')}s; paired t-tests ({res.alternative}) of **{res.chosen}** against each "
          f"other system over {res.unit.replace('_', ' x ')}s, Bonferroni-corrected (m = {m}).\n\n"
          + res.table.astype(object).where(res.table.notna(), None).to_markdown(
              index=False, floatfmt=".4g", missingval="") + "\n")
    md_path = csv_path.with_suffix(".md")
    md_path.write_text(md)
    return csv_path, md_path


def plot_violin(res: Result, path: str | os.PathLike) -> Path:
    """Fig. 12: a violin per system of all its ratings, its mean with 95% CI, and Bonferroni p vs the chosen."""
    import matplotlib.pyplot as plt

    from presto_lib.eval.plotting import display_name, save_figure

    order = [res.chosen] + [s for s in res.summary["system"] if s != res.chosen]
    data = [res.ratings.loc[res.ratings["system"] == s, "rating"].to_numpy() for s in order]
    summ = res.summary.set_index("system").loc[order]
    p = res.tests.set_index("system")["p_bonferroni"]
    fig, ax = plt.subplots(figsize=(1.6 * len(order) + 2, 4.2))
    parts = ax.violinplot(data, showextrema=False, widths=0.8)
    for i, body in enumerate(parts["bodies"]):
        body.set_facecolor("tab:red" if i == 0 else "tab:blue")
        body.set_alpha(0.45)
    x = np.arange(1, len(order) + 1)
    ax.errorbar(x, summ["mean"], yerr=[summ["mean"] - summ["ci_low"], summ["ci_high"] - summ["mean"]],
                fmt="o", color="k", capsize=4, label=f"mean, 95% CI over {res.unit.replace('_', ' x ')}s")
    for xi, s in zip(x[1:], order[1:]):
        stars = "***" if p[s] < 0.001 else "**" if p[s] < 0.01 else "*" if p[s] < 0.05 else "n.s."
        ax.text(xi, 103, f"{stars}\np={p[s]:.2g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [display_name(s) for s in order], rotation=15)
    ax.set_ylim(0, 118)
    ax.set_ylabel("rating (0-100)")
    n = res.ratings["rater"].nunique()
    title = f"Listening test (Fig. 12): {display_name(res.chosen)} vs others, paired t + Bonferroni (m={len(order) - 1}), {n} raters"
    ax.set_title(title + (f"\n{SIM_LABEL}" if res.label == SIM_LABEL else f"\n{res.label}"),
                 color="firebrick" if res.label == SIM_LABEL else "k")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, Path(path))
    plt.close(fig)
    return path
