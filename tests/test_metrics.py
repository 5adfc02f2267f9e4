"""Metrics against independent references: scipy.linalg.sqrtm, the PRDC definition by loops, sklearn's RBF kernel."""

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics.pairwise import rbf_kernel

from presto_lib.eval.metrics import (bootstrap_ci, clap_score, fad, frechet_distance, gaussian_stats,
                                     median_bandwidth, mmd, prdc)


def _ref_fad(x, y):
    """Closed-form Frechet distance of the sample Gaussians, with scipy's general matrix square root."""
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean)


# ---- FAD ----

@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_fad_matches_scipy_sqrtm(shift):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8))
    x = rng.normal(size=(400, 8)) @ a
    y = rng.normal(size=(300, 8)) @ (a + 0.5 * rng.normal(size=(8, 8))) + shift
    assert fad(x, y) == pytest.approx(_ref_fad(x, y), rel=1e-6, abs=1e-8)


def test_frechet_distance_closed_form_isotropic():
    d = 16
    got = frechet_distance(np.zeros(d), 4.0 * np.eye(d), np.full(d, 0.5), 1.0 * np.eye(d))
    assert got == pytest.approx(d * 0.25 + d * (2.0 - 1.0) ** 2)  # |m1-m2|^2 + d (s1 - s2)^2


def test_fad_identical_set_is_zero_and_rank_deficient_is_real_nonnegative():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 64))                     # N < D: singular covariances
    assert fad(x, x) == pytest.approx(0.0, abs=1e-6)
    y = rng.normal(size=(15, 64)) * 1.01
    v = fad(x, y)
    assert isinstance(v, float) and np.isfinite(v) and v >= 0
    assert fad(x, y) == pytest.approx(fad(y, x), rel=1e-7)   # rank-deficient sqrtm: ~2e-9 relative BLAS-order noise


def test_gaussian_stats_unbiased_cov():
    x = np.random.default_rng(3).normal(size=(50, 4))
    mu, cov = gaussian_stats(x)
    np.testing.assert_allclose(cov, np.cov(x.T, ddof=1))
    np.testing.assert_allclose(mu, x.mean(0))


# ---- MMD ----

def _ref_mmd_unbiased(x, y, sigma):
    g = 1 / (2 * sigma ** 2)
    kxx, kyy, kxy = rbf_kernel(x, x, gamma=g), rbf_kernel(y, y, gamma=g), rbf_kernel(x, y, gamma=g)
    n, m = len(x), len(y)
    return 1000 * ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean())


def test_mmd_matches_sklearn_kernel_and_is_symmetric():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.4, 1.2, size=(45, 5))
    assert mmd(x, y, sigma=2.0) == pytest.approx(_ref_mmd_unbiased(x, y, 2.0), rel=1e-9)
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-12)       # median bandwidth on the pooled set
    assert mmd(x, y, sigma=2.0) == pytest.approx(mmd(y, x, sigma=2.0), rel=1e-12)


def test_mmd_unbiased_zero_in_expectation_positive_when_different():
    rng = np.random.default_rng(5)
    same = np.array([mmd(rng.normal(size=(15, 3)), rng.normal(size=(15, 3)), sigma=1.5) for _ in range(300)])
    stderr = same.std() / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * stderr                  # a biased (V-statistic) estimator fails this
    assert (same < 0).any()                               # unbiased estimates scatter on both sides of 0
    null = [mmd(rng.normal(size=(100, 3)), rng.normal(size=(100, 3)), sigma=1.5) for _ in range(20)]
    diff = mmd(rng.normal(size=(100, 3)), rng.normal(1.0, 1.0, size=(100, 3)), sigma=1.5)
    assert diff > 10 * np.std(null) > 0


def test_median_bandwidth():
    x = np.array([[0.0], [1.0], [3.0]])
    assert median_bandwidth(x) == pytest.approx(2.0)       # distances 1, 2, 3


# ---- PRDC ----

def _ref_prdc(real, fake, k):
    """Naeem et al. 2020, Sec. 3-4, by plain loops: k-NN radii (self excluded), strict ball membership."""
    dist = lambda a, b: float(np.sqrt(((a - b) ** 2).sum()))
    rad = lambda pts: [sorted(dist(p, q) for q in pts)[k] for p in pts]
    r_real, r_fake = rad(real), rad(fake)
    inside = [[dist(r, f) < r_real[i] for i, r in enumerate(real)] for f in fake]        # [fake][real]
    return {"precision": np.mean([any(row) for row in inside]),
            "recall": np.mean([any(dist(r, f) < r_fake[j] for j, f in enumerate(fake)) for r in real]),
            "density": np.mean([sum(row) for row in inside]) / k,
            "coverage": np.mean([min(dist(r, f) for f in fake) < r_real[i] for i, r in enumerate(real)])}


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_the_definition(k):
    rng = np.random.default_rng(6)
    real = rng.normal(size=(60, 4)).astype(np.float64)
    fake = rng.normal(0.3, 1.3, size=(45, 4)).astype(np.float64)
    ref, got = _ref_prdc(real, fake, k), prdc(real, fake, k=k)
    for key in ("precision", "recall", "density", "coverage"):
        assert got[key] == pytest.approx(float(ref[key]), abs=1e-9), key


def test_prdc_starts_no_thread_pool(monkeypatch):
    """Bootstrap intervals call prdc hundreds of times: its distances must not start joblib workers each call."""
    import sklearn.utils.parallel

    def refuse(*a, **k):
        raise AssertionError("prdc started a joblib pool")
    monkeypatch.setattr(sklearn.utils.parallel.Parallel, "__init__", refuse)
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(60, 4)), rng.normal(0.3, 1.3, size=(45, 4))
    assert prdc(real, fake, k=5) == pytest.approx(_ref_prdc(real, fake, 5))


def test_prdc_bad_k():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="k=5"):
        prdc(x, x, k=5)
    with pytest.raises(ValueError, match="k=3"):          # k + 1 neighbours besides each point are needed
        prdc(x, x, k=3)
    prdc(np.arange(8.0)[:, None], np.arange(8.0)[:, None] + 0.5, k=2)


# ---- CLAP score ----

def test_clap_score_is_mean_paired_cosine_x100():
    rng = np.random.default_rng(7)
    a, t = rng.normal(size=(30, 16)), rng.normal(size=(30, 16))
    ref = 100 * torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(t), dim=1).mean().item()
    assert clap_score(a, t) == pytest.approx(ref, rel=1e-9)
    assert clap_score(a, 3.0 * a) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="pair row by row"):
        clap_score(a, t[:10])


# ---- errors and bootstrap ----

def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fad(np.zeros(10), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="dims differ"):
        mmd(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fad(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_bootstrap_ci_brackets_estimate():
    rng = np.random.default_rng(8)
    a, t = rng.normal(size=(80, 8)), rng.normal(size=(80, 8))
    t[:, 0] += 2 * a[:, 0]
    est, lo, hi = bootstrap_ci(clap_score, a, t, n_boot=100, paired=True)
    assert est == pytest.approx(clap_score(a, t)) and lo < est < hi
    est, lo, hi = bootstrap_ci(fad, a, t, n_boot=50, seed=1)
    assert lo < est < hi                                  # centred: the duplicate-clip bias is removed
    _, plo, phi = bootstrap_ci(fad, a, t, n_boot=50, seed=1, centered=False)
    assert (plo + phi) / 2 > est and phi - plo == pytest.approx(hi - lo)   # resampled FAD is biased up
