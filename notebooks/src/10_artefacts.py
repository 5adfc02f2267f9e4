# %% [markdown]
# # 10 · The remaining artefacts: Fig. 9 (rho), Fig. 13 (CLAP rejection), Tables 3-4 and stereo
#
# This notebook shows what the module stages `fig09_rho`, `fig13_clap_rejection`, `base_79nfe`, `m2s` and
# `tables34` computed (the library code is in `presto_lib/eval/rho_sweep.py`, `eval/rejection.py`,
# `eval/latency.py` and `models/m2s.py`), with players for the audio.
#
# The paper's CPU number (sec. 4.7: Presto-LS RTF for 32 s mono at the paper's model size, random weights) is a
# separate benchmark command, not a pipeline stage (it takes long on a laptop):
#
#     python benchmarks/bench_tables.py --profile paper --device cpu --systems presto_ls \
#         --clip-seconds 32 --no-max-batch
#
# and the same Tables 3-4 at the paper's size on a GPU: `python benchmarks/bench_tables.py --profile paper
# --device cuda --amp`.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
from presto_lib.stages.common import start

S = start("artefacts", params_file)   # project root, params, seed, threads, device
P = S.P

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Audio, Image, Markdown, display

from presto_lib.audio import load_audio
from presto_lib.eval.plotting import plot_spectrogram, set_theme
from presto_lib.stages.fig13_clap_rejection import plot_sweep

set_theme()
A, TABLES, FIGURES = P["artefacts"], S.results / "tables", S.results / "figures"

# %% [markdown]
# ## 1. Fig. 9: one latent code, only rho changes (A.5)
#
# > "A benefit of our continuous-time distillation is that besides setting how many steps (e.g., 1-4), we can set
# > *where* those steps occur along the diffusion process by tuning the ρ parameter in the EDM inference
# > schedule, which is normally set to ρ = 7. [...] increasing ρ [puts more weight] on higher-SNR features."
# > (sec. 4.6) "In Fig. 9, we show a number of samples generated from Presto-LS with identical conditions and
# > latent codes (i.e. starting noise and all other added gaussian noise during sampling), only changing ρ, from
# > the standard of 7 to 1000." (A.5)
#
# $$\sigma_{i<N} = \left(\sigma_{\max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{\min}^{1/\rho} -
# \sigma_{\max}^{1/\rho})\right)^\rho \qquad \text{(eq. 9)}$$
#
# `eval.rho_sweep.NoiseBank` draws the start noise and every re-noise once per seed and reuses them for
# every ρ. The table measures how far each ρ moves the outputs from ρ = 7, relative to the distance between two
# *different* latent codes at ρ = 7 (1 = as different as another seed).

# %%
display(Image(filename=str(FIGURES / "fig09_rho.png")))
rho = pd.read_csv(TABLES / "fig09_rho.csv")
display(rho.round(4))

# %%
for r in A["rho_values"]:
    wav, sr = load_audio(Path("data/fig09_rho") / f"rho_{float(r):g}_seed_{int(A['rho_seeds'][0])}.wav")
    display(Markdown(f"**rho = {float(r):g}**, seed {A['rho_seeds'][0]}"), Audio(wav[0], rate=sr))

# %% [markdown]
# ## 2. Fig. 13: CLAP rejection sampling (sec. 4.6, A.10)
#
# > "we generate a batch of samples and reject r fraction of them according to some ranking function. We use the
# > CLAP score to discard samples that have poor text relevance. [...] CLAP rejection sampling strongly improves
# > text relevance while maintaining or *improving* quality at the cost of diversity." (sec. 4.6)
#
# Each test prompt gets `artefacts.rejection_k` Presto-LS candidates; at ratio r the fraction r of each prompt's
# candidates least similar to it (CLAP cosine) is dropped (`eval.rejection.reject`) and the rest scored with the
# shared evaluator. r = 0 (plain Presto-LS) is starred, as in the paper's red point.

# %%
sweep = pd.read_csv(TABLES / "fig13_clap_rejection.csv")
clap_name = next(c for c in sweep.columns if c.startswith("CLAP"))
fig = plot_sweep(sweep, clap_name)
plt.show()
display(sweep.round(4))
claims = pd.read_csv(TABLES / "fig13_claims.csv")
display(claims)
print(f"A.10's claims (largest r vs r = 0): {int(claims.holds.sum())} of {len(claims)} hold here.")

# %%
cand = pd.read_csv(Path("data/fig13_rejection") / "samples.csv")
first = cand[cand["prompt"] == 0]
display(Markdown(f"Candidates of the first prompt: *{first.caption.iloc[0]}*"))
for p in first["path"]:
    wav, sr = load_audio(Path("data/fig13_rejection") / p)
    display(Audio(wav[0], rate=sr))

# %% [markdown]
# ## 3. Mono to stereo (sec. 4.1, A.6)
#
# The paper generates mono audio and widens it with MusicHiFi's stereo vocoder (Zhu et al., 2024). Our M2S model
# (`models.m2s.MonoToStereo`) keeps the mono as the mid channel and predicts the side signal with a
# time-frequency mask, trained on stereo FluidSynth renders of the corpus's multi-part pieces (General MIDI pans
# the parts). The quality number is the SNR of the predicted side signal on held-out clips: 0 dB is dual mono.

# %%
m2s = pd.read_csv(TABLES / "m2s.csv")
display(m2s.round(3))
print(f"mean side SNR {m2s.side_snr_db.mean():.2f} dB over {len(m2s)} {m2s.split.iloc[0]} clips "
      f"(0 dB = dual mono; side level {m2s.side_to_mid_db.mean():.1f} dB below the mid)")

# %%
import torch

from presto_lib.stages.artefacts import load_m2s

model = load_m2s(Path(P["m2s"]["out_dir"]) / "model")
man = pd.read_csv(Path(P["m2s"]["out_dir"]) / "corpus" / "manifest.csv")
held = man[man.split == m2s.split.iloc[0]].head(int(P["m2s"]["examples"]))
for path in held["path"]:
    x, sr = load_audio(Path(P["m2s"]["out_dir"]) / "corpus" / path, mono=False)
    mid = torch.from_numpy(x).mean(0, keepdim=True)
    with torch.no_grad():
        y = model(mid)[0].numpy()
    display(Markdown(f"`{path}`: rendered stereo, then the M2S model's stereo from its mono mix"),
            Audio(x, rate=sr), Audio(y, rate=sr))
    fig, ax = plt.subplots(1, 2, figsize=(8, 2.4), layout="constrained")
    plot_spectrogram(ax[0], (x[0] - x[1]) / 2, sr, title="side, rendered")
    plot_spectrogram(ax[1], (y[0] - y[1]) / 2, sr, title="side, predicted")
    plt.show()

# %% [markdown]
# ## 4. Tables 3 and 4: latency, RTF, stereo, max batch (A.6)
#
# > "We show results in Table 3 and Table 4 for all components of our generative process, including latency
# > metrics for generation (i.e. the diffusion model or distilled generator), decoding (i.e. VAE decoder from
# > latents to audio) and the optional mono-to-stereo (M2S), as well as overall RTF/latency for mono and stereo
# > inference." RTF$_b = b\,T / \text{latency}(b)$. Every system is timed in one run, in interleaved rounds after
# > a warm-up, on this machine; the base model at the paper's budget (DPM-2S 40 steps = 79 NFE, CFG++) is the
# > reference of the speed-ups, the base row's step count is a second point.

# %%
display(Markdown((TABLES / "table3_latency.md").read_text()))
display(Markdown((TABLES / "table4_max_batch.md").read_text()))
t3 = pd.read_csv(TABLES / "table3_latency.csv")
fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
parts = ["generation_ms", "decoding_ms", "m2s_ms"]
left = np.zeros(len(t3))
for c in parts:
    ax.barh(t3.system, t3[c], left=left, label=c.removesuffix("_ms"))
    left += t3[c].to_numpy()
ax.set_xscale("log")
ax.set_xlabel("stereo latency at b = 1 (ms, log)")
ax.legend(fontsize=7)
plt.show()
