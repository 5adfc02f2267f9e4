"""Samplers for the PF ODE (eq. 1), classifier-free guidance and CFG++.

One calling convention, k-diffusion's: `sample_X(denoiser, x, sigmas, ...)`, where `denoiser(x, sigma[B]) -> x0`
and `sigmas` (from `edm_sigmas`, eq. 9) decreases to a final 0. With a plain denoiser every sampler is the
standard one, step for step (tests/test_sampling.py checks them against k-diffusion itself).

Guidance lives in denoiser wrappers, so every sampler works with CFG and CFG++:
- `cfg_denoiser`   returns mu_w = mu(x, s, null) + w (mu(x, s, c) - mu(x, s, null))   (paper sec. 2.2).
- `cfgpp_denoiser` returns a `Guided(denoised=mu_w, renoise=mu(x, s, null))` pair, w in [0, 1]
  (CFG++, Chung et al. 2024): the guided estimate is the data prediction, the *unconditional* estimate gives
  the noise direction eps_u = (x - mu_u) / sigma used to re-noise. A sampler seeing a (denoised, renoise) pair
  applies the CFG++ update written in its docstring; with a plain tensor, renoise = denoised and the update is
  the standard one. In words: CFG++ steps from the point x + (mu_w - mu_u) = mu_w + sigma eps_u (guided data,
  unconditional noise) instead of from x.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor
from tqdm import trange

Denoiser = Callable[[Tensor, Tensor], "Tensor | Guided"]


class Guided(NamedTuple):
    """A CFG++ denoiser output: the data estimate and the estimate that defines the noise direction."""
    denoised: Tensor
    renoise: Tensor


# ---- helpers ------------------------------------------------------------------------------------

def _split(out) -> tuple[Tensor, Tensor]:
    """(denoised, renoise) from a denoiser output (a plain tensor is its own renoise estimate)."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"a denoiser returns a tensor or a (denoised, renoise) pair, got {len(out)} items")
        return out[0], out[1]
    return out, out


def _shift(x: Tensor, denoised: Tensor, renoise: Tensor) -> Tensor:
    """The CFG++ point x + (mu_w - mu_u) = mu_w + sigma eps_u; x itself for a plain denoiser."""
    return x if renoise is denoised else x + (denoised - renoise)


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The PF-ODE derivative dx/dsigma = (x - mu(x, sigma)) / sigma (eq. 1 with the score of eq. 2)."""
    return (x - denoised) / sigma.reshape(-1, *([1] * (x.ndim - 1)))


def _check(x: Tensor, sigmas: Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D schedule with >= 2 entries, got shape {tuple(sigmas.shape)}")
    if x.ndim < 2:
        raise ValueError(f"x must be batched [B, ...], got shape {tuple(x.shape)}")


def _report(callback, x, i, sigma, denoised, renoise) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised, "renoise": renoise})


# ---- samplers -----------------------------------------------------------------------------------

@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, callback: Callable | None = None,
                 disable: bool | None = None) -> Tensor:
    """Euler steps on the PF ODE (EDM Alg. 2 without churn).

    Standard:  x' = x + (s' - s) (x - mu) / s                 (= mu + s' (x - mu) / s)
    CFG++:     x' = mu_w + s' (x - mu_u) / s                 (= x + (s' - s) eps_u + (mu_w - mu_u))
    """
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        den, ren = _split(denoiser(x, sigmas[i] * s_in))
        _report(callback, x, i, sigmas[i], den, ren)
        d = to_d(x, sigmas[i], ren)
        x = _shift(x, den, ren) + d * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, callback: Callable | None = None,
                disable: bool | None = None) -> Tensor:
    """Heun's 2nd-order method (EDM Alg. 1, no churn); the last step (to sigma = 0) is Euler.

    Standard:  x2 = x + dt d1,  x' = x + dt (d1 + d2) / 2,  d_k = (x_k - mu_k) / s_k,  dt = s' - s.
    CFG++:     every evaluation k gives an Euler increment F_k = dt (x_k - mu_u,k) / s_k + (mu_w,k - mu_u,k);
               x2 = x + F_1 (the CFG++ Euler step) and x' = x + (F_1 + F_2) / 2 (the trapezoid over both).
    """
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        den, ren = _split(denoiser(x, s * s_in))
        _report(callback, x, i, s, den, ren)
        dt = s_next - s
        d = to_d(x, s, ren)
        x_2 = _shift(x, den, ren) + d * dt
        if s_next == 0:      # Euler on the last step: (x - mu)/s is singular at s = 0
            x = x_2
            continue
        den_2, ren_2 = _split(denoiser(x_2, s_next * s_in))
        d_2 = to_d(x_2, s_next, ren_2)
        x_new = x + (d + d_2) / 2 * dt
        if ren is not den or ren_2 is not den_2:
            x_new = x_new + ((den - ren) + (den_2 - ren_2)) / 2
        x = x_new
    return x


@torch.no_grad()
def sample_dpmpp_2s(denoiser: Denoiser, x: Tensor, sigmas: Tensor, callback: Callable | None = None,
                    disable: bool | None = None) -> Tensor:
    """Deterministic DPM-Solver++(2S) (Lu et al. 2022), the paper's "DPM-2S"; last step Euler.

    In t = -ln(sigma), h = t' - t, midpoint s_m = sqrt(s s') (r = 1/2); each stage is the data-prediction
    update x -> (a) x + (1 - a) mu with a = s_to / s:
    Standard:  x2 = (s_m/s) x + (1 - s_m/s) mu(x, s),   x' = (s'/s) x + (1 - s'/s) mu(x2, s_m).
    CFG++:     x2 = mu_w,1 + s_m (x - mu_u,1) / s,      x' = mu_w,2 + s' (x - mu_u,2) / s,
               i.e. each stage steps from x + (mu_w - mu_u) of the evaluation it uses.
    Equals k-diffusion's sample_dpmpp_2s_ancestral with eta = 0.
    """
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    t_of = lambda sig: sig.log().neg()
    sig_of = lambda t: t.neg().exp()
    for i in trange(len(sigmas) - 1, disable=disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        den, ren = _split(denoiser(x, s * s_in))
        _report(callback, x, i, s, den, ren)
        if s_next == 0:
            x = _shift(x, den, ren) + to_d(x, s, ren) * (s_next - s)
            continue
        t, t_next = t_of(s), t_of(s_next)
        h = t_next - t
        s_mid = t + h / 2
        x_2 = (sig_of(s_mid) / sig_of(t)) * _shift(x, den, ren) - torch.expm1(-h / 2) * den
        den_2, ren_2 = _split(denoiser(x_2, sig_of(s_mid) * s_in))
        x = (sig_of(t_next) / sig_of(t)) * _shift(x, den_2, ren_2) - torch.expm1(-h) * den_2
    return x


@torch.no_grad()
def sample_pingpong(denoiser: Denoiser, x: Tensor, sigmas: Tensor, callback: Callable | None = None,
                    disable: bool | None = None, generator: torch.Generator | None = None,
                    noise_sampler: Callable[[Tensor, Tensor], Tensor] | None = None,
                    noises: "list[Tensor] | tuple[Tensor, ...] | None" = None) -> Tensor:
    """Ping-pong sampling for few-step generators: denoise, then re-noise to the next level with fresh noise.

    x' = mu + s' z, z ~ N(0, I) (drawn with `generator`, or `noise_sampler(s, s')`); the last step returns mu.
    `noises[i]` (one per re-noising, len(sigmas) - 2 of them) fixes z of step i instead: a noise bank that
    several schedules share (paper A.5, Fig. 9: same latent code, only rho changed).
    With CFG++ the guided estimate mu_w is used; the re-noising direction is fresh noise, not eps_u, so
    CFG++ here coincides with CFG at the same guided estimate.
    """
    _check(x, sigmas)
    n_renoise = int((sigmas[1:] > 0).sum())
    if noises is not None and (len(noises) < n_renoise or any(z.shape != x.shape for z in noises[:n_renoise])):
        raise ValueError(f"noises must hold {n_renoise} tensors of shape {tuple(x.shape)}, got "
                         f"{[tuple(z.shape) for z in noises]}")
    s_in = x.new_ones([x.shape[0]])
    k = 0
    for i in trange(len(sigmas) - 1, disable=disable):
        den, ren = _split(denoiser(x, sigmas[i] * s_in))
        _report(callback, x, i, sigmas[i], den, ren)
        x = den
        if sigmas[i + 1] > 0:
            if noises is not None:
                z = noises[k].to(x.device, x.dtype)
            elif noise_sampler is not None:
                z = noise_sampler(sigmas[i], sigmas[i + 1])
            else:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            k += 1
            x = x + sigmas[i + 1] * z
    return x


SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp_2s": sample_dpmpp_2s, "pingpong": sample_pingpong}


def get_sampler(name: str) -> Callable:
    """A sampler by name: euler, heun, dpmpp_2s, pingpong."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


# ---- guidance wrappers (paper sec. 2.2; CFG++, Chung et al. 2024) -------------------------------

def _cat_cond(cond: dict | None, uncond: dict | None) -> dict | None:
    """Stack cond over uncond along the batch; ragged token axes (dim 1) are zero/False-padded."""
    if cond is None and uncond is None:
        return None
    if cond is None or uncond is None or set(cond) != set(uncond):
        raise ValueError("cond and uncond must be dicts with the same keys")
    out = {}
    for k in cond:
        a, b = torch.as_tensor(cond[k]), torch.as_tensor(uncond[k])
        if a.ndim >= 2 and a.shape[1] != b.shape[1]:
            L = max(a.shape[1], b.shape[1])
            pad = lambda t: torch.cat([t, t.new_zeros(t.shape[0], L - t.shape[1], *t.shape[2:])], 1)
            a, b = pad(a), pad(b)
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"cond[{k!r}] shape {tuple(a.shape)} does not stack with uncond {tuple(b.shape)}")
        out[k] = torch.cat([a, b.to(a.device)])
    return out


def _both(model: Callable, cond: dict | None, uncond: dict | None, model_kwargs: dict) -> Callable:
    """(x, sigma) -> (mu(x, sigma, c), mu(x, sigma, null)) in one batched call."""
    both = _cat_cond(cond, uncond)

    def run(x: Tensor, sigma: Tensor):
        out = model(torch.cat([x, x]), torch.cat([sigma, sigma]), both, **model_kwargs)
        return out.chunk(2)
    return run


def cfg_denoiser(model: Callable, cond: dict | None, uncond: dict | None, w: float,
                 **model_kwargs) -> Callable[[Tensor, Tensor], Tensor]:
    """CFG (paper sec. 2.2): x0 = mu(x, s, null) + w (mu(x, s, c) - mu(x, s, null)).

    `model(x, sigma, cond, **model_kwargs) -> x0`; w = 1 is the conditional model, w = 0 the unconditional one.
    """
    run = _both(model, cond, uncond, model_kwargs)

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        mu_c, mu_u = run(x, sigma)
        return mu_u + w * (mu_c - mu_u)
    return denoiser


def cfgpp_denoiser(model: Callable, cond: dict | None, uncond: dict | None, w: float,
                   **model_kwargs) -> Callable[[Tensor, Tensor], Guided]:
    """CFG++ (Chung et al. 2024): returns Guided(mu_u + w (mu_c - mu_u), mu_u), w in [0, 1].

    Every sampler then uses the guided estimate as data prediction and mu_u for the noise direction
    (see each sampler's docstring). The paper samples its score models with CFG++ at w = 0.8 (A.1).
    """
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"CFG++ guidance weight must lie in [0, 1], got {w}")
    run = _both(model, cond, uncond, model_kwargs)

    def denoiser(x: Tensor, sigma: Tensor) -> Guided:
        mu_c, mu_u = run(x, sigma)
        return Guided(mu_u + w * (mu_c - mu_u), mu_u)
    return denoiser
