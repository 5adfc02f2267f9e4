"""Cells for the common claim shape "system A beats system B on these metrics", from per-system embeddings.

A system's evaluation is a dict of arrays over the SAME prompts in the same order (one row per prompt; a
leading run axis [S, ...] where a run is repeated):
    "audio"     [N, D]  backbone embeddings (FAD, MMD, PRDC)
    "clap"      [N]     per-clip CLAP score, 100 x cos(audio_i, text_i) (`per_clip_clap`)
    "prompt"    [N]     prompt keys (caption or prompt id) used to check the pairing
Set metrics use `claims.set_metric_diff_ci`, per-clip ones `claims.paired_diff_ci`; each cell's direction is
`claims.beats(metric)` (or its negation when the paper says A is worse).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from presto_lib.eval import metrics as M
from presto_lib.eval.claims import Comparison, beats, paired_diff_ci, set_metric_diff_ci

SET_METRICS = ("FAD", "MMD")
PRDC_METRICS = ("precision", "recall", "density", "coverage")


def per_clip_clap(audio_emb, text_emb) -> np.ndarray:
    """Per-clip CLAP score [N] (x100); its mean is `metrics.clap_score`."""
    return 100.0 * M.paired_cosine(audio_emb, text_emb)


def prdc_metric(name: str, k: int = 5) -> Callable[[np.ndarray, np.ndarray], float]:
    """`metric(gen, ref)` for one of precision/recall/density/coverage (Naeem et al. 2020), as `metrics.prdc`."""
    key = name.lower()
    if key not in PRDC_METRICS:
        raise ValueError(f"unknown PRDC metric {name!r}; one of {PRDC_METRICS}")
    return lambda gen, ref: M.prdc(ref, gen, k=min(k, len(gen) - 1, len(ref) - 1))[key]


def check_paired(prompts_a: Sequence, prompts_b: Sequence, what: str = "") -> None:
    """Raise unless both systems were prompted with the same prompts in the same order."""
    a, b = [str(p) for p in np.ravel(prompts_a)], [str(p) for p in np.ravel(prompts_b)]
    if a != b:
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise ValueError(f"{what or 'comparison'}: prompts differ (lengths {len(a)} / {len(b)}, first at {first});"
                         " a paired claim needs the same prompt set for every system")


def metric_cells(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], ref: np.ndarray | None,
                 metrics: Sequence[str] = ("FAD", "MMD", "CLAP"), *, a_better: bool = True, label: str = "",
                 n_boot: int = 300, seed: int = 0, mmd_sigma: float | None = None, k: int = 5) -> list[Comparison]:
    """One Comparison per metric of A - B on the same prompts; the paper's sign is "A beats B" (or worse).

    FAD/MMD and PRDC names resample prompt indices and recompute the set metric against `ref`; "CLAP" uses
    the per-clip scores a["clap"], b["clap"]. Cell names read "<label> <metric>". PRDC on a resample sees
    repeated clips (a repeat is its own nearest neighbour), so its replicates are biased; the centered interval
    keeps the spread around the full-set estimate.
    """
    if "prompt" in a and "prompt" in b:
        check_paired(a["prompt"], b["prompt"], label)
    cells = []
    for i, m in enumerate(metrics):
        sign = beats(m) if a_better else -beats(m)
        name = f"{label} {m}".strip()
        if m.upper() in SET_METRICS or m.lower() in PRDC_METRICS:
            if ref is None:
                raise ValueError(f"{m} needs reference embeddings")
            fn = m.upper() if m.upper() in SET_METRICS else prdc_metric(m, k)
            cells.append(set_metric_diff_ci(a["audio"], b["audio"], ref, direction=sign, metric=fn, name=name,
                                            n_boot=n_boot, seed=seed + i, mmd_sigma=mmd_sigma))
        elif m.upper().startswith("CLAP"):
            cells.append(paired_diff_ci(a["clap"], b["clap"], direction=sign, name=name, n_boot=max(n_boot, 2000),
                                        seed=seed + i))
        else:
            raise ValueError(f"unknown metric {m!r}: FAD, MMD, CLAP or one of {PRDC_METRICS}")
    return cells
