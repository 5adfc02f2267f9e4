"""Samplers against k-diffusion step for step, against the exact PF-ODE solution, and CFG / CFG++ identities."""
import pytest
import torch

from kdiff_ref import load_sampling
from presto_lib.diffusion.edm import edm_sigmas
from presto_lib.diffusion.sampling import (Guided, cfg_denoiser, cfgpp_denoiser, get_sampler, sample_dpmpp_2s,
                                           sample_euler, sample_heun, sample_pingpong)

torch.set_num_threads(2)
K = load_sampling()
SAMPLERS = {"euler": (sample_euler, K.sample_euler, {}), "heun": (sample_heun, K.sample_heun, {}),
            "dpmpp_2s": (sample_dpmpp_2s, K.sample_dpmpp_2s_ancestral, {"eta": 0.0})}


def toy_denoiser(x, sigma):
    """A non-linear, sigma-dependent denoiser (not a real posterior mean; only used to compare solvers)."""
    s = sigma.reshape(-1, 1, 1)
    return 0.25 / (s**2 + 0.25) * x + s / (1 + s) * torch.tanh(x.flip(1) + 0.3) * torch.cos(s)


def toy_model(x, sigma, cond):
    """A conditional model(x, sigma, cond) -> x0: the condition shifts the target (label <= 0 = null)."""
    lab = cond["label"].reshape(-1, 1, 1).to(x)
    return toy_denoiser(x, sigma) + torch.where(lab > 0, lab, 0.0) * torch.sin(x) / (1 + sigma.reshape(-1, 1, 1))


def trace(sampler, denoiser, x, sigmas, **kw):
    steps = []
    out = sampler(denoiser, x, sigmas, callback=lambda d: steps.append((d["i"], d["x"].clone(),
                                                                          d["denoised"].clone())), disable=True, **kw)
    return out, steps


def gaussian_case(m=0.7, s=0.4):
    """Exact denoiser and exact PF-ODE solution for data N(m, s^2 I)."""
    den = lambda x, sigma: m + s**2 / (s**2 + sigma.reshape(-1, 1, 1) ** 2) * (x - m)
    exact = lambda x_T, sT, sig: m + (x_T - m) * ((s**2 + sig**2) / (s**2 + sT**2)) ** 0.5
    return den, exact


@pytest.fixture
def x_T():
    return 80.0 * torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# ---- plain samplers = k-diffusion -----------------------------------------------------------------

@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("n", [1, 2, 7])
def test_samplers_equal_kdiffusion_step_for_step(name, n, x_T):
    ours, ref, kw = SAMPLERS[name]
    sigmas = edm_sigmas(n, dtype=torch.float64)
    out, steps = trace(ours, toy_denoiser, x_T, sigmas)
    out_ref, steps_ref = trace(ref, toy_denoiser, x_T, sigmas.clone(), **kw)    # schedules: test_edm.py
    assert len(steps) == len(steps_ref) == n
    for (i, x, d), (j, xr, dr) in zip(steps, steps_ref):
        assert i == j
        torch.testing.assert_close(x, xr, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(d, dr, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    assert get_sampler(name) is ours


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpmpp_2s", 2)])
def test_solvers_converge_to_exact_pf_ode_solution(name, order, x_T):
    den, exact = gaussian_case()
    errs = []
    for n in (5, 10, 20, 40, 80):
        sigmas = edm_sigmas(n, dtype=torch.float64)
        _, steps = trace(SAMPLERS[name][0], den, x_T, sigmas)
        x_min = steps[-1][1]    # the state at sigma_min, before the final step to 0
        errs.append((x_min - exact(x_T, 80.0, sigmas[-2])).abs().max().item())
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(r > 1.5 for r in ratios), (errs, ratios)
    assert ratios[-1] > 2 ** order * 0.75, (errs, ratios)       # observed order of convergence
    assert errs[-1] < (0.1 if order == 1 else 5e-3)     # data std 0.4, |x_T| ~ 80


def test_heun_final_sample_matches_exact_solution(x_T):
    den, exact = gaussian_case()
    out = sample_heun(den, x_T, edm_sigmas(160, dtype=torch.float64), disable=True)
    torch.testing.assert_close(out, exact(x_T, 80.0, 0.0), rtol=0, atol=1e-3)


# ---- ping-pong ------------------------------------------------------------------------------------

def test_pingpong_denoises_then_renoises(x_T):
    sigmas = edm_sigmas(4, dtype=torch.float64)
    out = sample_pingpong(toy_denoiser, x_T, sigmas, generator=torch.Generator().manual_seed(3), disable=True)
    g, x = torch.Generator().manual_seed(3), x_T
    for i in range(4):
        x = toy_denoiser(x, sigmas[i].expand(3))
        if i < 3:
            x = x + sigmas[i + 1] * torch.randn(x.shape, generator=g, dtype=x.dtype)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    again = sample_pingpong(toy_denoiser, x_T, sigmas, generator=torch.Generator().manual_seed(3), disable=True)
    assert torch.equal(out, again)
    other = sample_pingpong(toy_denoiser, x_T, sigmas, generator=torch.Generator().manual_seed(4), disable=True)
    assert not torch.allclose(out, other)


# ---- CFG and CFG++ ----------------------------------------------------------------------------------

COND, UNCOND = {"label": torch.tensor([1.5, 0.7, 2.0])}, {"label": torch.zeros(3)}
cond_only = lambda x, s: toy_model(x, s, COND)
uncond_only = lambda x, s: toy_model(x, s, UNCOND)


@pytest.mark.parametrize("name", list(SAMPLERS) + ["pingpong"])
def test_cfg_limits(name, x_T):
    sampler = get_sampler(name)
    sigmas = edm_sigmas(6, dtype=torch.float64)
    kw = lambda: {"generator": torch.Generator().manual_seed(1)} if name == "pingpong" else {}
    run = lambda d: sampler(d, x_T, sigmas, disable=True, **kw())
    close = dict(rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(run(cfg_denoiser(toy_model, COND, UNCOND, 1.0)), run(cond_only), **close)
    torch.testing.assert_close(run(cfg_denoiser(toy_model, COND, UNCOND, 0.0)), run(uncond_only), **close)
    torch.testing.assert_close(run(cfgpp_denoiser(toy_model, COND, UNCOND, 0.0)), run(uncond_only), **close)
    # a Guided pair of identical estimates is the plain sampler
    torch.testing.assert_close(run(lambda x, s: Guided(cond_only(x, s), cond_only(x, s).clone())), run(cond_only), **close)
    # CFG++ at w > 0 really differs from both
    guided = run(cfgpp_denoiser(toy_model, COND, UNCOND, 0.8))
    assert (guided - run(uncond_only)).abs().max() > 1e-3 and (guided - run(cond_only)).abs().max() > 1e-3


def test_cfgpp_update_rules(x_T):
    """One step of each sampler, written out from the CFG++ formulas in the docstrings."""
    w, s, s1 = 0.6, torch.tensor(3.0, dtype=torch.float64), torch.tensor(1.2, dtype=torch.float64)
    sigmas = torch.stack([s, s1, torch.zeros((), dtype=torch.float64)])
    den = cfgpp_denoiser(toy_model, COND, UNCOND, w)

    def split(x, sig):
        mu_c, mu_u = cond_only(x, sig.expand(3)), uncond_only(x, sig.expand(3))
        return mu_u + w * (mu_c - mu_u), mu_u
    first = lambda sampler: trace(sampler, den, x_T, sigmas)[1][1][1]     # the state after step 0
    # Euler: x' = mu_w + s' (x - mu_u) / s
    mw, mu = split(x_T, s)
    torch.testing.assert_close(first(sample_euler), mw + s1 * (x_T - mu) / s)
    # Heun: F_k = dt (x_k - mu_u,k) / s_k + (mu_w,k - mu_u,k); x2 = x + F_1; x' = x + (F_1 + F_2) / 2
    F1 = (s1 - s) * (x_T - mu) / s + (mw - mu)
    x2 = x_T + F1
    mw2, mu2 = split(x2, s1)
    F2 = (s1 - s) * (x2 - mu2) / s1 + (mw2 - mu2)
    torch.testing.assert_close(first(sample_heun), x_T + (F1 + F2) / 2)
    # DPM-Solver++(2S): x2 = mu_w,1 + s_m (x - mu_u,1) / s, x' = mu_w,2 + s' (x - mu_u,2) / s, s_m = sqrt(s s')
    sm = (s * s1).sqrt()
    x2 = mw + sm * (x_T - mu) / s
    mw2, mu2 = split(x2, sm)
    torch.testing.assert_close(first(sample_dpmpp_2s), mw2 + s1 * (x_T - mu2) / s)


def test_cfg_is_one_batched_call_and_pads_tokens():
    calls = []

    def model(x, sigma, cond):
        calls.append((x.shape[0], cond["text"].shape, cond["text_mask"].clone()))
        return x * cond["bpm"].reshape(-1, 1, 1)
    cond = {"text": torch.ones(2, 5, 4), "text_mask": torch.ones(2, 5, dtype=torch.bool), "bpm": torch.full((2,), 2.0)}
    uncond = {"text": torch.zeros(2, 3, 4), "text_mask": torch.zeros(2, 3, dtype=torch.bool), "bpm": torch.zeros(2)}
    x = torch.ones(2, 1, 3)
    out = cfg_denoiser(model, cond, uncond, 3.0)(x, torch.ones(2))
    torch.testing.assert_close(out, torch.full_like(x, 6.0))        # 0 + 3 * (2 - 0)
    (b, shape, mask), = calls
    assert b == 4 and shape == (4, 5, 4) and mask[:2].all() and not mask[2:].any()
    den = cfgpp_denoiser(model, cond, uncond, 0.5)(x, torch.ones(2))
    assert isinstance(den, Guided)
    torch.testing.assert_close(den.denoised, torch.full_like(x, 1.0))      # 0 + 0.5 * (2 - 0)
    torch.testing.assert_close(den.renoise, 0 * x)                       # the unconditional prediction


def test_bad_input():
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        cfgpp_denoiser(toy_model, COND, UNCOND, 1.5)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("ddim")
    with pytest.raises(ValueError, match="sigmas"):
        sample_euler(toy_denoiser, torch.zeros(1, 1, 2), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same keys"):
        cfg_denoiser(toy_model, COND, {"bpm": torch.zeros(3)}, 2.0)
    with pytest.raises(ValueError, match="tensor or a"):
        sample_euler(lambda x, s: (x, x, x), torch.zeros(1, 1, 2), edm_sigmas(2))
