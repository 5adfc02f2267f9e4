"""VAE losses, its training step for the shared loop, and reconstruction metrics (paper A.1, DAC's scheme).

Generator objective (weights from DAC `conf/base.yml`, plus a small KL term for the bottleneck):

    L_G = 15 * L_mel + 2 * L_feat + 1 * L_adv + kl_weight * KL
    L_mel  = sum over scales of | log10 mel(x_hat) - log10 mel(x) |_1      (windows 32..2048, 5..320 mels)
    L_adv  = sum_k mean (1 - D_k(x_hat))^2                                  (least-squares GAN)
    L_feat = sum_k sum_l | D_k^l(x_hat) - D_k^l(x) |_1                      (L1 feature matching)
    L_D    = sum_k mean D_k(x_hat)^2 + mean (1 - D_k(x))^2

The GAN terms switch on after `gan_start` steps (a mel/KL-only warm-up gives the discriminators something
sensible to judge). The `vae` stage (`presto_lib.stages.vae.train_vae`, notebooks/02_vae) runs the recipe.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from presto_lib.audio import mel_spectrogram, resample
from presto_lib.models.discriminators import Discriminator
from presto_lib.models.vae import VAE, VAEConfig, kl_divergence


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def multiscale_mel_loss(x_hat: torch.Tensor, x: torch.Tensor, sample_rate: int,
                        windows=(32, 64, 128, 256, 512, 1024, 2048),
                        n_mels=(5, 10, 20, 40, 80, 160, 320)) -> torch.Tensor:
    """DAC's MelSpectrogramLoss: sum over scales of L1 between log10 mel magnitudes (hop = window / 4), fp32."""
    if len(windows) != len(n_mels):
        raise ValueError(f"{len(windows)} mel windows but {len(n_mels)} mel sizes")
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    loss = x.new_zeros((), dtype=torch.float32)
    for w, m in zip(windows, n_mels):
        mx, my = (mel_spectrogram(a.float(), sample_rate, n_fft=w, hop_length=w // 4, n_mels=m, power=1.0,
                                  log=True, clamp=1e-5) for a in (x_hat, x))
        loss = loss + (mx - my).abs().mean() / math.log(10.0)   # natural log -> log10, as DAC
    return loss


def discriminator_loss(d_fake: list[list[torch.Tensor]], d_real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Least-squares GAN discriminator loss (fake -> 0, real -> 1), summed over sub-discriminators."""
    return sum(f[-1].pow(2).mean() + (1 - r[-1]).pow(2).mean() for f, r in zip(d_fake, d_real))


def generator_adv_loss(d_fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Least-squares GAN generator loss (fake -> 1)."""
    return sum((1 - f[-1]).pow(2).mean() for f in d_fake)


def feature_matching_loss(d_fake: list[list[torch.Tensor]], d_real: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminators' intermediate features of fake and (detached) real audio."""
    return sum(F.l1_loss(a, b.detach()) for f, r in zip(d_fake, d_real) for a, b in zip(f[:-1], r[:-1]))


# ---------------------------------------------------------------------------------------------
# Training recipe on presto_lib.train
# ---------------------------------------------------------------------------------------------

def random_segments(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Random crop of `length` samples per item of [B, 1, T] (torch RNG, so resumes exactly)."""
    B, _, T = wave.shape
    if T <= length:
        return F.pad(wave, (0, length - T))
    start = torch.randint(0, T - length + 1, (B,)).tolist()
    return torch.stack([wave[b, :, s:s + length] for b, s in enumerate(start)])


@contextmanager
def frozen_params(module: torch.nn.Module):
    """Disable grads of `module` inside the block (use D in the generator loss without updating D)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def build_vae_modules(V: dict, sample_rate: int) -> tuple[VAE, Discriminator]:
    """The VAE and its discriminators from a `vae` params group."""
    vae = VAE(VAEConfig.from_params({**V, "sample_rate": sample_rate}))
    disc = Discriminator(V["periods"], V["fft_sizes"], V["mpd_channels"], V["mrd_channels"])
    return vae, disc


def make_vae_step(V: dict, sample_rate: int):
    """The VAE-GAN step for `presto_lib.train.train`: D step (after warm-up), then the generator step."""
    seg = int(round(V["segment_seconds"] * sample_rate))
    mel_kw = dict(sample_rate=sample_rate, windows=V["mel_windows"], n_mels=V["mel_bins"])

    def step_fn(ctx, batch, step: int) -> dict[str, Any]:
        x = random_segments(batch["wave"], seg)
        out = ctx.modules["vae"](x)
        recon, gan = out["recon"], step >= V["gan_start"]
        m: dict[str, Any] = {}
        if gan:  # ---- discriminator step: L_D on detached reconstructions ----
            d_loss = discriminator_loss(ctx.modules["disc"](recon.detach()), ctx.modules["disc"](x))
            ctx.backward_and_step(d_loss, "disc")
            m["d_loss"] = d_loss.detach()
        # ---- generator step: mel + KL (+ adversarial + feature matching) ----
        with ctx.autocast(False):
            mel = multiscale_mel_loss(recon, x, **mel_kw)
            kl = kl_divergence(out["mean"].float(), out["logvar"].float())
        loss = V["mel_weight"] * mel + V["kl_weight"] * kl
        if gan:
            with frozen_params(ctx.raw["disc"]) as D:
                d_fake = D(recon)
                with torch.no_grad():
                    d_real = D(x)
            adv, feat = generator_adv_loss(d_fake), feature_matching_loss(d_fake, d_real)
            loss = loss + V["gen_weight"] * adv + V["feat_weight"] * feat
            m.update(adv=adv.detach(), feat=feat.detach())
        ctx.backward_and_step(loss, "vae")
        return {"loss": loss.detach(), "mel": mel.detach(), "kl": kl.detach(), **m}

    return step_fn


# ---------------------------------------------------------------------------------------------
# Reconstruction metrics and a trivial baseline
# ---------------------------------------------------------------------------------------------

def si_sdr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB over the last axis (Le Roux et al. 2019): zero-mean, optimal scaling."""
    est, ref = est - est.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    return 10 * torch.log10(target.pow(2).sum(-1) / ((est - target).pow(2).sum(-1) + eps) + eps)


@torch.no_grad()
def reconstruct(vae: VAE, wave: torch.Tensor) -> torch.Tensor:
    """Deterministic reconstruction (posterior mean) of [B, 1, T], cropped to T."""
    return vae(wave, sample=False)["recon"]


def lowpass_baseline(wave: np.ndarray, sample_rate: int, floats_per_second: float) -> np.ndarray:
    """A codec-free baseline with the VAE's information rate: keep `floats_per_second` samples per second
    (resample down to that rate, i.e. low-pass at half of it, and back up)."""
    low, T = int(round(floats_per_second)), wave.shape[-1]
    flat = np.asarray(wave, dtype=np.float32).reshape(-1, T)
    out = resample(resample(flat, sample_rate, low), low, sample_rate)[:, :T]
    return np.pad(out, [(0, 0), (0, T - out.shape[-1])]).reshape(wave.shape)
