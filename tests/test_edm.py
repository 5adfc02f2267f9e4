"""EDM core against independent references: k-diffusion's schedule, EDM's Table 1 identities, scipy.stats."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from kdiff_ref import load_sampling
from presto_lib.diffusion import edm
from presto_lib.diffusion.edm import (EDMPrecond, c_in, c_noise, c_out, c_skip, density_snr_db, dsm_loss,
                                      edm_loss_weight, edm_sigmas, sample_sigma, sample_sigma_inference,
                                      sample_sigma_train, sigma_to_snr_db, snr_db_to_sigma)

torch.set_num_threads(2)
K = load_sampling()
SD = 0.5
SIGMAS = torch.tensor([0.002, 0.05, 0.5, 1.0, 7.0, 80.0], dtype=torch.float64)


# ---- schedule (eq. 9) -----------------------------------------------------------------------------

@pytest.mark.parametrize("n,smin,smax,rho", [(1, 0.002, 80.0, 7.0), (2, 0.002, 80.0, 7.0),
                                             (18, 0.002, 80.0, 7.0), (40, 0.01, 10.0, 3.0), (5, 0.1, 1.0, 1.0)])
def test_edm_sigmas_equal_kdiffusion(n, smin, smax, rho):
    ours = edm_sigmas(n, smin, smax, rho, dtype=torch.float64)
    ref = K.get_sigmas_karras(n, smin, smax, rho).double()
    assert ours.shape == (n + 1,) and ours[-1] == 0
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    assert ours[0].item() == pytest.approx(smax, rel=1e-12)
    if n > 1:
        assert ours[n - 1].item() == pytest.approx(smin, rel=1e-12)
        assert torch.all(ours[1:] < ours[:-1])


@pytest.mark.parametrize("kw", [dict(n=0), dict(n=2.5), dict(n=4, sigma_min=1.0, sigma_max=1.0),
                                dict(n=4, sigma_min=-0.1), dict(n=4, rho=0.0)])
def test_edm_sigmas_bad_input(kw):
    with pytest.raises(ValueError):
        edm_sigmas(**kw)


# ---- preconditioning (eq. 4, EDM Table 1) ------------------------------------------------------

def test_preconditioning_matches_table1_and_identities():
    s = SIGMAS
    torch.testing.assert_close(c_skip(s), SD**2 / (s**2 + SD**2))
    torch.testing.assert_close(c_out(s), s * SD / torch.sqrt(SD**2 + s**2))
    torch.testing.assert_close(c_in(s), 1 / torch.sqrt(s**2 + SD**2))
    torch.testing.assert_close(c_noise(s), torch.log(s) / 4)
    # lambda(sigma) c_out(sigma)^2 = 1: the weighted loss is a unit-weighted loss on the raw network
    torch.testing.assert_close(edm_loss_weight(s) * c_out(s) ** 2, torch.ones_like(s))
    # the network input c_in (x0 + sigma eps) has unit variance when Var(x0) = sd^2
    torch.testing.assert_close(c_in(s) ** 2 * (SD**2 + s**2), torch.ones_like(s))
    # the effective target F = (x0 - c_skip x) / c_out has unit variance (EDM eq. 8, B.6)
    var_target = ((1 - c_skip(s)) ** 2 * SD**2 + c_skip(s) ** 2 * s**2) / c_out(s) ** 2
    torch.testing.assert_close(var_target, torch.ones_like(s))
    assert c_skip(0.0).item() == 1.0 and c_out(0.0).item() == 0.0     # identity at sigma = 0


def test_effective_target_has_unit_variance_monte_carlo():
    g = torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.5, 20.0):
        x0 = SD * torch.randn(200_000, generator=g, dtype=torch.float64)
        x = x0 + sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
        target = (x0 - c_skip(sigma) * x) / c_out(sigma)
        assert target.var().item() == pytest.approx(1.0, abs=0.02)
        assert (c_in(sigma) * x).var().item() == pytest.approx(1.0, abs=0.02)


class Recorder(torch.nn.Module):
    """A raw network that records its inputs and returns a fixed function of them."""

    def forward(self, x, c_noise, text=None, text_mask=None, bpm=None, return_features=False):
        self.seen = dict(x=x, c_noise=c_noise, text=text, text_mask=text_mask, bpm=bpm)
        out = torch.sin(x) + c_noise.reshape(-1, 1, 1)
        return (out, [x.transpose(1, 2)]) if return_features else out


def test_edm_precond_forward():
    net = Recorder()
    D = EDMPrecond(net, sigma_data=SD)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 5, generator=g)
    sigma = torch.tensor([0.1, 1.0, 30.0])
    cond = {"text": torch.randn(3, 4, 8), "text_mask": torch.ones(3, 4, dtype=torch.bool), "bpm": torch.ones(3)}
    x0 = D(x, sigma, cond)
    b = lambda v: v.reshape(-1, 1, 1)
    torch.testing.assert_close(net.seen["x"], b(c_in(sigma)) * x)
    torch.testing.assert_close(net.seen["c_noise"], torch.log(sigma) / 4)
    assert net.seen["text"] is cond["text"] and net.seen["bpm"] is cond["bpm"]
    expect = b(c_skip(sigma)) * x + b(c_out(sigma)) * (torch.sin(b(c_in(sigma)) * x) + b(torch.log(sigma) / 4))
    torch.testing.assert_close(x0, expect)
    # features pass through; a float sigma broadcasts; sigma of the wrong size is refused
    x0f, feats = D(x, sigma, cond, return_features=True)
    torch.testing.assert_close(x0f, x0)
    assert len(feats) == 1
    torch.testing.assert_close(D(x, 1.0), D(x, torch.ones(3)))
    with pytest.raises(ValueError, match="sigma"):
        D(x, torch.ones(2))


# ---- noise distributions ------------------------------------------------------------------------

def test_training_noise_is_lognormal():
    g = torch.Generator().manual_seed(2)
    s = sample_sigma_train(20_000, p_mean=-0.4, p_std=1.0, generator=g)
    assert stats.kstest(s.log().numpy(), stats.norm(-0.4, 1.0).cdf).pvalue > 1e-3
    assert s.log().mean().item() == pytest.approx(-0.4, abs=0.03) and s.log().std().item() == pytest.approx(1.0, abs=0.03)
    assert stats.kstest(s.log().numpy(), stats.norm(0.0, 1.0).cdf).pvalue < 1e-6     # the test has power


def test_inference_noise_quantiles_follow_eq9():
    g = torch.Generator().manual_seed(3)
    smin, smax, rho = 0.002, 80.0, 7.0
    s = sample_sigma_inference(20_000, smin, smax, rho, generator=g).double()
    assert s.min() >= smin * (1 - 1e-6) and s.max() <= smax * (1 + 1e-6)
    # sigma decreases in u, so the q-quantile of sigma is eq. 9 at u = 1 - q
    q = np.linspace(0.05, 0.95, 19)
    eq9 = (smax ** (1 / rho) + (1 - q) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    np.testing.assert_allclose(np.quantile(s.numpy(), q), eq9, rtol=0.05)
    u = (s ** (1 / rho) - smax ** (1 / rho)) / (smin ** (1 / rho) - smax ** (1 / rho))
    assert stats.kstest(u.numpy(), stats.uniform().cdf).pvalue > 1e-3


def test_sample_sigma_dispatch():
    a = sample_sigma("train", 7, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, sample_sigma_train(7, generator=torch.Generator().manual_seed(4)))
    b = sample_sigma("inf", (2, 3), rho=3.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(b, sample_sigma_inference((2, 3), rho=3.0, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="unknown noise distribution"):
        sample_sigma("uniform", 3)
    with pytest.raises(ValueError):
        sample_sigma("inf", 3, sigma_min=5.0, sigma_max=1.0)


@pytest.mark.parametrize("kind", ["train", "inf"])
def test_snr_db_densities(kind):
    assert sigma_to_snr_db(0.1).item() == pytest.approx(20.0) and snr_db_to_sigma(-20.0).item() == pytest.approx(10.0)
    f = lambda y: density_snr_db(kind, y).item()
    lo, hi = (-60.0, 80.0)
    assert integrate.quad(f, lo, hi, points=[-38.06, 53.98], limit=200)[0] == pytest.approx(1.0, abs=1e-4)
    # the analytic pdf matches a histogram of samples
    s = sample_sigma(kind, 200_000, generator=torch.Generator().manual_seed(5))
    hist, edges = np.histogram(sigma_to_snr_db(s).numpy(), bins=40, range=(-36.0, 52.0), density=False)
    centres = (edges[1:] + edges[:-1]) / 2
    expected = density_snr_db(kind, torch.tensor(centres)).numpy() * (edges[1] - edges[0]) * 200_000
    mask = expected > 200
    np.testing.assert_allclose(hist[mask], expected[mask], rtol=0.15)
    with pytest.raises(ValueError):
        density_snr_db("nope", 0.0)


# ---- DSM loss (eq. 3) -----------------------------------------------------------------------------

def gaussian_denoiser(m, s):
    """The exact denoiser E[x0 | x] for x0 ~ N(m, s^2 I)."""
    return lambda x, sigma, cond=None: m + (s**2 / (s**2 + sigma.reshape(-1, 1, 1) ** 2)) * (x - m)


def test_dsm_loss_exact_denoiser_is_analytic():
    g = torch.Generator().manual_seed(6)
    m = 0.3
    # data with std sigma_data: the optimal weighted loss is exactly 1 at every sigma
    x0 = m + SD * torch.randn(64, 4, 512, generator=g, dtype=torch.float64)
    per = dsm_loss(gaussian_denoiser(m, SD), x0, None, SIGMAS.repeat(11)[:64], generator=g, reduction="none")
    assert per.shape == (64,)
    assert per.mean().item() == pytest.approx(1.0, abs=0.02)
    # other data std s, sampled sigma: E_sigma[lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2)]
    s = 1.3
    x0 = m + s * torch.randn(4000, 1, 64, generator=g, dtype=torch.float64)
    loss = dsm_loss(gaussian_denoiser(m, s), x0, None, generator=g).item()
    ref = integrate.quad(lambda ls: stats.norm(-0.4, 1.0).pdf(ls) * edm_loss_weight(math.exp(ls)).item()
                         * s**2 * math.exp(2 * ls) / (s**2 + math.exp(2 * ls)), -12, 12)[0]
    assert loss == pytest.approx(ref, rel=0.05)
    # no denoising at all (mu = x) scores lambda(sigma) sigma^2 = 1 + sigma^2 / sd^2 instead
    sig = SIGMAS.repeat(700)[:4000]
    ident = dsm_loss(lambda x, sigma, cond: x, x0, None, sig, generator=g, reduction="none")
    assert (ident / (1 + sig**2 / SD**2)).mean().item() == pytest.approx(1.0, abs=0.02)


def test_dsm_loss_bad_input():
    x0 = torch.zeros(2, 1, 4)
    with pytest.raises(ValueError, match="reduction"):
        dsm_loss(gaussian_denoiser(0, SD), x0, reduction="sum")
    with pytest.raises(ValueError, match="noise shape"):
        dsm_loss(gaussian_denoiser(0, SD), x0, noise=torch.zeros(2, 4))


# ---- the analytic toy -------------------------------------------------------------------------------

def test_gaussian_mixture_denoiser_is_tweedie():
    """mu(x, sigma) = x + sigma^2 grad log p(x | sigma) (Tweedie), p from torch.distributions."""
    from torch import distributions as dist
    means = torch.tensor([[1.0, 0.0], [-0.5, 0.8], [0.0, -1.0]], dtype=torch.float64)
    stds, weights = torch.tensor([0.1, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    gm = edm.GaussianMixture(means, stds, weights, classes=[0, 1, 1])
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for sigma in (0.05, 0.7, 5.0):
        for label, idx in ((None, [0, 1, 2]), (-1, [0, 1, 2]), (1, [1, 2])):
            w = weights[idx] / weights[idx].sum()
            comp = dist.Independent(dist.Normal(means[idx], (stds[idx] ** 2 + sigma**2).sqrt()[:, None].expand(-1, 2)), 1)
            p = dist.MixtureSameFamily(dist.Categorical(w), comp)
            xr = x.clone().requires_grad_(True)
            score, = torch.autograd.grad(p.log_prob(xr).sum(), xr)
            cond = None if label is None else {"label": torch.full((6,), label)}
            torch.testing.assert_close(gm.denoise(x, torch.full((6,), sigma), cond), x + sigma**2 * score)
    x0, k = gm.sample(5000, torch.Generator().manual_seed(8), label=1)
    assert set(k.tolist()) == {1, 2} and abs((k == 1).double().mean().item() - 0.6) < 0.03
    k_near, d_near = gm.nearest(torch.tensor([[1.0, 0.05], [0.0, -1.4]], dtype=torch.float64))
    assert k_near.tolist() == [0, 2] and d_near.tolist() == pytest.approx([0.5, 2.0])
    with pytest.raises(ValueError, match="means"):
        edm.GaussianMixture(torch.zeros(3), 0.1)


def test_distillation_configs_share_the_edm_noise_settings():
    from presto_lib.distill.presto_l import PrestoLConfig
    from presto_lib.distill.presto_s import PrestoSConfig

    base = edm.EDMConfig()
    assert (base.sigma_data, base.p_mean, base.p_std) == (edm.SIGMA_DATA, edm.P_MEAN, edm.P_STD)
    assert (base.sigma_min, base.sigma_max, base.rho) == (edm.SIGMA_MIN, edm.SIGMA_MAX, edm.RHO)
    for cls in (PrestoLConfig, PrestoSConfig):
        cfg = cls.from_dict({"sigma_max": 40.0})
        assert isinstance(cfg, edm.EDMConfig) and cfg.sigma_max == 40.0 and cfg.rho == edm.RHO
        assert {k: cfg.to_dict()[k] for k in edm.EDM_KEYS} == {**vars(base), "sigma_max": 40.0}
        assert cls.from_dict(cfg.to_dict()) == cfg
