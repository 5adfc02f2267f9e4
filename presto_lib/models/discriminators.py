"""The VAE's GAN discriminators (paper A.1: "multi-period and multi-band discriminators", as in DAC).

* `MPD` (HiFi-GAN's multi-period discriminator): folds the wave into [T / p, p] and runs 2-D convs along
  time, so each column sees every p-th sample - periodic structure at period p.
* `MRD` (DAC's complex multi-band multi-resolution STFT discriminator): real + imaginary STFT channels, split
  into frequency bands that each get their own conv stack, then merged.
* `Discriminator` runs all of them; every sub-discriminator returns its feature maps, the last being the logits
  (used by the least-squares GAN loss; the others by L1 feature matching, see `vae_losses`).

Widths follow DAC `dac/model/discriminator.py` (MPD 32 -> 1024 channels, MRD 32) scaled by `mpd_channels` /
`mrd_channels` so small profiles stay cheap.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))   # DAC conf/base.yml


def wn_conv2d(*args, act: bool = True, **kwargs) -> nn.Module:
    """Weight-normalised Conv2d, followed by LeakyReLU(0.1) unless `act=False`."""
    conv = weight_norm(nn.Conv2d(*args, **kwargs))
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


class MPD(nn.Module):
    """Multi-period discriminator for one period p."""

    def __init__(self, period: int, channels: int = 32, max_channels: int = 1024):
        super().__init__()
        self.period = period
        ch = [1] + [min(channels * m, max_channels) for m in (1, 4, 16, 32, 32)]
        self.convs = nn.ModuleList(
            [wn_conv2d(ch[i], ch[i + 1], (5, 1), (3, 1), padding=(2, 0)) for i in range(4)]
            + [wn_conv2d(ch[4], ch[5], (5, 1), 1, padding=(2, 0))])
        self.conv_post = wn_conv2d(ch[5], 1, (3, 1), padding=(1, 0), act=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, 1, T] -> feature maps, logits last."""
        pad = (-x.shape[-1]) % self.period
        if pad:
            x = F.pad(x, (0, pad), mode="reflect" if pad < x.shape[-1] else "constant")
        x = x.reshape(x.shape[0], 1, -1, self.period)     # [B, 1, T / p, p]
        fmap = []
        for conv in self.convs:
            x = conv(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


class MRD(nn.Module):
    """Complex multi-band STFT discriminator at one window length (hop = window / 4)."""

    def __init__(self, window_length: int, channels: int = 32, bands=BANDS):
        super().__init__()
        self.window_length, self.hop_length = window_length, window_length // 4
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        ch = channels

        def stack() -> nn.ModuleList:
            return nn.ModuleList([wn_conv2d(2, ch, (3, 9), (1, 1), padding=(1, 4))]
                                 + [wn_conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4)) for _ in range(3)]
                                 + [wn_conv2d(ch, ch, (3, 3), (1, 1), padding=(1, 1))])
        self.band_convs = nn.ModuleList([stack() for _ in self.bands])
        self.conv_post = wn_conv2d(ch, 1, (3, 3), (1, 1), padding=(1, 1), act=False)
        self.register_buffer("window", torch.hann_window(window_length), persistent=False)

    def spectrogram(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, 1, T] -> per band [B, 2 (re, im), frames, band bins]."""
        spec = torch.stft(x[:, 0].float(), self.window_length, self.hop_length, window=self.window,
                          center=True, return_complex=True)             # [B, F, frames]
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)             # [B, 2, frames, F]
        return [spec[..., lo:hi] for lo, hi in self.bands]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, 1, T] -> feature maps, logits last."""
        fmap, outs = [], []
        for band, stack in zip(self.spectrogram(x), self.band_convs):
            for conv in stack:
                band = conv(band)
                fmap.append(band)
            outs.append(band)
        fmap.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmap


class Discriminator(nn.Module):
    """All MPDs and MRDs; input audio is DC-removed and peak-normalised to 0.8 first (as DAC does)."""

    def __init__(self, periods=(2, 3, 5, 7, 11), fft_sizes=(2048, 1024, 512), mpd_channels: int = 32,
                 mrd_channels: int = 32, bands=BANDS):
        super().__init__()
        if not periods and not fft_sizes:
            raise ValueError("Discriminator needs at least one period or FFT size")
        self.discriminators = nn.ModuleList(
            [MPD(p, mpd_channels) for p in periods] + [MRD(f, mrd_channels, bands) for f in fft_sizes])

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        return 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x [B, 1, T] -> one list of feature maps (logits last) per sub-discriminator."""
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"Discriminator expects [B, 1, T], got {tuple(x.shape)}")
        x = self.preprocess(x)
        return [d(x) for d in self.discriminators]
