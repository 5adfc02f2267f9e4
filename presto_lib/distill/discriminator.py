"""Presto-S discriminator: a head on the fake score model's features, and the two GAN losses.

DMD2 (Yin et al. 2024) attaches a classifier branch to the fake score network's bottleneck and downsamples to a
*single* real/fake logit, trained with the non-saturating loss (paper eq. 7). Presto-S (sec. 3.2.3) keeps the
head on the fake model's intermediate activations but downsamples them only *partially*, to a low-resolution
1-D map over latent time, and trains it with a least-squares loss (eq. 8) averaged over that map.

Both heads are here (`HEADS`, `make_head`): "presto" (`DiscriminatorHead`, T / 2^n_down logits) and "dmd2"
(`DMD2Head`: the same strided convs, then pooled over time into one logit per example). Sec. 3.2.3 contrasts
the two, so the DMD2 baselines (the non-saturating rows of Table 1, DMD-GAN in Table 2) use the "dmd2" head.
Both return [B, T'] (T' = 1 for "dmd2"), so the losses below treat them alike.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GanKind = Literal["ls", "ns"]
HEADS = ("presto", "dmd2")


# ---- head ----------------------------------------------------------------------------------------

def _groups(channels: int) -> int:
    """Largest GroupNorm group count <= 32 dividing `channels`."""
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)


def _trunk(hidden: int, ch: int, n_down: int) -> list[nn.Module]:
    """The conv trunk both heads share: n_down strided blocks (each halves latent time: T -> ceil(T / 2), so
    T = 1 stays 1), then one unstrided block; [B, hidden, T] -> [B, ch, ceil(T / 2^n_down)]."""
    if n_down < 0:
        raise ValueError(f"n_down must be >= 0, got {n_down}")
    layers: list[nn.Module] = []
    c_in = hidden
    for _ in range(n_down):
        layers += [nn.Conv1d(c_in, ch, kernel_size=3, stride=2, padding=1), nn.GroupNorm(_groups(ch), ch), nn.SiLU()]
        c_in = ch
    return layers + [nn.Conv1d(c_in, ch, kernel_size=3, padding=1), nn.GroupNorm(_groups(ch), ch), nn.SiLU()]


class DiscriminatorHead(nn.Module):
    """Features [B, T, hidden] -> logits [B, T / 2^n_down]: strided 1-D convs, partial downsampling (sec. 3.2.3)."""

    def __init__(self, hidden: int, channels: int | None = None, n_down: int = 2):
        super().__init__()
        ch = channels or hidden
        self.net = nn.Sequential(*_trunk(hidden, ch, n_down),
                                 nn.Conv1d(ch, 1, kernel_size=1))       # one logit per low-resolution time step
        self.hidden, self.n_down, self.channels = hidden, n_down, ch

    kind = "presto"

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, T, hidden] (a DiT block's output) -> [B, T'], T' = ceil(T / 2^n_down)."""
        if feats.ndim != 3 or feats.shape[-1] != self.hidden:
            raise ValueError(f"expected features [B, T, {self.hidden}], got {tuple(feats.shape)}")
        h = feats.transpose(1, 2).to(self.net[-1].weight.dtype)
        return self.net(h).squeeze(1)


class DMD2Head(nn.Module):
    """Features [B, T, hidden] -> one logit [B, 1]: strided convs, then downsampled into a single logit (DMD2)."""

    def __init__(self, hidden: int, channels: int | None = None, n_down: int = 2):
        super().__init__()
        ch = channels or hidden
        self.net = nn.Sequential(*_trunk(hidden, ch, n_down),
                                 nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(ch, 1))   # whole clip -> one logit
        self.hidden, self.n_down, self.channels = hidden, n_down, ch

    kind = "dmd2"

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, T, hidden] -> [B, 1]."""
        if feats.ndim != 3 or feats.shape[-1] != self.hidden:
            raise ValueError(f"expected features [B, T, {self.hidden}], got {tuple(feats.shape)}")
        return self.net(feats.transpose(1, 2).to(self.net[-1].weight.dtype))


def make_head(kind: str, hidden: int, channels: int | None = None, n_down: int = 2) -> nn.Module:
    """The discriminator head of `kind`: "presto" (T / 2^n_down logits, sec. 3.2.3) or "dmd2" (one logit)."""
    if kind == "presto":
        return DiscriminatorHead(hidden, channels, n_down)
    if kind == "dmd2":
        return DMD2Head(hidden, channels, n_down)
    raise ValueError(f"unknown discriminator head {kind!r}; choose one of {', '.join(HEADS)}")


# ---- losses (Algorithm 1 lines 10 and 18; eqs. 7 and 8) -----------------------------------------

def generator_gan_loss(fake_logits: Tensor, kind: GanKind = "ls") -> Tensor:
    """Generator side: LS ||1 - D(x_gen)||^2 (Algorithm 1, line 10) or NS softplus(-D(x_gen)) (eq. 7)."""
    if kind == "ls":
        return (1.0 - fake_logits.float()).pow(2).mean()
    if kind == "ns":
        return F.softplus(-fake_logits.float()).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose 'ls' (least squares, eq. 8) or 'ns' (non-saturating, eq. 7)")


def discriminator_gan_loss(real_logits: Tensor, fake_logits: Tensor, kind: GanKind = "ls") -> Tensor:
    """Discriminator side: LS ||D(x_gen)||^2 + ||1 - D(x_real)||^2 (line 18) or NS -log D(real) - log(1 - D(gen))."""
    r, f = real_logits.float(), fake_logits.float()
    if kind == "ls":
        return f.pow(2).mean() + (1.0 - r).pow(2).mean()
    if kind == "ns":
        return F.softplus(f).mean() + F.softplus(-r).mean()
    raise ValueError(f"unknown GAN loss {kind!r}; choose 'ls' (least squares, eq. 8) or 'ns' (non-saturating, eq. 7)")


@torch.no_grad()
def real_accuracy(real_logits: Tensor, kind: GanKind = "ls") -> float:
    """Fraction of real inputs the discriminator calls real (paper Fig. 8's collapse signal)."""
    thr = 0.5 if kind == "ls" else 0.0
    return float((real_logits.float() > thr).float().mean())
