"""Distribution and text-adherence metrics of section 4.1: FAD, MMD, CLAP score, precision/recall/density/coverage.

Every function takes embeddings (rows = clips) from one backbone (`presto_lib.eval.embeddings`) and returns floats.
Conventions follow the paper's references:
  FAD   Kilgour et al. 2019 (Frechet distance of Gaussians fitted to the two embedding sets), as in fadtk.
  MMD   Jayasumana et al. 2024 (CMMD): Gaussian RBF kernel, reported x1000.
  CLAP  Wu et al. 2023: mean cosine similarity of paired audio/text embeddings, x100.
  PRDC  Naeem et al. 2020: k-NN manifolds of the real set (density, coverage) and of both sets (precision, recall).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

MMD_SCALE = 1000.0  # CMMD reports MMD^2 x 1000 (Jayasumana et al. 2024, distance.py `_SCALE`).
CMMD_SIGMA = 10.0   # CMMD's bandwidth, chosen for unit-norm CLIP embeddings; valid for unit-norm CLAP embeddings.


# ---- helpers ----

def _as_2d(x, name: str) -> np.ndarray:
    """Embeddings as a float64 [N, D] array, with a clear error otherwise."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected embeddings of shape [N, D], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: embeddings contain NaN or inf")
    return a


def _same_dim(x: np.ndarray, y: np.ndarray) -> None:
    """Both embedding sets come from the same backbone."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding dims differ: {x.shape[1]} vs {y.shape[1]} (same backbone for both sets?)")


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances [len(x), len(y)], clipped at 0 against round-off."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


# ---- FAD ----

def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1) of an embedding set, the statistics FAD compares."""
    x = _as_2d(x, "x")
    if len(x) < 2:
        raise ValueError(f"need at least 2 embeddings for a covariance, got {len(x)}")
    return x.mean(0), np.cov(x, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigh (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1-mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), computed so it is real and >= 0.

    tr (C1 C2)^(1/2) = tr (C1^(1/2) C2 C1^(1/2))^(1/2): the right-hand matrix is symmetric PSD, so its square
    root comes from `eigh` with clipped eigenvalues - no complex parts, no `sqrtm` failures on singular
    covariances (which fadtk patches with an eps offset).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"inconsistent Gaussian stats: {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}")
    s1 = _psd_sqrt(cov1)
    w = np.linalg.eigvalsh(s1 @ cov2 @ s1)
    tr_covmean = np.sqrt(np.clip(w, 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_covmean)
    return max(d, 0.0)


def fad(x, y) -> float:
    """Frechet Audio Distance between two embedding sets [N, D] and [M, D] (lower is better)."""
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    _same_dim(x, y)
    return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))


# ---- MMD ----

def median_bandwidth(x) -> float:
    """Median pairwise Euclidean distance of a set: the RBF bandwidth we fix once per backbone and reference set."""
    x = _as_2d(x, "x")
    if len(x) < 2:
        raise ValueError("need at least 2 embeddings for a median distance")
    d = np.sqrt(_sq_dists(x, x)[np.triu_indices(len(x), 1)])
    return float(np.median(d))


def mmd(x, y, sigma: float | None = None, scale: float = MMD_SCALE) -> float:
    """Unbiased RBF-kernel MMD^2 x `scale` (CMMD, Jayasumana et al. 2024), k(a, b) = exp(-|a-b|^2 / (2 sigma^2)).

    Unbiased (U-statistic): the diagonal k(x_i, x_i) = 1 terms are left out, so for two samples of one
    distribution the expectation is exactly 0 (single estimates scatter around 0 and may be slightly negative).
    CMMD itself uses the biased V-statistic with sigma = 10 on unit-norm CLIP embeddings. `sigma=None` uses the
    median heuristic on the pooled sets (symmetric in x, y); `evaluate` instead fixes sigma per backbone from the
    reference split (`median_bandwidth`) so every system is scored with the same kernel.
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    _same_dim(x, y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"unbiased MMD needs >= 2 embeddings per set, got {len(x)} and {len(y)}")
    if sigma is None:
        sigma = median_bandwidth(np.concatenate([x, y]))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    g = 1.0 / (2.0 * sigma ** 2)
    n, m = len(x), len(y)
    kxx = np.exp(-g * _sq_dists(x, x))
    kyy = np.exp(-g * _sq_dists(y, y))
    kxy = np.exp(-g * _sq_dists(x, y))
    t_xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    t_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(scale * (t_xx + t_yy - 2.0 * kxy.mean()))


# ---- precision / recall / density / coverage ----

def prdc(real, fake, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN balls: `prdc.compute_prdc`."""
    import contextlib
    import io

    import joblib
    from prdc import compute_prdc

    real, fake = _as_2d(real, "real"), _as_2d(fake, "fake")
    _same_dim(real, fake)
    if not 1 <= k < min(len(real), len(fake)) - 1:      # compute_prdc partitions k + 1 neighbours (self included)
        raise ValueError(f"k={k} needs more than k + 1 embeddings in each set (got {len(real)} real, "
                         f"{len(fake)} fake)")
    # compute_prdc prints the set sizes; its distances ask joblib for 8 threads, whose start-up on 2 cores costs
    # ~30x the distances (110 vs 3.5 ms at 168 x 200, same values): bootstrap intervals call this hundreds of times
    with contextlib.redirect_stdout(io.StringIO()), joblib.parallel_config(backend="sequential"):
        out = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {key: float(out[key]) for key in ("precision", "recall", "density", "coverage")}


# ---- CLAP score ----

def paired_cosine(audio_emb, text_emb) -> np.ndarray:
    """Cosine similarity of each (audio_i, text_i) pair [N] (the per-sample score CLAP rejection sampling ranks)."""
    a, t = _as_2d(audio_emb, "audio_emb"), _as_2d(text_emb, "text_emb")
    if a.shape != t.shape:
        raise ValueError(f"audio and text embeddings must pair row by row, got {a.shape} and {t.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return (a * t).sum(1)


def clap_score(audio_emb, text_emb) -> float:
    """Mean cosine similarity x 100 of paired rows (audio_i, text_i) (higher is better)."""
    return float(100.0 * paired_cosine(audio_emb, text_emb).mean())


# ---- bootstrap ----

def bootstrap_ci(metric: Callable[..., float], *sets, n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
                 paired: bool = False, centered: bool = True) -> tuple[float, float, float]:
    """(estimate, low, high): a (1 - alpha) bootstrap interval of `metric(*sets)`, resampling each set's rows.

    A resample repeats clips (about 63% are distinct), which biases FAD and MMD upwards: their whole bootstrap
    distribution can sit above the estimate. With `centered=True` (default) the interval is the bootstrap
    spread placed around the estimate, [est - (mean - q_lo), est + (q_hi - mean)], which keeps the spread and
    drops that bias; `centered=False` gives the plain percentile interval [q_lo, q_hi] (same for unbiased
    means such as the CLAP score). `paired=True` resamples the same rows in every set (audio/text pairs).
    """
    if not sets:
        raise ValueError("bootstrap_ci needs at least one embedding set")
    arrs = [_as_2d(s, f"set {i}") for i, s in enumerate(sets)]
    if paired and len({len(a) for a in arrs}) != 1:
        raise ValueError("paired bootstrap needs sets of equal length")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        if paired:
            idx = rng.integers(0, len(arrs[0]), len(arrs[0]))
            vals.append(metric(*[a[idx] for a in arrs]))
        else:
            vals.append(metric(*[a[rng.integers(0, len(a), len(a))] for a in arrs]))
    est = float(metric(*arrs))
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    if centered:
        mean = float(np.mean(vals))
        lo, hi = est - (mean - lo), est + (hi - mean)
    return est, float(lo), float(hi)
