# %% [markdown]
# # 02 · The VAE: from waveforms to latents
#
# **Paper, A.1.** *"As we perform latent diffusion, we first train a variational autoencoder. We build on the
# Improved RVQGAN (Kumar et al., 2023) architecture and training scheme by using a KL-bottleneck with a
# dimension of 32 and an effective hop of 960 samples, resulting in an approximately 45 Hz VAE. We train to
# convergence using the recommended mel-reconstruction loss and the least-squares GAN formulation with L1
# feature matching on multi-period and multi-band discriminators."*
#
# Every model after this notebook (the DiT score model, Presto-S, Presto-L) works on these latents, never on
# audio: a 32-s clip at 44.1 kHz is 1.4 M samples but only 1 378 latent frames of 32 numbers. The VAE decoder
# turns the generated latents back into audio, and it is part of the latency the paper reports (Table 3).
#
# This notebook
# 1. walks through the architecture (`presto_lib/models/vae.py`, `discriminators.py`),
# 2. trains it with the project's one training loop (`presto_lib/train.py`; resumable: rerunning continues
#    from `data/vae/checkpoints`),
# 3. computes the **latent scale** that gives the diffusion model unit-variance latents,
# 4. measures reconstructions on the held-out test split (multi-scale mel distance, SI-SDR) against a trivial
#    baseline, and lets you listen.
#
# **Needs:** the `corpus` stage (`dvc repro corpus`, notebook 01). This notebook *is* the `vae` stage and
# trains the VAE (the longest stage after the base model: progress on the terminal under `dvc repro vae`).

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import require, start

S = start("vae", params_file)   # project root, params, seed, threads, device
P = S.P

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display

from presto_lib.config import PROFILES, render_profile
from presto_lib.data import ClipDataset
from presto_lib.eval.plotting import save_figure, set_theme, spectrogram_grid
from presto_lib.models.vae import VAE, VAEConfig, kl_divergence, load_vae
from presto_lib.models.vae_losses import (build_vae_modules, lowpass_baseline, multiscale_mel_loss, reconstruct,
                                          si_sdr)
from presto_lib.stages.vae import train_vae

V, COMMON = P["vae"], P["common"]
torch.set_num_threads(V["threads"])
SR, SEED = COMMON["sample_rate"], COMMON["seed"]
MANIFEST = require(Path(P["corpus"]["out_dir"]) / "manifest.csv", "corpus")
OUT = Path(V["out_dir"])
FIG, TAB = S.figures, S.tables
set_theme()                        # the project's one figure style
FIG.mkdir(parents=True, exist_ok=True)
TAB.mkdir(parents=True, exist_ok=True)
print(f"profile {P['profile']}: {SR} Hz, strides {V['strides']} (hop {math.prod(V['strides'])}), "
      f"latent dim {V['latent_dim']}, {V['steps']} steps (GAN from step {V['gan_start']})")

# %% [markdown]
# ## 1. Architecture: DAC's convolutional codec with a Gaussian bottleneck
#
# The encoder is a stack of **blocks**, one per stride $s_i$: three residual units (dilated convolutions with
# dilations 1, 3, 9, so the receptive field grows fast) then a strided convolution that divides the time axis
# by $s_i$ and doubles the channels. The decoder mirrors it with transposed convolutions. The hop is
# $\prod_i s_i$: the paper's $[2, 4, 4, 6, 5]$ gives 960 samples, i.e. 44 100 / 960 ≈ 45.9 latent frames per
# second. Smaller profiles keep the design and shrink strides and widths (table below).
#
# Two details from DAC: every convolution is **weight-normalised**, and the nonlinearity is **Snake**,
# $x + \frac{1}{\alpha}\sin^2(\alpha x)$, whose learned per-channel frequency $\alpha$ gives a periodic inductive
# bias that suits audio better than ReLU-like functions (plotted below).
#
# DAC quantises the encoder output with residual vector quantisation; Presto replaces that with a **KL
# bottleneck**: the encoder predicts a mean and log-variance per latent channel and frame,
# $q(\mathbf{z}\mid\mathbf{x}) = \mathcal{N}(\boldsymbol\mu, \operatorname{diag}\boldsymbol\sigma^2)$, the decoder
# sees a sample $\mathbf{z} = \boldsymbol\mu + \boldsymbol\sigma\odot\boldsymbol\epsilon$, and a small
# $\mathrm{KL}(q \,\|\, \mathcal{N}(0, I)) = \tfrac12\sum(\mu^2 + \sigma^2 - 1 - \log\sigma^2)$ keeps the latent space
# smooth and bounded, which is what a diffusion model needs (continuous latents instead of tokens).
#
# One addition of ours: the encoder sees the waveform times `input_gain` = 10. Our clips sit at about -20 LUFS
# (RMS ≈ 0.1), where every Snake of a freshly initialised encoder is almost linear, and a *linear* map from
# audio to 50 Hz frames carries next to nothing (music has no energy below 25 Hz). Without the gain the
# decoder spends hundreds of steps producing one constant drone that ignores the latents; with it, the latents
# follow the music from the first steps. (DAC never notices: it trains for 250 k steps.)

# %%
rows = []
for name in PROFILES:
    Q = render_profile(name)
    hop = math.prod(Q["vae"]["strides"])
    with torch.device("meta"):
        n_params = sum(p.numel() for p in VAE(VAEConfig.from_params(Q["vae"])).parameters())
    rows.append({"profile": name, "sample rate": Q["common"]["sample_rate"], "strides": Q["vae"]["strides"],
                 "hop": hop, "latent Hz": round(Q["common"]["sample_rate"] / hop, 1),
                 "latent dim": Q["vae"]["latent_dim"], "VAE params (M)": round(n_params / 1e6, 2),
                 "compression (samples per latent number)": round(hop / Q["vae"]["latent_dim"], 1)})
pd.DataFrame(rows).set_index("profile")

# %%
torch.manual_seed(SEED)
vae0, disc0 = build_vae_modules(V, SR)
x = torch.randn(1, 1, SR)  # one second of noise: follow its shape through the encoder and decoder
print(f"input                         {tuple(x.shape)}")
h = x
for i, layer in enumerate(vae0.encoder.block):
    h = layer(h)
    print(f"encoder[{i}] {type(layer).__name__:18s} {tuple(h.shape)}")
mean, logvar = h.chunk(2, dim=1)
print(f"posterior mean / logvar        {tuple(mean.shape)} each")
h = mean
for i, layer in enumerate(vae0.decoder.block):
    h = layer(h)
    print(f"decoder[{i}] {type(layer).__name__:18s} {tuple(h.shape)}")
count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
print(f"\nencoder {count(vae0.encoder):.2f} M, decoder {count(vae0.decoder):.2f} M, "
      f"discriminators {count(disc0):.2f} M parameters")

# %%
xs = torch.linspace(-6, 6, 600)
fig, ax = plt.subplots(figsize=(5, 3))
for a in (0.5, 1.0, 2.0):
    ax.plot(xs, xs + torch.sin(a * xs) ** 2 / a, label=f"alpha = {a}")
ax.set(title="Snake activation x + sin²(αx)/α", xlabel="x")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Training objective and the GAN
#
# Following DAC (`conf/base.yml`) the generator (encoder + decoder) minimises
#
# $$\mathcal{L}_G = 15\,\mathcal{L}_{\text{mel}} + 2\,\mathcal{L}_{\text{feat}} + 1\,\mathcal{L}_{\text{adv}} + \lambda_{\text{KL}}\,\mathrm{KL},$$
#
# * $\mathcal{L}_{\text{mel}}$: L1 distance between log-mel spectrograms of $\hat{\mathbf{x}}$ and $\mathbf{x}$,
#   summed over several resolutions (windows 32 ... 2048 samples, 5 ... 320 mel bands): short windows see
#   transients, long ones see pitch;
# * $\mathcal{L}_{\text{adv}} = \sum_k (1 - D_k(\hat{\mathbf{x}}))^2$: the least-squares GAN loss, summed over the
#   sub-discriminators;
# * $\mathcal{L}_{\text{feat}}$: L1 between the discriminators' intermediate features of $\hat{\mathbf{x}}$ and
#   $\mathbf{x}$ ("feature matching", a perceptual loss learned on the fly).
#
# The discriminators minimise $\sum_k D_k(\hat{\mathbf{x}})^2 + (1 - D_k(\mathbf{x}))^2$. There are two kinds:
# **multi-period** discriminators (MPD, from HiFi-GAN) fold the waveform into a 2-D array of period $p$ so each
# column sees every $p$-th sample, and **multi-band multi-resolution STFT** discriminators (MRD) look at the
# complex spectrogram (real and imaginary parts, so phase too) split into frequency bands.
#
# The GAN terms start after `gan_start` steps of mel + KL only. One loop step = one discriminator update, then
# one generator update, each through `ctx.backward_and_step` of the shared loop, which also keeps an EMA of the
# VAE weights (the exported model), checkpoints everything (modules, EMA, optimisers, RNG, data position)
# and appends the losses to `log.csv`.

# %%
print(f"training the VAE on {MANIFEST} -> {OUT}")
vae = train_vae(P, MANIFEST, OUT)
log = pd.read_csv(OUT / "log.csv")
wall = float(log["wall_s"].iloc[-1])
display(Markdown(f"**{int(log['step'].iloc[-1])} steps in {wall / 60:.1f} min of training wall time** "
                 f"(batch {V['batch_size']} x {V['segment_seconds']} s excerpts, "
                 f"{torch.get_num_threads()} torch threads; summed over resumed runs)."))

# %%
cols = [c for c in ("mel", "kl", "adv", "feat", "d_loss") if c in log]
fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.8))
for ax, c in zip(np.atleast_1d(axes), cols):
    ax.plot(log["step"], log[c])
    ax.axvline(V["gan_start"], color="gray", ls=":", lw=1)
    ax.set(title=c, xlabel="step")
fig.suptitle("VAE training losses (dotted: GAN starts)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Latent scale: unit-variance latents for diffusion
#
# The KL weight is tiny, so nothing forces the posterior means to have unit variance. EDM's preconditioning
# assumes data of standard deviation $\sigma_{\text{data}} = 0.5$ around a known scale, so, as Stable Diffusion
# does, we measure the standard deviation of the posterior means over training clips and store
# `latent_scale = 1 / std` in `data/vae/config.json`. The latent cache multiplies latents by it; decoding
# divides it out. The KL term's value and the scaled latents' histogram:

# %%
train_ds = ClipDataset(MANIFEST, "train", sample_rate=SR)
with torch.no_grad():
    lat = [vae.encode(train_ds[i]["wave"][None]) for i in range(min(8, len(train_ds)))]
means = torch.cat([m for m, _ in lat], dim=-1)
kl = np.mean([kl_divergence(m, lv).item() for m, lv in lat])
print(f"latent_scale = {vae.latent_scale:.4f}; scaled latents: mean {means.mean() * vae.latent_scale:+.3f}, "
      f"std {means.std() * vae.latent_scale:.3f}; KL per frame {kl:.1f} nats")
fig, ax = plt.subplots(figsize=(5, 2.8))
ax.hist((means * vae.latent_scale).flatten().numpy(), bins=80, density=True)
ax.set(title="scaled posterior means (8 train clips)", xlabel="value")
plt.show()

# %% [markdown]
# ## 4. Reconstructions on the held-out test split
#
# Two metrics, on `eval_clips` test clips (pieces never seen in training), reconstructed from the posterior
# mean (no sampling):
# * **multi-scale mel distance**: the training mel loss (L1 of log10 mels, summed over the profile's
#   resolutions), lower is better; it tracks how a reconstruction *sounds*;
# * **SI-SDR** (scale-invariant signal-to-distortion ratio, dB), higher is better; it compares waveforms
#   sample by sample, so it also punishes phase differences the ear barely hears (GAN codecs score low on it).
#
# **Baseline.** A codec-free reference with the *same information rate*: the VAE keeps
# latent_dim × sample_rate / hop numbers per second, so we keep that many samples per second by resampling
# down to that rate (a low-pass at half of it) and back up. A VAE that is worth anything must beat it.

# %%
test_ds = ClipDataset(MANIFEST, "test", sample_rate=SR)
n_eval = min(V["eval_clips"], len(test_ds))
rate = V["latent_dim"] * SR / vae.hop_length
mel_kw = dict(sample_rate=SR, windows=V["mel_windows"], n_mels=V["mel_bins"])
rows, examples = [], []
for i in range(n_eval):
    x = test_ds[i]["wave"][None]
    systems = {"VAE": reconstruct(vae, x),
               f"low-pass baseline ({rate:.0f} samples/s)": torch.from_numpy(lowpass_baseline(x.numpy(), SR, rate))}
    for name, y in systems.items():
        rows.append({"system": name, "clip": i, "mel distance": multiscale_mel_loss(y, x, **mel_kw).item(),
                     "SI-SDR (dB)": si_sdr(y[0, 0], x[0, 0]).item()})
    examples.append((x, systems))
per_clip = pd.DataFrame(rows)
table = per_clip.groupby("system", sort=False)[["mel distance", "SI-SDR (dB)"]].agg(["mean", "std"]).round(3)
table.columns = [f"{a} {b}" for a, b in table.columns]
table.insert(0, "clips", n_eval)
table.to_csv(TAB / "vae_reconstruction.csv")
(TAB / "vae_reconstruction.md").write_text(
    f"VAE reconstruction on {n_eval} test clips (profile {P['profile']}, {SR} Hz, hop {vae.hop_length}, "
    f"latent dim {vae.latent_dim}); mean and std over clips.\n\n" + table.to_markdown() + "\n")
S.write_metrics("vae", {"train_steps": int(V["steps"]), "clips": n_eval,
                        "mel_distance": float(table.loc["VAE", "mel distance mean"]),
                        "si_sdr_db": float(table.loc["VAE", "SI-SDR (dB) mean"])})
table

# %%
n_show = min(2, n_eval)
names = ["original", *examples[0][1]]
fig = spectrogram_grid({f"test clip {r}": [y[0, 0].numpy() for y in (x, *systems.values())]
                        for r, (x, systems) in enumerate(examples[:n_show])}, SR, captions=names)
fig.suptitle("VAE reconstructions of held-out clips (log-mel, shared dB scale)")
save_figure(fig, FIG / "fig_vae_reconstruction.png")
plt.show()

# %% [markdown]
# Listen: original, VAE reconstruction, baseline.

# %%
for r, (x, systems) in enumerate(examples[:n_show]):
    display(Markdown(f"**Test clip {r}**: {test_ds[r]['caption']}"))
    for name, y in [("original", x), *systems.items()]:
        display(Markdown(name), Audio(y[0, 0].numpy(), rate=SR, normalize=False))

# %% [markdown]
# ## 5. Reload from disk
#
# Later stages load the exported EMA weights with `load_vae("data/vae")`: `model.safetensors` + `config.json`
# (architecture and `latent_scale`), no pickle. A quick check that the file decodes what we just evaluated:

# %%
again = load_vae(OUT)
x = examples[0][0]
print("reloaded == trained:", torch.allclose(reconstruct(again, x), reconstruct(vae, x), atol=1e-5),
      f"| config: {again.config}")

# %% [markdown]
# ## Takeaways
#
# * The VAE compresses audio by the factor in the table of section 1 into smooth, unit-scaled continuous
#   latents; the diffusion model (notebook 03) only ever sees those.
# * Differences from the paper: our small profiles shrink the sample rate, strides, widths and training time
#   (the paper trains "to convergence", DAC 250 k steps at batch 72); the `paper` profile restores the paper's
#   44.1 kHz / hop 960 / 32 dims with DAC's base widths and discriminators. The KL weight and the latent-scale
#   recipe are not given in the paper: we use a small KL (1e-4) and a global scale, as Stable Diffusion does.
# * What a short CPU run gives: reconstructions that follow the music's timing and register and beat the
#   same-rate low-pass baseline on mel distance by a wide margin, but are far from transparent. Expect a buzz at
#   the latent frame rate (horizontal lines at harmonics of 50 Hz in the spectrogram) and faint tones at
#   multiples of the decoder's intermediate rates: transposed-convolution decoders start that way and the GAN
#   removes them over many steps. The mel loss barely registers them, but a music embedding does: at `cpu`, the
#   VAE ceiling of notebook 03 (the FAD of reconstructed test clips) measured 78.5 after 1000 steps, 45.9 after
#   2000 and 33.9 after 3000, while 3000 steps of mel + KL alone (no GAN) gave 74.0. That is why the `cpu`
#   profile spends most of its VAE budget in the GAN phase. Raise `vae.steps` if you can afford it; the `gpu` /
#   `paper` profiles train for 100 k / 250 k steps.
# * SI-SDR stays very low (even below the baseline): the decoder is trained to match spectra and fool the
#   discriminators, not to reproduce the waveform's phase, so SI-SDR is the wrong yardstick for a GAN codec
#   (DAC reports mel distance and ViSQOL for that reason); it is here as the standard waveform metric.
