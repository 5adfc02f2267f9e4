"""EDM core: preconditioning, noise distributions and the denoising score-matching loss.

Notation follows the paper (Novack et al. 2025, sec. 2.1) and EDM (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models"):

    x = x_real + sigma * eps                                     (forward process, VE)
    dx = -sigma * grad_x log p(x | sigma) dsigma                 (PF ODE, eq. 1)
    grad_x log p(x | sigma) ~= (x - mu(x, sigma)) / sigma        (score from the denoiser, eq. 2)
    mu(x, sigma) = c_skip x + c_out f(c_in x, c_noise)           (preconditioning, eq. 4)

Noise levels are continuous everywhere. Training draws ln(sigma) ~ N(P_mean, P_std^2); inference draws
(or discretises) eq. 9. Presto-S picks each of its four noise distributions by name, see `sample_sigma`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from presto_lib.fields import reject_unknown

SIGMA_DATA = 0.5     # paper A.1 (following Karras et al. 2024)
P_MEAN, P_STD = -0.4, 1.0
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0

SigmaLike = float | Tensor


# ---- noise settings shared by the distillation configs ------------------------------------------

@dataclass
class EDMConfig:
    """EDM noise settings shared by the distillation configs (which inherit from_dict / to_dict); field names are
    the params' `edm` keys."""
    sigma_data: float = SIGMA_DATA      # data std of the preconditioning (eq. 4)
    p_mean: float = P_MEAN              # training noise: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = P_STD
    sigma_min: float = SIGMA_MIN        # inference noise: eq. 9's range and warp
    sigma_max: float = SIGMA_MAX
    rho: float = RHO

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EDMConfig":
        """Build (a subclass) from a params dict, rejecting unknown keys."""
        reject_unknown(cls, d, f"{cls.__name__} options")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


EDM_KEYS: tuple[str, ...] = tuple(f.name for f in fields(EDMConfig))   # the params' `edm` keys a config takes


# ---- preconditioning (eq. 4; EDM Table 1) -------------------------------------------------------

def _as_tensor(sigma: SigmaLike) -> Tensor:
    return sigma if isinstance(sigma, Tensor) else torch.as_tensor(sigma, dtype=torch.float64)


def c_skip(sigma: SigmaLike, sigma_data: float = SIGMA_DATA) -> Tensor:
    """c_skip = sd^2 / (sigma^2 + sd^2): how much of the noisy input passes straight through."""
    s = _as_tensor(sigma)
    return sigma_data**2 / (s**2 + sigma_data**2)


def c_out(sigma: SigmaLike, sigma_data: float = SIGMA_DATA) -> Tensor:
    """c_out = sigma * sd / sqrt(sigma^2 + sd^2): scale of the network output."""
    s = _as_tensor(sigma)
    return s * sigma_data / (s**2 + sigma_data**2).sqrt()


def c_in(sigma: SigmaLike, sigma_data: float = SIGMA_DATA) -> Tensor:
    """c_in = 1 / sqrt(sigma^2 + sd^2): makes the network input unit-variance."""
    s = _as_tensor(sigma)
    return (s**2 + sigma_data**2).rsqrt()


def c_noise(sigma: SigmaLike) -> Tensor:
    """c_noise = ln(sigma) / 4: the noise-level input of the network."""
    return _as_tensor(sigma).log() / 4


def edm_loss_weight(sigma: SigmaLike, sigma_data: float = SIGMA_DATA) -> Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma * sd)^2 = 1 / c_out^2 (EDM Table 1, the weight of eq. 3)."""
    s = _as_tensor(sigma)
    return (s**2 + sigma_data**2) / (s * sigma_data) ** 2


def _sigma_batch(sigma: SigmaLike, x: Tensor) -> Tensor:
    """sigma as a [B] tensor (float32, or float64 for float64 x) on x's device; a scalar is broadcast."""
    dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32
    s = torch.as_tensor(sigma, device=x.device).to(dtype).reshape(-1)
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma has {s.numel()} entries but the batch has {x.shape[0]}")
    return s


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """[B] -> [B, 1, ..., 1] matching x.ndim (the one owner of this broadcast)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class EDMPrecond(nn.Module):
    """Wraps a raw network f into the EDM denoiser mu(x, sigma, cond) of eq. 4."""

    def __init__(self, net: nn.Module | Callable, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: SigmaLike, cond: dict | None = None, **net_kwargs):
        """x0_hat = c_skip x + c_out f(c_in x, c_noise, **cond); (x0_hat, *extras) if f returns a tuple."""
        s = _sigma_batch(sigma, x)
        sd = self.sigma_data
        out = self.net((bcast(c_in(s, sd), x) * x).to(x.dtype), c_noise(s), **(cond or {}), **net_kwargs)
        f, extras = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, ())
        x0 = bcast(c_skip(s, sd), x) * x.to(s.dtype) + bcast(c_out(s, sd), x) * f.to(s.dtype)   # eq. 4 (fp32+)
        x0 = x0.to(x.dtype)
        return (x0, *extras) if extras else x0


# ---- noise schedules and distributions (eq. 9; EDM sec. 5) -------------------------------------

def _check_range(sigma_min: float, sigma_max: float, rho: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")


def _rho_interp(u: Tensor, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """eq. 9 with i/(N-1) replaced by u in [0, 1]: u=0 -> sigma_max, u=1 -> sigma_min."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + u * (lo - hi)) ** rho


def edm_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """The n levels of eq. 9 (sigma_max first, sigma_min last), then a final 0: shape [n + 1].

    Same schedule as k-diffusion's `get_sigmas_karras` (computed in float64, then cast). n = 1 gives
    [sigma_max, 0], a single step.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    _check_range(sigma_min, sigma_max, rho)
    u = torch.linspace(0, 1, int(n), dtype=torch.float64)
    s = _rho_interp(u, sigma_min, sigma_max, rho)
    return torch.cat([s, s.new_zeros(1)]).to(device=device, dtype=dtype)


def sample_sigma_train(shape: int | tuple, p_mean: float = P_MEAN, p_std: float = P_STD,
                       generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> Tensor:
    """Training noise: ln(sigma) ~ N(P_mean, P_std^2) (EDM sec. 5, log-normal)."""
    if p_std <= 0:
        raise ValueError(f"p_std must be > 0, got {p_std}")
    z = torch.randn(shape, generator=generator, device=device)
    return (p_mean + p_std * z).exp()


def sample_sigma_inference(shape: int | tuple, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                           rho: float = RHO, generator: torch.Generator | None = None,
                           device: str | torch.device = "cpu") -> Tensor:
    """Inference noise: continuous eq. 9, sigma = (smax^(1/rho) + u (smin^(1/rho) - smax^(1/rho)))^rho, u ~ U[0,1]."""
    _check_range(sigma_min, sigma_max, rho)
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return _rho_interp(u, sigma_min, sigma_max, rho).float()


def sample_sigma(kind: Literal["train", "inf"], shape: int | tuple, *, p_mean: float = P_MEAN,
                 p_std: float = P_STD, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                 rho: float = RHO, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> Tensor:
    """Draw noise levels from the training ("train") or inference ("inf") distribution (Presto-S sec. 3.2)."""
    if kind == "train":
        return sample_sigma_train(shape, p_mean, p_std, generator=generator, device=device)
    if kind == "inf":
        return sample_sigma_inference(shape, sigma_min, sigma_max, rho, generator=generator, device=device)
    raise ValueError(f"unknown noise distribution {kind!r}; choose 'train' or 'inf'")


# ---- densities in dB SNR (paper Fig. 2; SNR = 1 / sigma^2) -------------------------------------

DB_PER_NEPER = 20 / math.log(10)     # SNR_dB = 10 log10(1/sigma^2) = -DB_PER_NEPER * ln(sigma)


def sigma_to_snr_db(sigma: SigmaLike) -> Tensor:
    """SNR in dB: 10 log10(1 / sigma^2)."""
    return -DB_PER_NEPER * _as_tensor(sigma).log()


def snr_db_to_sigma(snr_db: SigmaLike) -> Tensor:
    """Inverse of `sigma_to_snr_db`."""
    return (-_as_tensor(snr_db) / DB_PER_NEPER).exp()


def density_snr_db(kind: Literal["train", "inf"], snr_db: SigmaLike, *, p_mean: float = P_MEAN,
                   p_std: float = P_STD, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                   rho: float = RHO) -> Tensor:
    """Analytic pdf of SNR_dB under the training or inference noise distribution.

    train: SNR_dB = -k ln(sigma) with k = 20/ln 10 is an affine map of a Gaussian, so it is
           N(-k P_mean, (k P_std)^2).
    inf:   v = sigma^(1/rho) is uniform on [smin^(1/rho), smax^(1/rho)]; v = exp(-SNR_dB / (k rho)), so by
           change of variables p(SNR_dB) = v / (k rho (smax^(1/rho) - smin^(1/rho))) inside the support.
    """
    y = _as_tensor(snr_db).double()
    k = DB_PER_NEPER
    if kind == "train":
        mu, sd = -k * p_mean, k * p_std
        return torch.exp(-0.5 * ((y - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    if kind == "inf":
        _check_range(sigma_min, sigma_max, rho)
        v = torch.exp(-y / (k * rho))
        p = v / (k * rho * (sigma_max ** (1 / rho) - sigma_min ** (1 / rho)))
        inside = (y >= sigma_to_snr_db(sigma_max)) & (y <= sigma_to_snr_db(sigma_min))
        return torch.where(inside, p, torch.zeros_like(p))
    raise ValueError(f"unknown noise distribution {kind!r}; choose 'train' or 'inf'")


# ---- denoising score matching (eq. 3) ----------------------------------------------------------

def dsm_loss(model: Callable, x0: Tensor, cond: dict | None = None, sigma: Tensor | None = None, *,
             noise: Tensor | None = None, p_mean: float = P_MEAN, p_std: float = P_STD,
             sigma_data: float = SIGMA_DATA, generator: torch.Generator | None = None,
             reduction: Literal["mean", "none"] = "mean", **model_kwargs) -> Tensor:
    """Denoising score matching, eq. 3, with EDM's weighting lambda(sigma) = 1 / c_out(sigma)^2.

    Per example: lambda(sigma) * mean_elements (x0 - mu(x0 + sigma eps, sigma, cond))^2, i.e. eq. 3's squared
    norm divided by the number of elements (so the scale does not depend on the latent size). Because
    lambda c_out^2 = 1 this equals the unweighted MSE of the raw network against its effective target, which has
    unit variance; a perfect denoiser of N(m, sigma_data^2 I) data scores exactly 1 at every sigma.
    `sigma` ([B]) defaults to the training distribution; `reduction="none"` returns the [B] per-example losses,
    "mean" their mean. `model(x, sigma, cond, **model_kwargs) -> x0_hat`.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    B = x0.shape[0]
    if sigma is None:
        sigma = sample_sigma_train(B, p_mean, p_std, generator=generator, device=x0.device)
    sigma = _sigma_batch(sigma, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    x0_hat = model(x0 + bcast(sigma, x0) * noise, sigma, cond, **model_kwargs)
    err = (x0_hat.float() - x0.float()).pow(2).reshape(B, -1).mean(1)
    loss = edm_loss_weight(sigma, sigma_data) * err
    return loss.mean() if reduction == "mean" else loss


# ---- an analytic toy: Gaussian-mixture data with its exact denoiser ----------------------------

class GaussianMixture:
    """Isotropic Gaussian-mixture data in R^d whose posterior mean E[x0 | x, sigma] is exact.

    p(x | sigma) = sum_k pi_k N(mu_k, (s_k^2 + sigma^2) I), so mu(x, sigma) = sum_k r_k(x) (mu_k + s_k^2 (x - mu_k)
    / (s_k^2 + sigma^2)) with responsibilities r_k. `classes[k]` labels component k; a condition
    {"label": [B]} restricts the mixture to that class (label < 0 = null = the whole mixture), which makes a
    conditional toy for CFG.
    """

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None,
                 classes: Tensor | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError(f"means must be [K, d], got shape {tuple(self.means.shape)}")
        K = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
        self.weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64) / torch.as_tensor(weights, dtype=torch.float64).sum()
        self.classes = torch.zeros(K, dtype=torch.long) if classes is None else torch.as_tensor(classes).long()

    def sample(self, n: int, generator: torch.Generator | None = None, label: int | None = None):
        """(x0 [n, d] float64, component index [n]); `label` restricts to one class."""
        w = self.weights if label is None or label < 0 else self.weights * (self.classes == label)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z, k

    def log_responsibilities(self, x: Tensor, sigma: Tensor, label: Tensor | None = None) -> Tensor:
        """log r_k(x) at noise level sigma: [B, K]."""
        var = self.stds**2 + sigma.reshape(-1, 1).double() ** 2                    # [B, K]
        d = self.means.shape[1]
        sq = ((x.double()[:, None, :] - self.means) ** 2).sum(-1)                  # [B, K]
        logp = self.weights.log() - 0.5 * (sq / var + d * var.log())
        if label is not None:
            keep = (label.reshape(-1, 1) < 0) | (self.classes == label.reshape(-1, 1).long())
            logp = logp.masked_fill(~keep, float("-inf"))
        return logp.log_softmax(-1)

    def nearest(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(index of the nearest component mean [B], distance to it in units of that component's std [B])."""
        dist, k = ((x.double()[:, None, :] - self.means) ** 2).sum(-1).sqrt().min(1)
        return k, dist / self.stds[k]

    def denoise(self, x: Tensor, sigma: Tensor, cond: dict | None = None) -> Tensor:
        """The exact denoiser E[x0 | x, sigma(, label)] in the model(x, sigma, cond) convention."""
        sigma = _sigma_batch(sigma, x).double()
        r = self.log_responsibilities(x, sigma, None if cond is None else cond["label"]).exp()
        shrink = self.stds**2 / (self.stds**2 + sigma.reshape(-1, 1) ** 2)       # [B, K]
        post = self.means + shrink[..., None] * (x.double()[:, None, :] - self.means)
        return (r[..., None] * post).sum(1).to(x.dtype)
