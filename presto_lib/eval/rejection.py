"""CLAP rejection sampling (paper sec. 4.6, A.10, Fig. 13): generate a batch, reject the fraction r ranked worst.

Ranking function: the CLAP similarity of each generation to its own prompt (cosine of the paired audio and text
embeddings, `metrics.paired_cosine`). For a rejection ratio r a set of n candidates keeps exactly

    n_keep = n - floor(r n)          (r = 0 keeps all; r in [0, 1); at least one candidate always stays)

the n_keep highest-ranked; ties go to the earlier candidate (a stable sort), so the selection is deterministic.
With `groups` (e.g. one group per prompt holding its k candidates, Kim et al. 2023's per-prompt batch) the rule is
applied inside each group; without, over the whole set. `rejection_sweep` scores the kept set at every r with
`evaluate.score` (FAD, MMD, CLAP, precision, density, recall, coverage), one row per r, from embeddings computed
once. The paper's claim (A.10): CLAP rises with r, FAD / MMD are kept or improve, recall and coverage fall.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from presto_lib.eval import metrics as M
from presto_lib.eval.claims import Comparison, paired_diff_ci
from presto_lib.eval.evaluate import score

__all__ = ["n_keep", "reject", "clap_ranking", "rejection_sweep", "evaluator_sweep", "check_rejection_claims",
           "mean_pairwise_distance", "kept_vs_all", "rejection_cells"]

PAPER_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ---- the selection --------------------------------------------------------------------------------

def n_keep(n: int, r: float) -> int:
    """How many of n candidates survive rejection ratio r: n - floor(r n), at least 1."""
    if not 0.0 <= r < 1.0:
        raise ValueError(f"rejection ratio must lie in [0, 1), got {r}")
    if n < 1:
        raise ValueError(f"need at least one candidate, got {n}")
    return max(1, n - int(math.floor(r * n + 1e-9)))


def reject(scores: Sequence[float], r: float, groups: Sequence | None = None) -> np.ndarray:
    """Indices (ascending) of the candidates kept at ratio r: the n_keep best scores (per group when given)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(s).any():
        raise ValueError("ranking scores contain NaN")
    g = np.zeros(len(s), dtype=int) if groups is None else pd.factorize(np.asarray(groups))[0]
    if len(g) != len(s):
        raise ValueError(f"{len(s)} scores but {len(g)} group labels")
    kept = []
    for label in np.unique(g):
        idx = np.flatnonzero(g == label)
        order = np.argsort(-s[idx], kind="stable")         # best first; ties keep candidate order
        kept.append(idx[order[:n_keep(len(idx), r)]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=int)


def clap_ranking(clap_audio: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """The ranking function of sec. 4.6: CLAP cosine similarity of each generation to its own prompt."""
    return M.paired_cosine(clap_audio, text_emb)


# ---- Fig. 13: metrics against r ---------------------------------------------------------------------

def rejection_sweep(gen: dict[str, np.ndarray], text_emb: np.ndarray, ref: dict[str, np.ndarray],
                    ratios: Sequence[float] = PAPER_RATIOS, groups: Sequence | None = None,
                    ranking: np.ndarray | None = None, mmd_sigma: float | None = None, k: int = 5,
                    clap_name: str = "CLAP (corpus)") -> pd.DataFrame:
    """One `evaluate.score` row per r for the kept subset of the candidates.

    gen: {'audio': [N, D] backbone embeddings, 'clap_audio': [N, Dc]}; text_emb: [N, Dc] CLAP embeddings of each
    candidate's prompt; ref: {'audio': [M, D]} (e.g. `Evaluator.reference()`); ranking: scores to rank by
    (default: `clap_ranking`). Columns: r, n_kept, then FAD, MMD, the CLAP score, Precision, Density, Recall,
    Coverage.
    """
    if "clap_audio" not in gen:
        raise ValueError("gen needs 'clap_audio' embeddings: rejection ranks by CLAP (sec. 4.6)")
    text_emb = np.asarray(text_emb)
    if len(text_emb) != len(gen["audio"]) or len(gen["clap_audio"]) != len(gen["audio"]):
        raise ValueError(f"{len(gen['audio'])} candidates but {len(gen['clap_audio'])} CLAP and "
                         f"{len(text_emb)} text embeddings")
    rank = clap_ranking(gen["clap_audio"], text_emb) if ranking is None else np.asarray(ranking, dtype=np.float64)
    rows = []
    for r in ratios:
        idx = reject(rank, float(r), groups)
        if len(idx) < 2:
            raise ValueError(f"r = {r} keeps {len(idx)} candidate(s); FAD needs at least 2")
        sub = {key: np.asarray(v)[idx] for key, v in gen.items()}
        row = score(sub, ref, text_emb[idx], mmd_sigma, k, clap_name)
        rows.append({"r": float(r), "n_kept": int(len(idx)), "mean_rank_score": float(rank[idx].mean()),
                     **{key: v for key, v in row.items() if key != "n"}})
    return pd.DataFrame(rows)


def evaluator_sweep(ev, waves: list[np.ndarray], sample_rate: int, captions: Sequence[str],
                    ratios: Sequence[float] = PAPER_RATIOS, groups: Sequence | None = None,
                    gen: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """`rejection_sweep` for clips in memory with an `evaluate.Evaluator` (its backbone, CLAP, cached reference);
    `gen`: the clips' `ev.embed` when already computed."""
    if ev.clap is None:
        raise ValueError("the Evaluator has no CLAP model (clap=None): nothing to rank by")
    ref = ev.reference()
    gen = ev.embed(waves, sample_rate) if gen is None else gen
    return rejection_sweep(gen, ev.text_embeddings(list(captions)), ref, ratios, groups,
                           mmd_sigma=float(ref["sigma"]), k=ev.k, clap_name=ev.clap_name)


def check_rejection_claims(sweep: pd.DataFrame, clap_name: str = "CLAP (corpus)",
                           tolerance: float = 0.0) -> pd.DataFrame:
    """A.10's claims in numbers, comparing the largest r with r = 0: one row per claim with both values and `holds`.

    `tolerance`: relative slack for "FAD / MMD kept" (0.05 = up to 5 % worse still counts as kept).
    """
    if not {0.0} <= set(sweep["r"]):
        raise ValueError("the sweep needs an r = 0 row (the plain generator)")
    a, b = sweep.loc[sweep["r"] == 0.0].iloc[0], sweep.loc[sweep["r"].idxmax()]
    claims = [(clap_name, "rises", b[clap_name] > a[clap_name]),
              ("FAD", "kept or improves", b["FAD"] <= a["FAD"] * (1 + tolerance)),
              ("MMD", "kept or improves", b["MMD"] <= a["MMD"] + abs(a["MMD"]) * tolerance),
              ("Recall", "falls", b["Recall"] < a["Recall"]),
              ("Coverage", "falls", b["Coverage"] < a["Coverage"])]
    return pd.DataFrame([{"metric": m, "claim": c, "r0": float(a[m]), f"r{b['r']:g}": float(b[m]), "holds": bool(h)}
                         for m, c, h in claims if m in sweep])


# ---- per-prompt cells for the claims ledger (C11) --------------------------------------------------

def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Within-set spread: mean L2 distance over distinct pairs of rows (NaN with fewer than 2 rows)."""
    e = np.asarray(emb, dtype=np.float64).reshape(len(emb), -1)
    if len(e) < 2:
        return float("nan")
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    return float(d[~np.eye(len(e), dtype=bool)].mean())


def kept_vs_all(clip_clap: Sequence[float], emb: np.ndarray, groups: Sequence, kept: Sequence[int]) -> pd.DataFrame:
    """Per prompt (group): mean per-clip CLAP and embedding spread of the kept candidates and of all of them.

    Columns: prompt, clap_kept, clap_all, spread_kept, spread_all (spread = `mean_pairwise_distance`; NaN where a
    prompt keeps a single candidate). A.10: CLAP rises (clap_kept > clap_all), diversity falls (spread_kept <
    spread_all).
    """
    c, e = np.asarray(clip_clap, dtype=np.float64), np.asarray(emb, dtype=np.float64)
    g = np.asarray(groups)
    if not len(c) == len(e) == len(g):
        raise ValueError(f"{len(c)} CLAP scores, {len(e)} embeddings, {len(g)} group labels")
    keep = np.zeros(len(c), dtype=bool)
    keep[np.asarray(kept, dtype=int)] = True
    rows = []
    for label in pd.unique(g):
        m = g == label
        if not (keep & m).any():
            raise ValueError(f"prompt {label!r} keeps no candidate")
        rows.append({"prompt": label, "clap_kept": float(c[keep & m].mean()), "clap_all": float(c[m].mean()),
                     "spread_kept": mean_pairwise_distance(e[keep & m]), "spread_all": mean_pairwise_distance(e[m])})
    return pd.DataFrame(rows)


def rejection_cells(clip_clap: Sequence[float], emb: np.ndarray, groups: Sequence, ratios: Sequence[float],
                    ranking: Sequence[float] | None = None, n_boot: int = 2000) -> list[Comparison]:
    """C11's cells (A.10), paired over prompts: CLAP of kept - all at the largest r (direction +1), and the
    embedding spread of kept - all at the largest r that keeps >= 2 candidates per prompt (direction -1)."""
    rank = np.asarray(clip_clap if ranking is None else ranking, dtype=np.float64)
    rs = sorted(float(r) for r in ratios if float(r) > 0)
    if not rs:
        raise ValueError("need a rejection ratio r > 0")
    t = kept_vs_all(clip_clap, emb, groups, reject(rank, rs[-1], groups))
    cells = [paired_diff_ci(t.clap_kept, t.clap_all, direction=1, n_boot=n_boot,
                            name=f"CLAP: kept at r={rs[-1]:g} - all candidates")]
    for r in reversed(rs):
        t = kept_vs_all(clip_clap, emb, groups, reject(rank, r, groups))
        if np.isfinite(t.spread_kept).all():
            cells.append(paired_diff_ci(t.spread_kept, t.spread_all, direction=-1, n_boot=n_boot,
                                        name=f"diversity (mean pairwise distance): kept at r={r:g} - all"))
            break
    return cells
