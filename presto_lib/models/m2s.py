"""A small mono-to-stereo (M2S) model in the spirit of MusicHiFi (Zhu et al. 2024; paper sec. 4.1, A.6).

The paper generates mono audio and widens it with MusicHiFi's stereo vocoder. Ours keeps the mono signal as the
mid channel and predicts only the side channel from it:

    mid = mono,   side = iSTFT( m(|STFT(mid)|) * STFT(mid) ),   L = mid + side,   R = mid - side

so (L + R) / 2 reproduces the input exactly and the model can only add width. The mask m in [-1, 1] (tanh) is
the physically right form for amplitude-panned sources: a source s panned with gains (g_L, g_R) has
mid = (g_L + g_R) s / 2 and side = (g_L - g_R) s / 2, i.e. side = ((g_L - g_R) / (g_L + g_R)) mid in every
time-frequency bin it dominates. The mask comes from a small 2-D conv net on the log magnitude (plus the bin's
frequency), its last layer zero-initialised so an untrained model is dual mono (side = 0).

Loss (`m2s_loss`): multi-scale mel L1 (DAC's, `vae_losses.multiscale_mel_loss`) on L and R, plus the same on the
side signal (its level is far below the mid's and would otherwise hardly be seen), plus a complex STFT L1 on the
side, the one term that tells left from right. `M2SStep` is the step
function for `presto_lib.train.train` (batch["wave"]: stereo [B, 2, T]); `pan_mix` makes panned test signals.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from presto_lib.models.vae_losses import multiscale_mel_loss

__all__ = ["M2SConfig", "MonoToStereo", "mid_side", "m2s_loss", "complex_stft_l1", "side_snr_db", "M2SStep", "pan_mix"]


@dataclass
class M2SConfig:
    """STFT and mask-network sizes."""

    n_fft: int = 1024
    hop_length: int = 256
    channels: int = 16
    layers: int = 4
    kernel: int = 3

    def __post_init__(self):
        if self.n_fft < 4 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ValueError(f"need n_fft >= 4 and 1 <= hop_length <= n_fft, got {self.n_fft}, {self.hop_length}")
        if self.channels < 1 or self.layers < 1 or self.kernel % 2 == 0:
            raise ValueError(f"need channels, layers >= 1 and an odd kernel, got {asdict(self)}")


def mid_side(stereo: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 2, T] -> (mid [B, T], side [B, T]) with mid = (L + R) / 2, side = (L - R) / 2."""
    if stereo.ndim != 3 or stereo.shape[1] != 2:
        raise ValueError(f"expected stereo audio [B, 2, T], got shape {tuple(stereo.shape)}")
    return (stereo[:, 0] + stereo[:, 1]) / 2, (stereo[:, 0] - stereo[:, 1]) / 2


# ---- the model ----------------------------------------------------------------------------------------------

class MonoToStereo(nn.Module):
    """mono [B, T] or [B, 1, T] -> stereo [B, 2, T] with (L + R) / 2 == mono (see the module docstring)."""

    def __init__(self, cfg: M2SConfig | None = None):
        super().__init__()
        self.cfg = cfg or M2SConfig()
        c, k = self.cfg.channels, self.cfg.kernel
        layers: list[nn.Module] = [nn.Conv2d(2, c, k, padding=k // 2), nn.GELU()]
        for i in range(self.cfg.layers - 1):     # dilation in time widens the context cheaply
            d = 2 ** (i + 1)
            layers += [nn.Conv2d(c, c, k, padding=(k // 2, d * (k // 2)), dilation=(1, d)), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 1, 1)
        nn.init.zeros_(self.out.weight)          # zero-init: an untrained model is dual mono (side = 0)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("window", torch.hann_window(self.cfg.n_fft), persistent=False)

    def _stft(self, x: Tensor) -> Tensor:
        return torch.stft(x, self.cfg.n_fft, self.cfg.hop_length, window=self.window.to(x.dtype), center=True,
                          return_complex=True)

    def mask(self, spec: Tensor) -> Tensor:
        """The side/mid ratio in [-1, 1] per time-frequency bin, from log|STFT| and the bin's frequency."""
        logmag = torch.log(spec.abs().clamp_min(1e-5))[:, None]           # [B, 1, F, N]
        freq = torch.linspace(-1, 1, spec.shape[1], device=spec.device, dtype=logmag.dtype)
        freq = freq[None, None, :, None].expand_as(logmag)
        return torch.tanh(self.out(self.net(torch.cat([logmag / 5.0, freq], 1))))[:, 0]

    def side(self, mid: Tensor) -> Tensor:
        """Predicted side signal [B, T] of a mid signal [B, T]."""
        spec = self._stft(mid)
        return torch.istft(spec * self.mask(spec), self.cfg.n_fft, self.cfg.hop_length,
                           window=self.window.to(mid.dtype), center=True, length=mid.shape[-1])

    def forward(self, mono: Tensor) -> Tensor:
        """Stereo [B, 2, T]: L = mid + side, R = mid - side, mid = the input."""
        if mono.ndim == 3 and mono.shape[1] == 1:
            mono = mono[:, 0]
        if mono.ndim != 2:
            raise ValueError(f"expected mono audio [B, T] or [B, 1, T], got shape {tuple(mono.shape)}")
        if mono.shape[-1] < self.cfg.n_fft // 2 + 1:
            raise ValueError(f"{mono.shape[-1]} samples is shorter than half the STFT window ({self.cfg.n_fft})")
        s = self.side(mono)
        return torch.stack([mono + s, mono - s], 1)


# ---- losses and a quality number ---------------------------------------------------------------------------

def complex_stft_l1(x_hat: Tensor, x: Tensor, windows: Sequence[int] = (256, 1024)) -> Tensor:
    """Multi-resolution L1 between complex STFTs, relative to the target's mean magnitude (sign and phase aware)."""
    loss = x.new_zeros((), dtype=torch.float32)
    for w in windows:
        win = torch.hann_window(w, dtype=x.dtype, device=x.device)
        a, b = (torch.stft(v.reshape(-1, v.shape[-1]).float(), w, w // 4, window=win, return_complex=True)
                for v in (x_hat, x))
        loss = loss + (a - b).abs().mean() / (b.abs().mean() + 1e-5)
    return loss


def m2s_loss(pred: Tensor, target: Tensor, sample_rate: int, side_weight: float = 0.1, stft_weight: float = 1.0,
             windows: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
             n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320)) -> dict[str, Tensor]:
    """{'loss', 'mel_lr', 'mel_side', 'stft_side'} for stereo [B, 2, T].

    mel_lr: multi-scale mel L1 on L and R; mel_side: the same on the side signal (its level); stft_side: complex
    STFT L1 on the side, the only term that sees its *sign* (which channel a source sits in: a magnitude loss on
    the side cannot tell left from right, and the L/R mel sees it only through a small change of a large signal).
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch {tuple(pred.shape)} vs {tuple(target.shape)}")
    kw = dict(sample_rate=sample_rate, windows=tuple(windows), n_mels=tuple(n_mels))
    lr = multiscale_mel_loss(pred, target, **kw)
    s_hat, s = mid_side(pred)[1], mid_side(target)[1]
    side = multiscale_mel_loss(s_hat, s, **kw)
    cplx = complex_stft_l1(s_hat, s)
    return {"loss": lr + side_weight * side + stft_weight * cplx, "mel_lr": lr, "mel_side": side, "stft_side": cplx}


def side_snr_db(pred: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-clip SNR (dB) of the predicted side signal; 0 dB = no better than dual mono (side = 0)."""
    s_hat, s = mid_side(pred)[1], mid_side(target)[1]
    return 10 * torch.log10((s.pow(2).sum(-1) + eps) / ((s_hat - s).pow(2).sum(-1) + eps))


# ---- training step for presto_lib.train -------------------------------------------------------------------

class M2SStep:
    """`step_fn(ctx, batch, step)`: the module "m2s" widens the mid of batch["wave"] (stereo [B, 2, T])."""

    def __init__(self, sample_rate: int, side_weight: float = 0.1, stft_weight: float = 1.0, segment: int = 0,
                 **mel: Any):
        self.sample_rate, self.segment, self.mel = int(sample_rate), int(segment), mel
        self.weights = {"side_weight": float(side_weight), "stft_weight": float(stft_weight)}

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        x = batch["wave"].to(ctx.device).float()
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"M2S trains on stereo clips [B, 2, T], got {tuple(x.shape)} (render stereo=True)")
        if 0 < self.segment < x.shape[-1]:      # one random window per batch: a cheaper step
            t0 = int(torch.randint(x.shape[-1] - self.segment + 1, ()))
            x = x[..., t0:t0 + self.segment]
        mid, _ = mid_side(x)
        with ctx.autocast(False):               # STFT masks in fp32
            out = m2s_loss(ctx.modules["m2s"](mid), x, self.sample_rate, **self.weights, **self.mel)
        ctx.backward_and_step(out["loss"], "m2s")
        return {k: v.detach() for k, v in out.items()}


# ---- panned test signals -------------------------------------------------------------------------------------

def pan_mix(sources: Tensor, pans: Tensor | Sequence[float]) -> Tensor:
    """Constant-power pan of sources [B, K, T] (or [K, T]) at pans in [-1 (left), 1 (right)] -> stereo [B, 2, T]."""
    src = sources[None] if sources.ndim == 2 else sources
    p = torch.as_tensor(pans, dtype=src.dtype, device=src.device)
    if src.ndim != 3 or p.shape[-1] != src.shape[1] or (p.abs() > 1).any():
        raise ValueError(f"need sources [B, K, T] and K pans in [-1, 1], got {tuple(src.shape)}, {tuple(p.shape)}")
    theta = (p + 1) * math.pi / 4                                  # 0 = hard left, pi/2 = hard right
    gains = torch.stack([torch.cos(theta), torch.sin(theta)], -2)  # [..., 2, K]
    return torch.einsum("...ck,bkt->bct", gains, src) if gains.ndim == 2 else torch.einsum("bck,bkt->bct", gains, src)
