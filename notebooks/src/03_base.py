# %% [markdown]
# # 03 · The base model: text + BPM → music with an EDM-trained DiT
#
# Presto distils a **base model**, and every speed-up in the paper is measured against it (Table 2, "Base Model,
# Diffusion Sampling: DPM-2S"). The paper's base model (sec. 4.1, A.1) is a latent diffusion model:
#
# * a VAE turns 44.1 kHz mono audio into a ~45 Hz sequence of 32-d latents (our `vae` stage, notebook 02);
# * a DiT-XL-like transformer $F_\theta$ (Llama-style blocks, AdaLN conditioning on noise level + BPM, T5 text
#   tokens concatenated to the attention keys) is trained as an EDM score model on those latents;
# * generation runs DPM-Solver++(2S) ("DPM-2S") on the probability-flow ODE with CFG++ guidance, $w = 0.8$,
#   then decodes the latents with the VAE.
#
# This notebook builds that pipeline at the active profile's size, in four steps:
#
# 1. **Latent cache** (stage `latents`): encode the corpus *once*, so training never runs the VAE or text encoder.
# 2. **Training** with denoising score matching (eq. 3) and 10% condition dropout, through `presto_lib.train`.
# 3. **Sampling** with DPM-2S + CFG++, decoding, listening, and a **BPM-following** check.
# 4. **Evaluation**: samples for every test prompt, FAD/MMD/CLAP/density/recall/coverage, real-time factor, and the
#    Table 2 row.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import start

S = start("base", params_file)   # project root, params, seed, threads, device
P = S.P

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display

from presto_lib.audio import mel_spectrogram
from presto_lib.data import ClipDataset
from presto_lib.data.captions import strip_tempo
from presto_lib.data.datasets import read_manifest
from presto_lib.data.latents import LatentDataset, collate_latents, read_meta
from presto_lib.diffusion.edm import dsm_loss, edm_sigmas
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic, read_prompts, write_samples
from presto_lib.diffusion.score_model import batch_condition, load_score_model
from presto_lib.eval.tempo import bpm_following, bpm_pairs, estimate_tempo, tempo_accuracy
from presto_lib.stages.base import train_base
from presto_lib.stages.evaluation import make_evaluator
from presto_lib.stages.tables import write_rows
from presto_lib.eval.latency import measure_latency, real_time_factor

B, E, M = P["base"], P["edm"], P["metrics"]
SEED = int(P["common"]["seed"])
TABLES, FIGS = S.tables, S.figures
for d in (TABLES, FIGS):
    d.mkdir(parents=True, exist_ok=True)
torch.manual_seed(SEED)
print(f"profile {P['profile']}: DiT {B['dit']}, {B['steps']} steps of batch {B['batch_size']}, "
      f"sampling {B['sampler']} x {B['sample_steps']} steps, {B['guidance']} w={B['cfg_weight']}")

# %% [markdown]
# ## 1. The latent cache
#
# Diffusion training visits every clip many times; the VAE encoder and the text encoder are frozen, so their
# outputs never change. The `latents` stage (`python -m presto_lib.stages.latents`) therefore stored, per split,
# the VAE posterior means, the caption's token embeddings and mask (all-MiniLM-L6-v2 here, T5 in the paper) and the
# BPM label (with `base.sample_posterior` also the posterior standard deviation, to draw a fresh $z \sim q(z|x)$
# each time). Training reads only these tensors; a cache over 2 GiB per split is memory-mapped and read per item.
#
# **Normalisation.** EDM's preconditioning (eq. 4) assumes data of a known scale. The VAE stores one scale that
# makes its latents unit-variance *overall*, but that variance can be mostly *not music*: a KL-VAE's channels sit at
# large constant offsets, and the zero padding of its convolutions makes the first and last few frames of every
# clip large outliers shared by all clips. The music is then a residual a few hundredths wide, far below the noise
# levels where the sampler decides structure, and a model that learns offsets and edges already scores a low loss
# while it generates a drone. Like EDM2 (Karras et al. 2024), the cache therefore standardises every channel with
# the train split's statistics, $x = (s\,z - m_c)/\sigma_c$, here *robust* ones (median $m_c$, $\sigma_c$ =
# 1.4826 × median absolute deviation) so that the edge frames do not set the scale; decoding inverts it
# (`LatentCodec`). Left: the VAE-scaled channels' location and scale; right: the normalised training latents
# (interior frames near std 0.5 = sigma_data; the edge frames stay large, and the model learns them like any other data).

# %%
meta = read_meta(B["latents"])
train_ds, valid_ds = LatentDataset(B["latents"], "train"), LatentDataset(B["latents"], "valid")
z = torch.stack([train_ds[i]["latents"] for i in range(min(len(train_ds), 1024))])   # (a paper-size cache is lazy)
display(pd.DataFrame([{"split": s, "clips": n, "hours": n * meta["clip_samples"] / meta["sample_rate"] / 3600}
                      for s, n in meta["splits"].items()]).round(3))
print(f"latents [C={meta['latent_dim']}, T'={meta['latent_frames']}] per {meta['clip_samples'] / meta['sample_rate']:.1f} s "
      f"clip ({meta['sample_rate'] / meta['hop_length']:.0f} Hz), VAE scale {meta['latent_scale']:.3f}; "
      f"text [{meta['text_length']} tokens x {meta['text_dim']}] from {meta['text_encoder']}")
norm = meta["latent_norm"]
fig, ax = plt.subplots(1, 2, figsize=(11, 3))
ch = np.arange(meta["latent_dim"])
ax[0].bar(ch - 0.2, np.abs(norm["mean"]), width=0.4, label="|median|")
ax[0].bar(ch + 0.2, norm["std"], width=0.4, label="1.4826 MAD")
ax[0].set(xlabel="latent channel", title=f"VAE-scaled latents: overall std {meta['scaled_std_train']:.2f}")
ax[0].legend()
inner = z[:, :, 8:-8]
ax[1].hist(inner.flatten().numpy(), bins=120, density=True, range=(-6, 6))
ax[1].set(xlabel="latent value", title=f"normalised interior frames of {len(z)} clips: std {inner.std():.2f} "
          f"(all frames: {z.std():.2f})")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Latents at $\sigma_{data}$ (fixed).** The paper (A.1) uses "$\sigma_{data} = 0.5$, following Karras et al.
# (2024)" in the preconditioning of eq. 4, and EDM2 scales its latents to std 0.5 to match. Earlier caches of this
# project standardised every channel to *unit* std, i.e. data at twice $\sigma_{data}$: every noise setting
# ($P_{mean}$, the $\sigma$ range, the dropping quintiles, the "training" region that $p_{DMD}$ / $p_{GAN}$ use in
# Table 1) then sat 6 dB lower in SNR relative to the data than in the paper, and $c_{in}$, $c_{skip}$ were off.
# The cache now scales each channel's std to `base.latent_std` = 0.5 (= `edm.sigma_data`). A robust spread (1.4826
# MAD, `base.latent_spread: mad`) ignores the clips' padded edge frames, but left the plain per-channel std at a
# median 0.596 (5 of 16 channels within 10% of 0.5); the plain std (`std`, what EDM2 uses) puts every channel at
# 0.5 exactly. The cache records the plain per-channel std of the train split (`tests/test_latents.py`):

# %%
cstd = np.asarray(meta.get("channel_std_train", [np.nan] * meta["latent_dim"]), dtype=float)
print(f"target std {meta.get('target_std', 1.0)} (sigma_data {E['sigma_data']}); per-channel std of the train split: "
      f"median {np.nanmedian(cstd):.3f}, min {np.nanmin(cstd):.3f}, max {np.nanmax(cstd):.3f}; "
      f"{int(np.sum(np.abs(cstd / float(E['sigma_data']) - 1) <= 0.1))} of {len(cstd)} channels within 10% of sigma_data")
pd.DataFrame({"channel": np.arange(len(cstd)), "std (train)": cstd}).round(3).T

# %% [markdown]
# ## 2. Training: denoising score matching with condition dropout
#
# The DiT $F_\theta$ is wrapped in EDM's preconditioning (eq. 4),
#
# $$\mu_\theta(\mathbf{x}, \sigma, e) = c_{skip}(\sigma)\,\mathbf{x} + c_{out}(\sigma)\,F_\theta\big(c_{in}(\sigma)\,\mathbf{x},\ c_{noise}(\sigma);\ e\big),$$
#
# with $c_{skip} = \sigma_d^2/(\sigma^2 + \sigma_d^2)$, $c_{out} = \sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}$,
# $c_{in} = 1/\sqrt{\sigma^2 + \sigma_d^2}$, $c_{noise} = \ln(\sigma)/4$, and trained with the weighted DSM loss (eq. 3)
#
# $$\mathcal{L}_{DSM} = \mathbb{E}_{\mathbf{x}_{real}, \ln\sigma \sim \mathcal{N}(P_{mean}, P_{std}^2), \epsilon}
#   \Big[\lambda(\sigma)\, \big\lVert \mathbf{x}_{real} - \mu_\theta(\mathbf{x}_{real} + \sigma\epsilon, \sigma, e)\big\rVert_2^2\Big],
#   \qquad \lambda(\sigma) = 1/c_{out}(\sigma)^2,$$
#
# with $P_{mean} = -0.4$, $P_{std} = 1.0$ (A.1). The condition $e$ = (text tokens, BPM). With probability 10% a
# training example's text *and* BPM are replaced by the **null condition** (all-False text mask, BPM = 0), so the
# same network also learns $\mu_\theta(\mathbf{x}, \sigma, \emptyset)$, which classifier-free guidance needs.
# `train_base` runs this through the project's one training loop (`presto_lib.train`: EMA, checkpoints and exact
# resume, NaN guard, DDP under `torchrun`); the exported model is the **EMA** of the weights. A rerun of this cell
# resumes from `data/base/run/checkpoints` and returns at once when training is complete.

# %%
ctx = train_base(P, B["latents"], B["out_dir"])
model, model_cfg = load_score_model(Path(B["out_dir"]) / "model")
log = pd.read_csv(Path(B["out_dir"]) / "run" / "log.csv")
print(f"DiT: {model.net.num_params() / 1e6:.2f} M parameters, {model.net.depth} blocks, hidden {model.net.hidden_size}; "
      f"trained {int(log.step.iloc[-1])} steps in {log.wall_s.iloc[-1] / 60:.1f} min "
      f"({log.samples_per_s.median():.1f} samples/s)")

# %%
fig, ax = plt.subplots(1, 3, figsize=(14, 3.2))
ax[0].plot(log.step, log.loss, alpha=0.4, label="per log interval")
ax[0].plot(log.step, log.loss.rolling(10, min_periods=1).mean(), label="rolling mean")
ax[0].axhline(1.0, color="k", ls=":", lw=1)
ax[0].set(xlabel="step", ylabel=r"$\mathcal{L}_{DSM}$ (eq. 3)", title="training loss", yscale="log")
ax[0].legend()
ax[1].plot(log.step, log.grad_norm)
ax[1].set(xlabel="step", ylabel="grad norm (before clipping)", title="gradient norm", yscale="log")
ax[2].plot(log.step, log.cond_dropped, ".", ms=3)
ax[2].axhline(B["cond_dropout"], color="k", ls="--", lw=1, label=f"configured {B['cond_dropout']:.0%}")
ax[2].set(xlabel="step", ylabel="fraction", title="null conditions per batch", ylim=(0, max(0.5, log.cond_dropped.max())))
ax[2].legend()
plt.tight_layout()
plt.savefig(FIGS / "fig_base_training.png", dpi=120)
plt.show()
print(f"realised condition dropout over training: {log.cond_dropped.mean():.3f} (configured {B['cond_dropout']})")

# %% [markdown]
# Which noise levels has the model learnt? Below, the DSM loss of eq. 3 on the **validation** latents at fixed noise
# levels (EMA weights, conditional), next to the training noise density. Under EDM's weighting a denoiser that only
# knows the data's mean and variance scores about 1 everywhere; the model does better where the log-normal puts
# its mass, and the extremes are easy (tiny $\sigma$: copy the input; huge $\sigma$: predict the mean).

# %%
sig_grid = torch.logspace(np.log10(E["sigma_min"]), np.log10(E["sigma_max"]), 13)
vb = collate_latents([valid_ds[i] for i in range(min(len(valid_ds), 64))])
g = torch.Generator().manual_seed(SEED)
with torch.no_grad():
    val_loss = [float(dsm_loss(model, vb["latents"], batch_condition(vb), torch.full((len(vb["bpm"]),), float(s)),
                               sigma_data=E["sigma_data"], generator=g)) for s in sig_grid]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.semilogx(sig_grid, val_loss, "o-", label="validation DSM loss")
ax.axhline(1.0, color="k", ls=":", lw=1)
ax2 = ax.twinx()
ls = np.linspace(np.log(E["sigma_min"]), np.log(E["sigma_max"]), 400)
ax2.fill_between(np.exp(ls), np.exp(-0.5 * ((ls - E["p_mean"]) / E["p_std"]) ** 2), alpha=0.15, color="C1")
ax2.set(yticks=[], ylabel=r"training density of $\ln\sigma$")
ax.set(xlabel=r"$\sigma$", ylabel="loss", title="DSM loss per noise level (EMA model, valid split)")
ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Sampling: DPM-2S with CFG++
#
# Generation integrates the probability-flow ODE (eq. 1) from $\sigma_{max} = 80$ to 0 on the schedule of eq. 9,
# $\sigma_i = \big(\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho})\big)^\rho$ with
# $\rho = 7$, using DPM-Solver++(2S): two network evaluations per step (one at the geometric midpoint), Euler on the
# last step, so NFE $= 2N - 1$. Guidance is **CFG++** (Chung et al. 2024) with $w = 0.8$ (A.1): the step uses the
# guided estimate $\mu_u + w(\mu_c - \mu_u)$ as its data prediction but re-noises along the *unconditional*
# direction $(\mathbf{x} - \mu_u)/\sigma$, which keeps $w \in [0, 1]$ on the data manifold where plain CFG needs
# $w \gg 1$. `TextToMusic` wires text encoder, score model, sampler and VAE decoder together; each sample draws
# its noise from its own seed, so a prompt sounds the same in any batch.

# %%
sampling = SamplingConfig(sampler=B["sampler"], steps=int(B["sample_steps"]), guidance=B["guidance"],
                          w=float(B["cfg_weight"]), sigma_min=E["sigma_min"], sigma_max=E["sigma_max"], rho=E["rho"])
pipe = TextToMusic.from_checkpoints(Path(B["out_dir"]) / "model", B["vae"], sampling=sampling)
SR = pipe.sample_rate
test_clips = ClipDataset(B["manifest"], "test")
prompts = read_prompts(B["manifest"], "test", B["eval_prompts"])
preview = prompts[: int(B["preview"])]
gen = pipe.generate([p["caption"] for p in preview], [p["bpm"] for p in preview], seeds=range(SEED, SEED + len(preview)))
print(f"{sampling.steps} DPM-2S steps on sigmas " + ", ".join(f"{s:.3g}" for s in sampling.sigmas().tolist())
      + f"; NFE = {pipe.nfe}")
for i, p in enumerate(preview):
    display(Markdown(f"**{p['caption']}** (BPM {p['bpm']:.0f}): real test clip, then generated"))
    display(Audio(test_clips[i]["wave"][0].numpy(), rate=SR))
    display(Audio(gen[i, 0].numpy(), rate=SR))

# %%
mels = {(row, i): mel_spectrogram(wav, SR, n_fft=1024, hop_length=256, n_mels=64).numpy()
        for i in range(len(preview)) for row, wav in enumerate([test_clips[i]["wave"][0], gen[i, 0]])}
vmin, vmax = np.percentile(np.concatenate([m.ravel() for m in mels.values()]), [5, 99.5])   # one shared scale
fig, axes = plt.subplots(2, len(preview), figsize=(3.6 * len(preview), 5), squeeze=False)
for i, p in enumerate(preview):
    for row, what in enumerate(["real", "generated"]):
        axes[row, i].imshow(mels[row, i], origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                            extent=[0, pipe.seconds, 0, 64])
        axes[row, i].set(title=f"{what}: {p['caption'][:38]}", xlabel="s", ylabel="mel bin" if i == 0 else None)
        axes[row, i].title.set_fontsize(8)
plt.tight_layout()
plt.savefig(FIGS / "fig_base_spectrograms.png", dpi=110)
plt.show()

# %% [markdown]
# ### Does the model follow the BPM condition?
#
# BPM enters the DiT through AdaLN, beside the noise level (A.1: "conditioned on ... BPM"). The earlier model
# fed the raw BPM into a sinusoidal embedding, whose high frequencies alias (1 rad per BPM: 80 and 81 BPM were as
# far apart as 80 and 150), and the base model was estimated faster at 150 than at 80 BPM in only 3 of 8 pairs.
# **Fixed:** `base.dit.bpm_emb: number` normalises BPM to [0, 1] over [bpm_min, bpm_max] before learned Fourier
# features, as Stable Audio's NumberConditioner does. That alone did not help (3 of 16 pairs, median ratio 1.000):
# our captions state the tempo ("andante (104 BPM)", "fast", and mood words chosen by tempo), so the text already
# told the model the tempo and it learned to ignore the BPM input. **Fixed:** the base model now sees a
# tempo-free caption (`data.captions.strip_tempo`) for `base.tempo_free_p` = 50% of its training samples, and the
# check below prompts with tempo-free captions of distinct pieces, so only the BPM input can set the tempo. The
# model still barely follows BPM (1 of 16 pairs at `cpu`). **Tried, not kept:** a wider tempo augmentation
# (`corpus.tempo_range` 0.65-1.55x instead of 0.85-1.2x, so one piece is heard at tempi 2.4x apart and BPM is not
# read off the style). A base model trained the same way on that corpus won 2 of 16 pairs, with onsets per second
# rising with the target in 8 of 16 pairs (median ratio 1.04), against 1 of 16, 9 of 16 and 1.08 for this corpus's
# model (`results/benchmarks/bpm_tempo_range_trial.md`): the tempo range is not what limits BPM following at
# this scale. We generate the *same*
# caption and seed at two tempi and estimate the tempo of each result with librosa's onset-autocorrelation
# estimator, over `bpm_check.prompts` x `bpm_check.seeds` (>= 16) pairs. Tempo estimators often report half or double the tempo (octave errors), so we give both
# **Acc1** (within 8% of the target) and **Acc2** (within 8% of the target, its half or its double), and run the
# same estimator on real test clips as a ceiling for what it can recover from 4-second clips. The direct test of
# conditioning is per pair: is the faster target also estimated faster (a *win*; chance 1/2), and by how much,
# $\mathrm{est}(hi)/\mathrm{est}(lo)$ (the target ratio is $130/80 = 1.625$; 1 means BPM is ignored)? The
# targets stay inside 60-140 BPM: librosa's estimator has a tempo prior centred at 120 BPM and reads a click track
# at 150 BPM as 75 BPM (`tests/test_tempo.py`), so at the earlier targets 80 vs 150 a model that followed BPM
# perfectly could still lose a pair. (`eval.tempo` holds the estimator, the accuracies and the pairing.)
# `base_bpm_following.csv` holds one row per pair; the `.md` the win count, the median ratio and the accuracies.
# A finer read: the onset rate (onsets per second, `eval.tempo.onset_rate`) moves before the tempo estimate does.

# %%
bc = B["bpm_check"]
pieces = read_manifest(B["manifest"], "test").drop_duplicates("piece_id")   # one caption per test piece
caps = [strip_tempo(c) for c in pieces["caption"]][: int(bc["prompts"])]    # tempo-free: BPM alone sets tempo
gen = lambda c, b, s: pipe.generate(c, b, seeds=s).numpy()                  # noqa: E731
bpm_df = bpm_following(gen, caps, bc["bpms"], range(SEED, SEED + int(bc["seeds"])), SR)
lo, hi = float(min(bc["bpms"])), float(max(bc["bpms"]))
pairs = bpm_pairs(bpm_df, lo, hi)                 # one row per (caption, seed): est_low, est_high, ratio, win
real_n = min(len(test_clips), 32)
real_est = np.array([estimate_tempo(test_clips[i]["wave"][0].numpy(), SR) for i in range(real_n)])
real_bpm = np.array([test_clips[i]["bpm"] for i in range(real_n)])
summary = pd.DataFrame(
    [{"audio": f"generated, target {t:.0f} BPM", "clips": int((bpm_df.target == t).sum()),
      "mean estimated BPM": bpm_df[bpm_df.target == t].estimated.mean(),
      "Acc1": tempo_accuracy(bpm_df[bpm_df.target == t].estimated.values, t),
      "Acc2": tempo_accuracy(bpm_df[bpm_df.target == t].estimated.values, t, octave=True)} for t in bc["bpms"]]
    + [{"audio": "real test clips (labels)", "clips": real_n, "mean estimated BPM": real_est.mean(),
        "Acc1": tempo_accuracy(real_est, real_bpm), "Acc2": tempo_accuracy(real_est, real_bpm, octave=True)}])
pairs.to_csv(TABLES / "base_bpm_following.csv", index=False)
(TABLES / "base_bpm_following.md").write_text(
    f"BPM following (profile `{P['profile']}`): same caption and seed at {lo:.0f} and {hi:.0f} BPM, "
    f"{len(pairs)} pairs. The faster target is estimated faster in **{int(pairs.win.sum())} of {len(pairs)}** "
    f"pairs (chance {len(pairs) / 2:.0f}); median estimated-tempo ratio est({hi:.0f}) / est({lo:.0f}) = "
    f"**{pairs.ratio.median():.3f}** (target {hi / lo:.3f}; 1 = BPM ignored). Onsets per second rise with the "
    f"target in {int((pairs.onset_ratio > 1).sum())} of {len(pairs)} pairs, median ratio "
    f"{pairs.onset_ratio.median():.3f}.\n\n"
    + summary.round(3).to_markdown(index=False) + "\n\nPer pair:\n\n"
    + pairs.round(3).to_markdown(index=False) + "\n")
display(summary.round(3))
display(pairs.round(3))
display(Markdown(f"Same caption and seed at {lo:.0f} and {hi:.0f} BPM: *{caps[0]}*"))
for t in (lo, hi):
    display(Audio(pipe.generate([caps[0]], [float(t)], seeds=[SEED])[0, 0].numpy(), rate=SR))

# %% [markdown]
# ## 4. Evaluation: test-split samples, metrics, real-time factor, Table 2
#
# Every test prompt (caption + BPM, in manifest order) is generated once into `data/samples/base/` (the evaluation
# layout every system shares), then scored against the real test clips with `presto_lib.eval`: FAD and MMD
# (audio quality, lower is better), the CLAP score between audio and prompt (text adherence; our offline
# "corpus CLAP", trained on our own corpus, stands in for LAION-CLAP), and density / recall / coverage
# (Naeem et al. 2020: quality and diversity). The paper evaluates on Song Describer with LAION-CLAP embeddings and a
# model trained on 3.6k hours, so only the *relative* order of the rows in our Table 2 is comparable to the paper.

# %%
csv_path = write_samples(pipe.generate, prompts, B["samples_dir"], SR, batch_size=int(B["gen_batch_size"]), seed=SEED)
ev = make_evaluator(P, "base")
metrics_row = ev.evaluate_dir(B["samples_dir"], system="base")
CLAP = ev.clap_name
print(f"{len(prompts)} samples in {Path(B['samples_dir'])}; metrics with backbone {M['backbone']}, {CLAP}")
pd.DataFrame([metrics_row]).round(4)

# %% [markdown]
# **Real-time factor** (paper A.6): $\mathrm{RTF}_b = b\,T_\theta / \mathrm{latency}_\theta(b)$ with $T_\theta$ the
# seconds of audio one generation produces, at batch $b = 1$: text encoding, the sampler and VAE decoding, timed
# end to end after a warm-up. The paper's A100 numbers (7.72 for DPM-2S at 80 NFE, 32 s of 44.1 kHz audio) come
# from a DiT-XL on a GPU; ours from the profile's model on this machine.

# %%
p0 = prompts[0]
reps = int(B["latency_repeats"])
rtf = real_time_factor(lambda: pipe.generate([p0["caption"]], [p0["bpm"]], [SEED]), pipe.seconds, warmup=1, repeats=reps)
z0 = pipe.sample_latents([p0["caption"]], [p0["bpm"]], [SEED])
nfe = pipe.nfe
t_gen = measure_latency(lambda: pipe.sample_latents([p0["caption"]], [p0["bpm"]], [SEED]), warmup=1, repeats=reps)
t_dec = measure_latency(lambda: pipe.decode(z0), warmup=1, repeats=reps)
lat = pd.DataFrame([{"part": "generation (sampler, NFE %d)" % nfe, "latency s": t_gen.median_s},
                    {"part": "VAE decoding", "latency s": t_dec.median_s},
                    {"part": "end to end (+ text encoding)", "latency s": rtf.median_s}])
lat["RTF"] = pipe.seconds / lat["latency s"]
display(lat.round(4))
print(f"RTF (b=1) = {pipe.seconds:.1f} s of audio / {rtf.median_s:.3f} s = {rtf.rtf:.2f}")

# %%
row = {"Model": "DPM-2S", "NFE": nfe, "RTF": rtf.rtf, "FAD": metrics_row["FAD"], "MMD": metrics_row["MMD"],
       CLAP: metrics_row.get(CLAP, np.nan), "Density": metrics_row["Density"], "Recall": metrics_row["Recall"],
       "Coverage": metrics_row["Coverage"]}
row_file, = write_rows(S, {"base": row})
paper = {"Model": "DPM-2S (paper, Song Describer)", "NFE": 80, "RTF": 7.72, "FAD": 0.24, "MMD": 0.82,
         CLAP: 31.56, "Density": 0.31, "Recall": 0.20, "Coverage": 0.41}
display(Markdown(f"Table 2 row written to `{row_file}` (the `tables` stage assembles Table 2 from every row):"))
pd.DataFrame([row, paper]).round(4)

# %%
print(json.dumps({"train_steps": int(log.step.iloc[-1]), "train_minutes": float(log.wall_s.iloc[-1] / 60),
                  "final_loss": float(log.loss.tail(10).mean()), "nfe": nfe, "rtf": rtf.rtf,
                  **{k: float(v) for k, v in metrics_row.items() if isinstance(v, (int, float))}}, indent=1))

# %% [markdown]
# ## 5. Reading the numbers honestly
#
# FAD and MMD carry no absolute meaning across embeddings and corpora, so the paper's 0.24 cannot be set beside
# ours. What we can do is place the base model on the ladder of the `metrics` stage: the same evaluator scoring
# *real* test clips against the reference, clean and under calibrated damage (notebook 04). Where the samples
# land on that ladder says how far from real music they are, in this embedding. One more rung matters most: the
# **VAE ceiling**, the same test clips passed through the VAE (encode, decode). A latent diffusion model can at
# best generate what its decoder can render, so its samples cannot be expected to score better than that. The
# BPM check compares with chance (50% of pairs "faster target estimated faster" for a model that ignores BPM),
# and the training curve says whether more steps would still help.

# %%
import tempfile

order = iter(range(len(prompts)))                 # prompts are the test clips in manifest order


def reconstruct(captions: list[str], bpms: list[float], seeds: list[int]) -> torch.Tensor:
    wav = torch.stack([test_clips[next(order)]["wave"] for _ in captions])
    with torch.no_grad():
        return pipe.decode(pipe.vae.encode(wav)[0] * pipe.latent_scale)   # posterior mean, in cache units


with tempfile.TemporaryDirectory() as tmp:
    write_samples(reconstruct, prompts, tmp, SR, batch_size=int(B["gen_batch_size"]))
    ceiling = ev.evaluate_dir(tmp, system="vae_reconstruction")
print(f"VAE ceiling (reconstructed test clips): FAD {ceiling['FAD']:.1f}, MMD {ceiling['MMD']:.1f}, "
      f"{CLAP} {ceiling.get(CLAP, np.nan):.1f}, recall {ceiling['Recall']:.2f}, coverage {ceiling['Coverage']:.2f}; "
      f"base model: FAD {metrics_row['FAD']:.1f} = {metrics_row['FAD'] / ceiling['FAD']:.2f}x the ceiling's")
S.write_metrics("base", {"train_steps": int(log.step.iloc[-1]), "final_loss": float(log.loss.tail(10).mean()),
                         "vae_ceiling": {k: float(ceiling[k]) for k in ("FAD", "MMD", CLAP, "Recall", "Coverage")
                                         if k in ceiling},
                         "base": {k: float(metrics_row[k]) for k in ("FAD", "MMD", CLAP, "Density", "Recall", "Coverage")
                                  if k in metrics_row}})

# %%
san = pd.read_csv(TABLES / "metric_sanity.csv")
floor = san[san.severity == 0].iloc[0]
worse = san[(san.severity > 0) & (san.FAD <= metrics_row["FAD"])]
better = san[(san.severity > 0) & (san.FAD > metrics_row["FAD"])]
print(f"base FAD {metrics_row['FAD']:.1f} (real test clips, clean: {floor.FAD:.1f}); "
      f"recall {metrics_row['Recall']:.2f} (clean {floor.Recall:.2f}), coverage {metrics_row['Coverage']:.2f} "
      f"(clean {floor.Coverage:.2f}), {CLAP} {metrics_row.get(CLAP, np.nan):.1f} (clean {floor.get(CLAP, np.nan):.1f})")
print("base samples score a worse FAD than real clips degraded by:", ", ".join(f"{r.degradation} {r.level} ({r.FAD:.1f})" for r in worse.itertuples()) or "none")
print("and a better FAD than real clips degraded by:", ", ".join(f"{r.degradation} {r.level} ({r.FAD:.1f})" for r in better.itertuples()) or "none")
bpm = pd.read_csv(TABLES / "base_bpm_following.csv")      # the claim reads the stage's table
print(f"BPM: the faster target ({hi:.0f} vs {lo:.0f}) is estimated faster in {int(bpm.win.sum())} of {len(bpm)} "
      f"(caption, seed) pairs (chance {len(bpm) / 2:.0f}; issue #15 asks >= 14 of 16); median estimated-tempo "
      f"ratio {bpm.ratio.median():.3f} (target {hi / lo:.3f}, per pair {', '.join(f'{r:.2f}' for r in bpm.ratio)}); "
      f"Acc2 {summary.Acc2.iloc[:-1].mean():.2f} generated vs {summary.Acc2.iloc[-1]:.2f} for real clips")
n10 = max(1, len(log) // 10)
print(f"training loss: {log.loss.iloc[-2 * n10:-n10].mean():.3f} -> {log.loss.iloc[-n10:].mean():.3f} over the last "
      f"{n10 * int(B['log_every'])} steps (still falling: more steps would help)"
      if log.loss.iloc[-n10:].mean() < 0.98 * log.loss.iloc[-2 * n10:-n10].mean() else
      f"training loss flat over the last {n10 * int(B['log_every'])} steps ({log.loss.iloc[-n10:].mean():.3f})")

# %% [markdown]
# **What this means at this scale.** The `cpu` base model is trained for minutes on a few hours of rendered
# MIDI, through a VAE that itself is trained for minutes (notebook 02: its reconstructions keep the rhythm and the
# pitch bands but smear the harmonics). Compare the base model's FAD with the VAE ceiling above: where the two are
# close, the decoder, not the diffusion model, limits what the metrics can see, and training the DiT longer
# cannot help. The VAE would have to improve first. Its samples have the texture of the corpus: band-limited, note-like
# partials, onsets. They do not yet have its structure: steady beats, clean notes, the piece-level repetition
# of the real clips. The ladder above says how far that is, in this embedding. Every distilled model of notebooks
# 05-07 is measured against *this* base model. Their claims are therefore about relative changes: faster at
# equal quality, or better or worse than the teacher. None of them is about absolute music quality. The `gpu`
# and `paper` profiles train the same code for 10^4-10^5 times more steps.
