"""The latent-diffusion VAE (paper A.1): a fully convolutional DAC / Improved RVQGAN codec with a KL bottleneck.

Architecture (Kumar et al. 2023, "High-fidelity audio compression with improved RVQGAN", `dac/model/dac.py`):

    wav [B, 1, T] -> conv7 -> EncoderBlock(stride s_i) x n -> Snake -> conv3 -> (mean, logvar) [B, 2 x C, T/hop]
    z = mean + exp(logvar / 2) * eps         (the KL bottleneck replaces DAC's residual vector quantiser)
    z [B, C, T/hop] -> conv7 -> DecoderBlock(stride s_i, reversed) x n -> Snake -> conv7 -> tanh -> wav

Every block is Snake activations (x + sin^2(a x) / a, periodic inductive bias for audio) around weight-normed
convolutions; an encoder block is three residual units (dilations 1, 3, 9) then a strided conv that doubles the
channels; a decoder block is a transposed conv that halves them then three residual units. The hop is the
product of the strides: the paper's 44.1 kHz VAE has latent dim 32 and hop 960 = [2, 4, 4, 6, 5] (~45 Hz).

Lengths: `encode` zero-pads T on the right to a multiple of the hop, so it returns ceil(T / hop) frames;
`decode` returns frames x hop samples; `forward` crops the reconstruction back to T.

Input gain: corpus clips are loudness-normalised to about -20 LUFS (RMS ~0.1). At that level every Snake in a
freshly initialised encoder works in its almost-linear range, and a linear map from audio to 50 Hz frames
carries next to nothing (music has no energy below 25 Hz): the decoder then spends hundreds of steps producing
one constant drone that ignores z. Multiplying the input by `input_gain` = 10 puts encoder activations at unit
scale, where Snake is nonlinear, and the latents carry the input from the first steps. It is a fixed constant of
the architecture (saved in the config), not a normalisation: reconstructions keep the input's level.

Latent scale: after training, `compute_latent_scale` sets `latent_scale = 1 / std(posterior means)` over training
audio and stores it in `config`, so `latent_scale * mean` has ~unit variance, the scale EDM's sigma_data = 0.5
assumes (Rombach et al. 2022 do the same). The latent cache multiplies by it; decoding divides it out.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.fields import field_names


@dataclass
class VAEConfig:
    """Architecture of the VAE (+ its latent scale once computed)."""
    sample_rate: int = 44100
    strides: list[int] = field(default_factory=lambda: [2, 4, 4, 6, 5])   # paper: hop 960
    latent_dim: int = 32                                                    # paper: 32
    encoder_dim: int = 64                                                   # DAC base: 64, doubled per block
    decoder_dim: int = 1536                                                 # DAC base: 1536, halved per block
    input_gain: float = 10.0                                                # wav x gain enters the encoder
    latent_scale: float = 1.0                                               # set by compute_latent_scale

    @classmethod
    def from_params(cls, params: dict) -> "VAEConfig":
        """Build from a params group (profiles/vae.yaml), ignoring its training keys."""
        names = field_names(cls)
        return cls(**{k: v for k, v in params.items() if k in names})


# ---------------------------------------------------------------------------------------------
# Building blocks (DAC dac/nn/layers.py, dac/model/dac.py)
# ---------------------------------------------------------------------------------------------

def wn_conv1d(*args, **kwargs) -> nn.Module:
    """Weight-normalised Conv1d (DAC uses weight norm on every conv)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    """Weight-normalised ConvTranspose1d."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class Snake1d(nn.Module):
    """Snake activation x + sin^2(alpha x) / alpha with a learned per-channel alpha (Ziyin et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv7 -> Snake -> conv1, plus the input ('same' padding keeps the length)."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim), wn_conv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim), wn_conv1d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Residual units (dilations 1, 3, 9) at dim/2 channels, then a stride-s conv to dim channels."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            *(ResidualUnit(dim // 2, d) for d in (1, 3, 9)), Snake1d(dim // 2),
            wn_conv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """A stride-s transposed conv (in -> out channels, length x s exactly), then residual units 1, 3, 9."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(in_dim),
            wn_conv_transpose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                                output_padding=stride % 2),
            *(ResidualUnit(out_dim, d) for d in (1, 3, 9)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """wav [B, 1, T] -> [B, 2 x latent_dim, T / hop] (posterior mean and log-variance)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        d = cfg.encoder_dim
        layers: list[nn.Module] = [wn_conv1d(1, d, 7, padding=3)]
        for s in cfg.strides:
            d *= 2
            layers.append(EncoderBlock(d, s))
        layers += [Snake1d(d), wn_conv1d(d, 2 * cfg.latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """z [B, latent_dim, T'] -> wav [B, 1, T' x hop] in [-1, 1]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        d = cfg.decoder_dim
        layers: list[nn.Module] = [wn_conv1d(cfg.latent_dim, d, 7, padding=3)]
        for s in reversed(cfg.strides):
            layers.append(DecoderBlock(d, d // 2, s))
            d //= 2
        layers += [Snake1d(d), wn_conv1d(d, 1, 7, padding=3), nn.Tanh()]
        self.block = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.block(z)


# ---------------------------------------------------------------------------------------------
# The VAE
# ---------------------------------------------------------------------------------------------

def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over channels, averaged over batch and frames."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


class VAE(nn.Module):
    """DAC-style encoder/decoder with a diagonal-Gaussian (KL) bottleneck."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.encoder_dim < 2 or cfg.decoder_dim % 2 ** len(cfg.strides):
            raise ValueError(f"decoder_dim {cfg.decoder_dim} must be divisible by 2^{len(cfg.strides)} "
                             f"and encoder_dim >= 2 (got {cfg.encoder_dim})")
        if not cfg.strides or any(s < 1 for s in cfg.strides):
            raise ValueError(f"strides must be positive integers, got {cfg.strides}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def hop_length(self) -> int:
        return math.prod(self.cfg.strides)

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def latent_scale(self) -> float:
        return self.cfg.latent_scale

    @property
    def config(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def pad(self, wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad the time axis on the right to a multiple of the hop."""
        return F.pad(wav, (0, (-wav.shape[-1]) % self.hop_length))

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B, 1, T] -> posterior (mean, logvar), each [B, latent_dim, ceil(T / hop)]."""
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"VAE.encode expects mono audio [B, 1, T], got {tuple(wav.shape)}")
        mean, logvar = self.encoder(self.pad(wav) * self.cfg.input_gain).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim, T'] -> wav [B, 1, T' x hop]."""
        if z.ndim != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"VAE.decode expects [B, {self.latent_dim}, T'], got {tuple(z.shape)}")
        return self.decoder(z)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterisation trick: mean + std * eps."""
        return mean + (0.5 * logvar).exp() * torch.randn_like(mean)

    def forward(self, wav: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """Reconstruct: {"recon": [B, 1, T] (cropped to the input), "mean", "logvar", "z"}."""
        mean, logvar = self.encode(wav)
        z = self.sample(mean, logvar) if sample else mean
        return {"recon": self.decode(z)[..., : wav.shape[-1]], "mean": mean, "logvar": logvar, "z": z}


# ---------------------------------------------------------------------------------------------
# Latent scale, saving and loading
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def compute_latent_scale(vae: VAE, waves: Iterable[torch.Tensor]) -> float:
    """Set (and return) latent_scale = 1 / std of the posterior means over `waves` ([B, 1, T] batches)."""
    n, s, s2 = 0, 0.0, 0.0
    for w in waves:
        mean, _ = vae.encode(w.to(next(vae.parameters()).device))
        m = mean.double()
        n, s, s2 = n + m.numel(), s + m.sum().item(), s2 + m.pow(2).sum().item()
    if n < 2:
        raise ValueError("compute_latent_scale needs some audio")
    std = math.sqrt(max(s2 / n - (s / n) ** 2, 1e-12))
    vae.cfg.latent_scale = 1.0 / std
    return vae.cfg.latent_scale


def save_vae(vae: VAE, path_dir: str | os.PathLike, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Save weights (default: the VAE's own, e.g. pass EMA weights) + config to `path_dir`."""
    return save_checkpoint(path_dir, weights if weights is not None else vae.state_dict(),
                           {"kind": "presto_vae", **vae.config})


def load_vae(path_dir: str | os.PathLike, device: str | torch.device = "cpu") -> VAE:
    """Load a VAE saved by `save_vae` (safetensors + config.json; no pickle), in eval mode."""
    tensors, config = load_checkpoint(path_dir, device)
    if config.pop("kind", None) != "presto_vae":
        raise ValueError(f"{path_dir} does not hold a Presto VAE checkpoint")
    vae = VAE(VAEConfig(**config)).to(device)
    vae.load_state_dict(tensors)
    return vae.eval()
