"""Cells for the common claim shape "system A beats system B on these metrics", from per-system embeddings.

A system's evaluation is a dict of arrays over the SAME prompts in the same order (one row per prompt; a
leading run axis [S, ...] where a run is repeated):
    "audio"     [N, D]  backbone embeddings (FAD, MMD, PRDC)
    "clap"      [N]     per-clip CLAP score, 100 x cos(audio_i, text_i) (`per_clip_clap`)
    "prompt"    [N]     prompt keys (caption or prompt id) used to check the pairing
Set metrics use `claims.set_metric_diff_ci`, per-clip ones `claims.paired_diff_ci`; each cell's direction is
`claims.beats(metric)` (or its negation when the paper says A is worse). The last-block variance spike (Figs. 4,
7) gets its own cells from per-clip hidden variances (`spike_table`, `spike_cells`, `spike_diff_cells`).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

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


# ---- the last-block variance spike (Fig. 4: claim C5; Fig. 7: claim C6) ----

SPIKE_COLUMNS = ("clip", "sigma", "var block L-1", "var block L", "spike ratio L / L-1")


def per_clip_hidden_variance(score_model, x0, cond: dict, sigmas: Sequence[float], generator=None) -> np.ndarray:
    """Variance of every block's output per clip, [N, len(sigmas), depth], on x0 + sigma eps (Figs. 4, 7).

    As `distill.layer_drop.hidden_variance` (the same noise draws from the same generator state), but each clip's
    variance is over its own tokens and channels, so a claim can pair clips across models.
    """
    import torch

    rows = []
    with torch.no_grad():
        for s in sigmas:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
            _, feats = score_model(x0 + float(s) * noise, torch.full((x0.shape[0],), float(s)), cond,
                                   return_features=True)
            rows.append(torch.stack([h.float().flatten(1).var(1) for h in feats], 1))      # [N, depth]
    return torch.stack(rows, 1).cpu().numpy()


def spike_table(var: np.ndarray, sigmas: Sequence[float]) -> pd.DataFrame:
    """One row per (clip, sigma) of per-clip variances [N, S, depth]: the last two blocks' variances and their ratio."""
    v = np.asarray(var, np.float64)
    if v.ndim != 3 or v.shape[1] != len(sigmas) or v.shape[2] < 2:
        raise ValueError(f"need variances [clips, {len(sigmas)} sigmas, depth >= 2], got {v.shape}")
    n, s = v.shape[:2]
    return pd.DataFrame({"clip": np.repeat(np.arange(n), s), "sigma": np.tile(np.asarray(sigmas, np.float64), n),
                         "var block L-1": v[:, :, -2].ravel(), "var block L": v[:, :, -1].ravel(),
                         "spike ratio L / L-1": (v[:, :, -1] / v[:, :, -2]).ravel()}, columns=SPIKE_COLUMNS)


def _log_spikes(table: pd.DataFrame) -> pd.DataFrame:
    """[clips x sigmas] log(var L / var L-1) of a `spike_table` (raises on a non-positive variance)."""
    missing = set(SPIKE_COLUMNS[:4]) - set(table.columns)
    if missing:
        raise ValueError(f"spike table lacks the columns {sorted(missing)}")
    if (table[["var block L-1", "var block L"]] <= 0).any().any():
        raise ValueError("spike table holds a non-positive variance")
    t = table.assign(log_spike=np.log(table["var block L"]) - np.log(table["var block L-1"]))
    return t.pivot(index="clip", columns="sigma", values="log_spike").sort_index()


def spike_cells(table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> list[Comparison]:
    """C5 (Fig. 4): per noise level, log var(L) - log var(L-1) paired over clips; > 0 means the last block spikes.

    One cell per sigma (the figure draws one line per noise level; the spike is "up to" 10x, so its size varies
    with sigma but its sign should not). The cell's values are the two blocks' mean log variances.
    """
    _log_spikes(table)                                                        # validates columns and positivity
    return [paired_diff_ci(np.log(g["var block L"].to_numpy()), np.log(g["var block L-1"].to_numpy()), direction=1,
                           name=f"sigma {s:g}: log var(L) - log var(L-1)", n_boot=n_boot, seed=seed + i)
            for i, (s, g) in enumerate(table.sort_values(["sigma", "clip"]).groupby("sigma"))]


def spike_diff_cells(model: pd.DataFrame, base: pd.DataFrame, *, name: str = "log spike (model) - log spike (base)",
                     n_boot: int = 2000, seed: int = 0) -> list[Comparison]:
    """C6 (Fig. 7): per clip, a model's log spike ratio minus the base model's, averaged over noise levels; paired
    over clips (the same test latents and noise for both), direction -1: the model's spike is smaller."""
    a, b = _log_spikes(model), _log_spikes(base)
    if list(a.index) != list(b.index) or list(a.columns) != list(b.columns):
        raise ValueError("spike tables must hold the same clips and noise levels")
    return [paired_diff_ci(a.mean(axis=1).to_numpy(), b.mean(axis=1).to_numpy(), direction=-1, name=name, n_boot=n_boot,
                           seed=seed)]
