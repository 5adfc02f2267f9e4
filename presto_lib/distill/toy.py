"""A 2-D Presto-S toy: a Gaussian mixture whose real score is exact, and small MLP score networks.

Everything follows the score-model interface `model(x, sigma, cond) -> x0` with x of shape [B, C=2, T=1], so the
*same* `PrestoS` code that distils the music model distils this toy. The real score model is the closed-form
denoiser E[x0 | x, sigma] of the mixture; the base model (which initialises the generator and the fake score
model) is an MLP trained with the DSM loss (eq. 3); features [B, 1, hidden] feed the discriminator head.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm.auto import trange

from presto_lib.diffusion import edm
from presto_lib.distill.discriminator import DiscriminatorHead
from presto_lib.distill.presto_s import FakeScore, PrestoS, PrestoSConfig, init_from_base, optimizer_update
from presto_lib.models.layers import sinusoidal_embedding


# ---- target: the exact mixture denoiser in the [B, C, T] layout -----------------------------------

def ring_mixture(k: int = 8, radius: float = 0.6, std: float = 0.05) -> edm.GaussianMixture:
    """k isotropic modes evenly spaced on a circle (the classic GAN toy); data std ~ sigma_data = 0.5."""
    a = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return edm.GaussianMixture(radius * torch.stack([a.cos(), a.sin()], 1), std)


def sample_points(gm: edm.GaussianMixture, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n mixture samples as float32 [n, 2, 1] (C = 2 channels, T = 1 frame)."""
    return gm.sample(n, generator)[0].float()[:, :, None]


class ExactScore(nn.Module):
    """The real score model of the toy: the mixture's exact E[x0 | x, sigma] (edm.GaussianMixture) on [B, 2, 1]."""

    def __init__(self, gm: edm.GaussianMixture):
        super().__init__()
        self.gm = gm

    def forward(self, x: Tensor, sigma: Tensor, cond: dict | None = None) -> Tensor:
        return self.gm.denoise(x[:, :, 0], sigma, cond)[:, :, None]


# ---- an MLP score network with per-layer features ------------------------------------------------

class ToyNet(nn.Module):
    """f(c_in x, c_noise) for 2-D points: residual MLP with sigma embedding; also returns per-layer features."""

    def __init__(self, hidden: int = 128, depth: int = 4, freq_dim: int = 32):
        super().__init__()
        self.freq_dim, self.hidden = freq_dim, hidden
        self.inp = nn.Linear(2, hidden)
        self.emb = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                                  nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: Tensor, c_noise: Tensor, return_features: bool = False, extra_emb: Tensor | None = None):
        """x [B, 2, 1] -> [B, 2, 1]; with return_features, also every block's output as [B, T=1, hidden].

        extra_emb [B, hidden] is added to the sigma embedding (the DiT's hook, e.g. a distilled CFG weight).
        """
        e = self.emb(sinusoidal_embedding(c_noise * 100.0, self.freq_dim))
        if extra_emb is not None:
            e = e + extra_emb
        h = self.inp(x[:, :, 0]) + e
        feats = []
        for blk in self.blocks:
            h = h + blk(h + e)
            feats.append(h[:, None, :])
        y = self.out(h)[:, :, None]
        return (y, feats) if return_features else y


def make_toy_model(hidden: int = 128, depth: int = 4, sigma_data: float = edm.SIGMA_DATA) -> edm.EDMPrecond:
    """A fresh EDM-preconditioned toy score model (eq. 4)."""
    return edm.EDMPrecond(ToyNet(hidden, depth), sigma_data=sigma_data)


def train_toy_base(data: edm.GaussianMixture, steps: int = 2000, batch: int = 512, lr: float = 2e-3,
                   hidden: int = 128, depth: int = 4, seed: int = 0) -> edm.EDMPrecond:
    """The toy's base score model: DSM (eq. 3) on mixture samples with training noise log-normal(P_mean, P_std)."""
    torch.manual_seed(seed)
    model = make_toy_model(hidden, depth)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in trange(steps, desc="toy base (DSM)", leave=False):
        loss = edm.dsm_loss(model, sample_points(data, batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


# ---- Presto-S on the toy ------------------------------------------------------------------------

def toy_presto_s(base: edm.EDMPrecond, gm: edm.GaussianMixture, cfg: PrestoSConfig) -> PrestoS:
    """G and mu_psi: the base weights loaded into fresh modules; mu_real: the exact mixture denoiser."""
    net, state = base.net, base.state_dict()
    make = lambda: make_toy_model(net.hidden, len(net.blocks), base.sigma_data)
    fake = FakeScore(init_from_base(make, state), DiscriminatorHead(net.hidden, n_down=0))
    return PrestoS(init_from_base(make, state), fake, ExactScore(gm), cfg)


def distill_toy(ps: PrestoS, gm: edm.GaussianMixture, iters: int, batch: int = 128, lr: float = 1e-3,
                betas: tuple[float, float] = (0.0, 0.99), log_every: int = 0) -> list[dict]:
    """Run `iters` iterations of Algorithm 1 on mixture samples with Adam; returns every log_every-th log."""
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr, betas=betas) for k, m in ps.modules().items()}
    update, history = optimizer_update(opts), []
    for it in trange(iters, desc="toy Presto-S", leave=False):
        logs = ps.step(sample_points(gm, batch), None, it, update)
        if log_every and (it + 1) % log_every == 0:
            history.append({"iteration": it + 1, **logs})
    return history


# ---- a sample-based distance ---------------------------------------------------------------------

def mmd_rbf(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5)) -> float:
    """Biased MMD^2 between point sets [N, D] and [M, D] with a sum of Gaussian RBF kernels."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    k = sum(torch.exp(-d2 / (2 * b * b)) for b in bandwidths)
    n = len(x)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
