"""The one verdict rule for every paper claim: a paired difference, a bootstrap interval, a three-way verdict.

A *cell* is one comparison of system A against system B on the SAME prompts (and, where a run is repeated, the
same seeds): per-clip values (a CLAP cosine, a per-prompt metric contribution) or a set metric (FAD, MMD) that
is recomputed on each resample. Its `Comparison` holds the estimate of A - B (or a trend, or a ratio), a
(1 - alpha) bootstrap interval, and the paper's sign:

    verdict  reproduced    the interval excludes `null` (0 for a difference) on the paper's side,
             contradicted  the interval excludes `null` on the other side,
             unresolved    otherwise (the run is too small to tell at this scale).

`direction` is +1 when the paper says A - B > null, -1 when it says A - B < null; "A beats B on a metric" is
`direction=beats(metric)` (-1 for FAD/MMD, lower is better; +1 for CLAP, density, recall, coverage).

Resampling: clips (prompt indices) are drawn with replacement, the SAME draw for both systems (the pairing);
with repeated runs ([S, N] per-clip values, [S, N, D] embeddings) seeds are drawn first, then clips (a two-level
bootstrap: runs and prompts both vary). Set metrics (FAD, MMD) are recomputed on each paired resample, fully
vectorised (FAD through a cross-Gram nuclear norm, MMD through kernel quadratic forms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from presto_lib.eval import metrics as M

REPRODUCED, CONTRADICTED, UNRESOLVED, NOT_RUN = "reproduced", "contradicted", "unresolved", "not run"
LOWER_IS_BETTER = ("fad", "mmd", "latency")


# ---- the verdict ----

def beats(metric: str) -> int:
    """Sign of A - B when A beats B on `metric`: -1 for FAD/MMD/latency (lower is better), +1 otherwise."""
    return -1 if any(metric.lower().startswith(m) for m in LOWER_IS_BETTER) else 1


def verdict(lo: float, hi: float, direction: int, null: float = 0.0) -> str:
    """Reproduced if [lo, hi] excludes `null` on the side of `direction`, contradicted if on the other side."""
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"invalid interval [{lo}, {hi}]")
    if direction * (lo - null) > 0 and direction * (hi - null) > 0:
        return REPRODUCED
    if direction * (lo - null) < 0 and direction * (hi - null) < 0:
        return CONTRADICTED
    return UNRESOLVED


@dataclass(frozen=True)
class Comparison:
    """One cell: estimate of A - B (or a trend / ratio), its bootstrap interval and the paper's sign."""
    name: str
    estimate: float
    lo: float
    hi: float
    direction: int
    n: int                              # prompts (clips per run)
    seeds: int = 1                      # runs per system (max of the two)
    null: float = 0.0                   # 0 for differences and trends, the claimed factor for ratios
    values: tuple[float, float] | None = None   # the two systems' own values (A, B), when meaningful
    alpha: float = 0.05

    def __post_init__(self):
        verdict(self.lo, self.hi, self.direction, self.null)  # validates direction and interval

    @property
    def verdict(self) -> str:
        return verdict(self.lo, self.hi, self.direction, self.null)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def aggregate(cells: Sequence[Comparison]) -> str:
    """Every-cell rule for claims over several budgets / metrics / baselines.

    Exact rule: no cells -> "not run"; any cell contradicted -> "contradicted"; else every cell reproduced ->
    "reproduced"; else "unresolved". A majority is never enough. Requiring every cell is an intersection-union
    test, valid at `alpha` without correction; "any contradicted" is not corrected for multiplicity (with k cells
    the chance of a false contradiction is at most k * alpha / 2), so a contradiction from one cell of many is
    weaker evidence than one from a single-cell claim.
    """
    if not cells:
        return NOT_RUN
    vs = [c.verdict for c in cells]
    if CONTRADICTED in vs:
        return CONTRADICTED
    return REPRODUCED if all(v == REPRODUCED for v in vs) else UNRESOLVED


# ---- resampling helpers ----

def _runs(x, name: str, ndim: int) -> np.ndarray:
    """Per-run data as float64 with a leading run axis: [S, N] values or [S, N, D] embeddings."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == ndim - 1:
        a = a[None]
    if a.ndim != ndim or a.shape[1] < 2:
        raise ValueError(f"{name}: expected shape {'[S, N, D] or [N, D]' if ndim == 3 else '[S, N] or [N]'} "
                         f"with N >= 2, got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _draw(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """[n_boot, n] indices drawn with replacement."""
    return rng.integers(0, n, (n_boot, n))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """[B, n] multiplicities of each row in each resample."""
    b = len(idx)
    return np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _seed_average(per_run: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
    """[S, B] replicate values per run -> [B] averaged over each replicate's resampled runs."""
    return np.take_along_axis(per_run.T, seed_idx, axis=1).mean(1)


def _seed_draws(rng: np.random.Generator, n_boot: int, sa: int, sb: int) -> tuple[np.ndarray, np.ndarray]:
    """Run indices per replicate; shared when both systems have the same runs (seed k of A pairs seed k of B)."""
    ia = _draw(rng, n_boot, sa)
    return ia, (ia if sa == sb else _draw(rng, n_boot, sb))


def _interval(reps: np.ndarray, est: float, alpha: float, centered: bool) -> tuple[float, float]:
    """Percentile interval of the replicates, or (centered) their spread placed around the estimate."""
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    if centered:
        mean = float(np.mean(reps))
        lo, hi = est - (mean - lo), est + (hi - mean)
    return float(lo), float(hi)


# ---- per-clip paired difference ----

def paired_diff_ci(a, b, *, direction: int, name: str = "", n_boot: int = 2000, alpha: float = 0.05,
                   seed: int = 0) -> Comparison:
    """Mean of per-clip values A - B over the same prompts, [N] or [S, N] per system, with a paired bootstrap.

    Clips are resampled jointly for A and B; with S > 1 runs, runs are resampled first (two-level bootstrap).
    Percentile interval (a mean is unbiased under resampling).
    """
    A, B = _runs(a, "a", 2), _runs(b, "b", 2)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"paired comparison needs the same prompts: {A.shape[1]} vs {B.shape[1]} clips")
    n = A.shape[1]
    rng = np.random.default_rng(seed)
    idx = _draw(rng, n_boot, n)
    sa, sb = _seed_draws(rng, n_boot, len(A), len(B))
    ma = _seed_average(A[:, idx].mean(2), sa)                  # [S, B, N] -> [S, B] -> [B]
    mb = _seed_average(B[:, idx].mean(2), sb)
    va, vb = float(A.mean()), float(B.mean())
    lo, hi = _interval(ma - mb, va - vb, alpha, centered=False)
    return Comparison(name, va - vb, lo, hi, direction, n, max(len(A), len(B)), values=(va, vb), alpha=alpha)


# ---- set metrics (FAD, MMD) on paired resamples ----

def _weighted_stats(x: np.ndarray, w: np.ndarray, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Mean [B, D] and ddof=1 covariance [B, D, D] of each resample (rows of x repeated w times)."""
    n = x.shape[0]
    mu = w @ x / n
    cov = np.empty((len(w), x.shape[1], x.shape[1]))
    for s in range(0, len(w), chunk):
        ws = w[s:s + chunk]
        cov[s:s + chunk] = np.matmul((x[None] * ws[:, :, None]).transpose(0, 2, 1), x)
    cov -= n * mu[:, :, None] * mu[:, None, :]
    return mu, cov / (n - 1)


def _batched_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric PSD square roots of [B, D, D] (eigh, round-off negatives clipped), as metrics._psd_sqrt."""
    w, v = np.linalg.eigh((c + c.transpose(0, 2, 1)) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))[:, None, :]) @ v.transpose(0, 2, 1)


def _batched_fad(mu, cov, mu_r, cov_r, sqrt_r) -> np.ndarray:
    """Frechet distances [B] as metrics.frechet_distance: tr (C_r^1/2 C C_r^1/2)^1/2 via batched eigvalsh."""
    w = np.linalg.eigvalsh(sqrt_r @ cov @ sqrt_r)
    tr_mean = np.sqrt(np.clip(w, 0, None)).sum(-1)
    d = ((mu - mu_r) ** 2).sum(-1) + np.trace(cov, axis1=1, axis2=2) + np.trace(cov_r, axis1=1, axis2=2) - 2 * tr_mean
    return np.maximum(d, 0.0)


def _fad_replicates(g: np.ndarray, r: np.ndarray, w: np.ndarray, wr: np.ndarray) -> np.ndarray:
    """FAD [B] of each weighted resample of g against r (rows repeated w / wr times), as `metrics.fad`.

    No D x D matrix: with centred rows Gc, Rc, C_g = Gc^T W Gc / (n-1) and C_r = Rc^T W_r Rc / (m-1), so
    tr (C_r^1/2 C_g C_r^1/2)^1/2 is the nuclear norm of H = W_r^1/2 Rc Gc^T W^1/2 / sqrt((n-1)(m-1)) [m, n],
    i.e. the sum of sqrt(eigvalsh(H H^T)); Rc Gc^T comes from one cross-Gram R G^T shared by every resample.
    """
    n, m = len(g), len(r)
    mu, mu_r = w @ g / n, wr @ r / m                                             # [B, D]
    tr_g = (w @ (g * g).sum(1) - n * (mu ** 2).sum(1)) / (n - 1)                # tr C_g
    tr_r = (wr @ (r * r).sum(1) - m * (mu_r ** 2).sum(1)) / (m - 1)
    k = r @ g.T                                                                  # [m, n]
    a, b, c = w @ k.T / n, wr @ k / m, (mu_r * mu).sum(1)                       # r_i.mu, mu_r.g_j, mu_r.mu
    nuc = np.empty(len(w))
    step = max(1, int(2e7 // (m * n)))
    for s in range(0, len(w), step):
        kc = k[None] - a[s:s + step, :, None] - b[s:s + step, None, :] + c[s:s + step, None, None]
        h = np.sqrt(wr[s:s + step])[:, :, None] * kc * np.sqrt(w[s:s + step])[:, None, :]
        hh = h @ h.transpose(0, 2, 1) if m <= n else h.transpose(0, 2, 1) @ h
        nuc[s:s + step] = np.sqrt(np.clip(np.linalg.eigvalsh(hh), 0, None)).sum(-1)
    d = ((mu - mu_r) ** 2).sum(1) + tr_g + tr_r - 2 * nuc / np.sqrt((n - 1) * (m - 1))
    return np.maximum(d, 0.0)


def _rbf(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(((x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T).clip(0)) / (2 * sigma ** 2))


def set_metric_replicates(gens: Sequence[np.ndarray], ref: np.ndarray, idx: np.ndarray, idx_ref: np.ndarray,
                          metric: str | Callable = "FAD", mmd_sigma: float | None = None) -> np.ndarray:
    """[K, B] values of `metric(gens[k][idx[b]], ref[idx_ref[b]])`: every set resampled with the same prompts.

    "FAD" and "MMD" (unbiased, x1000, as `metrics.fad` / `metrics.mmd`; sigma fixed, default the reference's
    median distance as in `evaluate`) are vectorised; a callable `metric(gen, ref) -> float` is looped.
    """
    ref = np.asarray(ref, np.float64)
    gens = [np.asarray(g, np.float64) for g in gens]
    if callable(metric):
        return np.array([[metric(g[i], ref[j]) for i, j in zip(idx, idx_ref)] for g in gens])
    key = metric.upper()
    n, m = idx.shape[1], idx_ref.shape[1]
    w, wr = _counts(idx, gens[0].shape[0]), _counts(idx_ref, len(ref))
    if key == "FAD":
        shift = ref.mean(0)                                     # FAD is shift-invariant; centring keeps it accurate
        r = ref - shift
        if r.shape[1] >= min(n, m):                             # wide embeddings: cross-Gram of the prompts
            return np.array([_fad_replicates(g - shift, r, w, wr) for g in gens])
        mu_r, cov_r = _weighted_stats(r, wr)                    # narrow: D x D moments, reference root once
        sq = _batched_sqrt(cov_r)
        return np.array([_batched_fad(*_weighted_stats(g - shift, w), mu_r, cov_r, sq) for g in gens])
    if key == "MMD":
        sigma = float(mmd_sigma) if mmd_sigma else M.median_bandwidth(ref)
        t_rr = (np.einsum("bi,ij,bj->b", wr, _rbf(ref, ref, sigma), wr) - m) / (m * (m - 1))
        out = []
        for g in gens:                                          # U-statistic: resampled positions i != j
            t_gg = (np.einsum("bi,ij,bj->b", w, _rbf(g, g, sigma), w) - n) / (n * (n - 1))
            t_gr = np.einsum("bi,ij,bj->b", w, _rbf(g, ref, sigma), wr) / (n * m)
            out.append(M.MMD_SCALE * (t_gg + t_rr - 2 * t_gr))
        return np.array(out)
    raise ValueError(f"unknown set metric {metric!r}: 'FAD', 'MMD' or a callable")


def _point_values(gens: Sequence[np.ndarray], ref: np.ndarray, metric, mmd_sigma) -> np.ndarray:
    """[K] metric values on the full sets (identity resample)."""
    n, m = len(gens[0]), len(ref)
    return set_metric_replicates(gens, ref, np.arange(n)[None], np.arange(m)[None], metric, mmd_sigma)[:, 0]


def _run_stack(x, name: str) -> np.ndarray:
    return _runs(x, name, 3)


def set_metric_diff_ci(gen_a, gen_b, ref, *, direction: int, metric: str | Callable = "FAD", name: str = "",
                       n_boot: int = 300, alpha: float = 0.05, seed: int = 0, resample_ref: bool = True,
                       mmd_sigma: float | None = None, centered: bool = True) -> Comparison:
    """metric(A, ref) - metric(B, ref) with a paired bootstrap over prompts (A and B: [N, D] or [S, N, D]).

    Each replicate draws one set of prompt indices for both systems (and, with `resample_ref`, one resample of
    the reference shared by both), so the interval is on the difference itself, not on two separate metrics.
    With S runs per system the estimate averages the per-run metric and runs are resampled (two-level).
    `centered` (default) places the bootstrap spread around the estimate, dropping the upward bias repeated
    clips give FAD/MMD (see `metrics.bootstrap_ci`). Calibration (Gaussian checks in tests/test_claims.py): close
    to nominal when both systems sit off the reference, as generated sets do; conservative in the degenerate case
    where A, B and the reference share one distribution (the bootstrap over-disperses a statistic with zero
    first derivative there).
    """
    A, B = _run_stack(gen_a, "gen_a"), _run_stack(gen_b, "gen_b")
    ref = np.asarray(ref, np.float64)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"paired comparison needs the same prompts: {A.shape[1]} vs {B.shape[1]} clips")
    if ref.ndim != 2 or ref.shape[1] != A.shape[2] or A.shape[2] != B.shape[2]:
        raise ValueError(f"embedding dims differ: {A.shape}, {B.shape}, ref {ref.shape}")
    n, m = A.shape[1], len(ref)
    rng = np.random.default_rng(seed)
    idx = _draw(rng, n_boot, n)
    idx_ref = _draw(rng, n_boot, m) if resample_ref else np.broadcast_to(np.arange(m), (n_boot, m))
    sa, sb = _seed_draws(rng, n_boot, len(A), len(B))
    reps = set_metric_replicates([*A, *B], ref, idx, idx_ref, metric, mmd_sigma)     # [Sa + Sb, B]
    point = _point_values([*A, *B], ref, metric, mmd_sigma)
    va, vb = float(point[:len(A)].mean()), float(point[len(A):].mean())
    diff = _seed_average(reps[:len(A)], sa) - _seed_average(reps[len(A):], sb)
    lo, hi = _interval(diff, va - vb, alpha, centered)
    return Comparison(name, va - vb, lo, hi, direction, n, max(len(A), len(B)), values=(va, vb), alpha=alpha)


# ---- trends (rank / curve claims) ----

def _spearman_rows(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of y [B, K] with x [K] (average ranks for ties; 0 for a constant row)."""
    ry, rx = rankdata(y, axis=1), rankdata(x)
    ry, rx = ry - ry.mean(1, keepdims=True), rx - rx.mean()
    den = np.sqrt((ry ** 2).sum(1) * (rx ** 2).sum())
    return np.divide(ry @ rx, den, out=np.zeros(len(ry)), where=den > 0)


def _curve_replicates(curve, idx, idx_ref, ref, metric, mmd_sigma) -> tuple[np.ndarray, np.ndarray]:
    """Point values [K] and replicate values [B, K] of a curve: per-clip means ([K, N]) or a set metric per cell."""
    if ref is None:
        c = np.asarray(curve, np.float64)
        if c.ndim != 2:
            raise ValueError(f"per-clip curve must be [K, N], got {c.shape}")
        return c.mean(1), c[:, idx].mean(2).T
    gens = [np.asarray(g, np.float64) for g in curve]
    return (_point_values(gens, ref, metric, mmd_sigma),
            set_metric_replicates(gens, ref, idx, idx_ref, metric, mmd_sigma).T)


def trend_ci(curve, x, *, direction: int, ref=None, metric: str | Callable = "FAD", against=None,
             name: str = "", n_boot: int = 300, alpha: float = 0.05, seed: int = 0,
             mmd_sigma: float | None = None) -> Comparison:
    """Spearman correlation of a metric with `x` (e.g. steps) across K cells on the same prompts, bootstrap CI.

    `curve`: per-clip values [K, N] (ref None) or K embedding sets [N, D] scored by `metric` against `ref`.
    `against` (a second curve on the same prompts): the estimate is rho(curve) - rho(against), e.g. "continuous
    inputs improve with steps more consistently than discrete ones". Prompts are resampled jointly across cells
    (and curves); percentile interval. With K points rho moves in steps of 6 / (K^3 - K).
    """
    x = np.asarray(x, np.float64)
    n = len(curve[0])
    if len(curve) != len(x) or len(x) < 3:
        raise ValueError(f"need >= 3 cells and one x per cell, got {len(curve)} cells and {len(x)} x")
    rng = np.random.default_rng(seed)
    idx = _draw(rng, n_boot, n)
    idx_ref = None if ref is None else _draw(rng, n_boot, len(ref))
    p, r = _curve_replicates(curve, idx, idx_ref, ref, metric, mmd_sigma)
    est, reps = float(_spearman_rows(p[None], x)[0]), _spearman_rows(r, x)
    vals = None
    if against is not None:
        if len(against[0]) != n or len(against) != len(x):
            raise ValueError("`against` must have the same cells and prompts as `curve`")
        pa, ra = _curve_replicates(against, idx, idx_ref, ref, metric, mmd_sigma)
        rho_b = float(_spearman_rows(pa[None], x)[0])
        vals, est, reps = (est, rho_b), est - rho_b, reps - _spearman_rows(ra, x)
    lo, hi = _interval(reps, est, alpha, centered=False)
    return Comparison(name, est, lo, hi, direction, n, values=vals, alpha=alpha)


# ---- ratios (speed-up claims) ----

def ratio_ci(slow, fast, *, threshold: float = 1.0, direction: int = 1, name: str = "", n_boot: int = 2000,
             alpha: float = 0.05, seed: int = 0, stat: Callable = np.median) -> Comparison:
    """Speed-up stat(slow) / stat(fast) from repeated timings (resampled independently), judged against `threshold`.

    "A is at least X times faster than B": slow = B's timings, fast = A's, threshold X, direction +1.
    """
    s, f = np.asarray(slow, np.float64).ravel(), np.asarray(fast, np.float64).ravel()
    if len(s) < 2 or len(f) < 2 or (s <= 0).any() or (f <= 0).any():
        raise ValueError("ratio_ci needs >= 2 positive timings per system")
    rng = np.random.default_rng(seed)
    rs = stat(s[_draw(rng, n_boot, len(s))], axis=1) / stat(f[_draw(rng, n_boot, len(f))], axis=1)
    est = float(stat(s) / stat(f))
    lo, hi = _interval(rs, est, alpha, centered=False)
    return Comparison(name, est, lo, hi, direction, min(len(s), len(f)), null=threshold,
                      values=(float(stat(s)), float(stat(f))), alpha=alpha)


# ---- noise floor (DESIGN.md "How a claim is judged") ----

def noise_floor(run_1, run_2, ref=None, *, metric: str | Callable = "FAD", n_boot: int = 300, alpha: float = 0.05,
                seed: int = 0, mmd_sigma: float | None = None) -> dict[str, float]:
    """The smallest effect a run resolves: one model sampled twice (two seeds, same prompts) compared with itself.

    The true difference is 0, so the interval's half-width is the resolution: an effect smaller than it cannot
    exclude zero with this many prompts. Per-clip values ([N], ref None) or embeddings ([N, D], set metric vs ref).
    For set metrics also reports metric(run_1, run_2), the distance between the two seeds' sets.
    """
    if ref is None:
        c = paired_diff_ci(run_1, run_2, direction=1, n_boot=n_boot, alpha=alpha, seed=seed)
        between = float("nan")
    else:
        c = set_metric_diff_ci(run_1, run_2, ref, direction=1, metric=metric, n_boot=n_boot, alpha=alpha, seed=seed,
                               mmd_sigma=mmd_sigma)
        between = float(_point_values([np.asarray(run_1, np.float64)], np.asarray(run_2, np.float64), metric,
                                      mmd_sigma)[0])
    return {"n": c.n, "diff": c.estimate, "lo": c.lo, "hi": c.hi, "half_width": c.half_width,
            "between_seeds": between}


def prompts_needed(half_width: float, n: int, effect: float) -> int:
    """Prompts for the interval to exclude 0 at `effect`: the half-width shrinks as 1/sqrt(n)."""
    if effect == 0 or not np.isfinite(effect):
        return -1
    return int(math.ceil(n * (half_width / abs(effect)) ** 2))
