# %% [markdown]
# # 04 · Metrics: FAD, MMD, CLAP score, density / recall / coverage, and whether to trust them
#
# Every table of Presto (Novack et al., ICLR 2025) reports the metrics of **section 4.1**:
#
# * **FAD** (Fréchet Audio Distance, Kilgour et al. 2019) and **MMD** (the kernel distance of CMMD,
#   Jayasumana et al. 2024) between generated audio and a real reference set: *quality / realness*, lower is better;
# * the **CLAP score** (Wu et al. 2023): cosine similarity between a clip and its prompt in a joint
#   audio-text space, ×100: *prompt adherence*, higher is better;
# * **density** (quality), **recall** and **coverage** (diversity) of Naeem et al. (2020), higher is better.
#
# The paper computes all of them on the LAION-CLAP *music* embedding. Those weights ship in no package and this
# project never touches the network, so here (implemented in `presto_lib/eval/`):
#
# | what | paper | here (offline default) |
# |---|---|---|
# | audio embedding for FAD / MMD / PRDC | LAION-CLAP music, 48 kHz | **MSD-musicnn** (Pons & Serra 2019), ported to PyTorch from the TensorFlow checkpoint in the `musicnn` wheel |
# | text-audio space for the CLAP score | LAION-CLAP music | **corpus CLAP**: a small contrastive model trained below on our train split, reported as "CLAP (corpus)" |
# | reference set | Song Describer (no vocals) | our corpus's test split |
#
# With a local LAION-CLAP folder (`metrics.clap_path`) the same code computes the paper's setting
# (`presto_lib.eval.clap`). Whatever the embedding, a metric is only useful if it (a) has a known floor when two
# real sets are compared and (b) gets worse when the audio gets worse. This notebook measures both, so every later
# table can be read against them.
#
# **Needs:** the `corpus` stage (`dvc repro corpus`, notebook 01). This notebook *is* the `metrics` stage; its
# `data/metrics/` (reference embeddings, corpus CLAP) is read by every later evaluation (notebooks 03, 05-07).

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import require, start

S = start("metrics", params_file)   # project root, params, seed, threads, device
P = S.P

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display
from musicnn.configuration import MSD_LABELS

from presto_lib.checkpoint import write_json
from presto_lib.eval import evaluate as EV
from presto_lib.eval import metrics as M
from presto_lib.eval.corpus_clap import retrieval_at_k, save_corpus_clap, text_features, train_corpus_clap
from presto_lib.eval.degrade import WORSE_IF_HIGHER, degrade, monotonic_table
from presto_lib.eval.embeddings import MusicnnEmbedder
from presto_lib.eval.plotting import save_figure, set_theme
from presto_lib.eval.musicnn import load_musicnn
from presto_lib.models.text import get_text_encoder

C, CC, SAN = P["metrics"], P["metrics"]["corpus_clap"], P["metrics"]["sanity"]
SEED = P["common"]["seed"]
MANIFEST = require(Path(C["manifest"]), "corpus")
set_theme()                        # the project's one figure style
OUT, TABLES, FIGS = Path("data/metrics"), S.tables, S.figures
for d in (OUT, TABLES, FIGS):
    d.mkdir(parents=True, exist_ok=True)
torch.manual_seed(SEED)
print(f"profile {P['profile']}: reference = {C['reference_split']} split, floor = {C['floor_split']} split, "
      f"backbone = {C['backbone']}, corpus = {MANIFEST}")

# %% [markdown]
# ## 1. The offline embedding: MSD-musicnn, read from TensorFlow files without TensorFlow
#
# musicnn is a music-tagging CNN trained on the Million Song Dataset's 50 tags. Its input is a 3 s patch of a
# 96-band log-mel spectrogram at 16 kHz, $\log_{10}(1 + 10^4\,\text{mel})$; musically motivated front-end filters
# (tall *timbral* kernels spanning 38 or 67 mel bands, long *temporal* kernels spanning 0.5–2 s), a dense
# mid-end of 1-D convolutions, then max + mean pooling over time and a 200-unit dense layer. We use that
# **penultimate** layer (200-d, after ReLU and batch-norm) as the embedding: it is what the tags are read from,
# so it encodes genre, instrumentation and mood rather than the exact waveform.
#
# The weights ship as a TensorFlow checkpoint (`.index` + `.data-00000-of-00001`). The `.index` is a LevelDB
# sorted table whose values are protobuf records (dtype, shape, byte offset); `presto_lib/eval/tf_checkpoint.py`
# parses both by hand and the tensors are copied into a PyTorch module (TF's `[kh, kw, in, out]` kernels
# transposed to PyTorch's `[out, in, kh, kw]`; TF's "same" padding reproduced exactly). The port was validated
# once against TensorFlow's own graph on a fixed input (`scripts/make_musicnn_fixture.py`); here is that check.

# %%
fx = np.load("tests/fixtures/musicnn_msd.npz")
with torch.no_grad():
    ours = load_musicnn()(torch.from_numpy(fx["mel"]))
port = pd.DataFrame([{"output": k, "dims": fx[k].shape[1], "max |TF|": float(np.abs(fx[k]).max()),
                      "max |ours - TF|": float(np.abs(ours[k].numpy() - fx[k]).max())}
                     for k in ("penultimate", "max_pool", "mean_pool", "taggram")])
print(f"reference made with TensorFlow {fx['tf_version']}")
port

# %% [markdown]
# **Windowing.** Each clip is cut into 3 s patches at most `musicnn_hop_s` apart, spread so the first starts at 0 s
# and the last ends at the clip's end (a 4 s clip gives 0–3 s and 1–4 s); clips under 3 s are repeat-padded, as
# musicnn's training did. A clip's embedding is the mean of its patch embeddings, so every metric sees one
# vector per clip. (fadtk uses 10 s windows with a 1 s hop for LAION-CLAP; `presto_lib/eval/clap.py` does the same.)
#
# Below: the corpus, and what the tagger hears in a few test clips - a quick check that the embedding is about music.

# %%
waves = {}
frames = {}
for split, cap in (("train", CC["max_train_clips"]), (C["floor_split"], 0), (C["reference_split"], 0)):
    w, SR, df = EV.read_split(MANIFEST, split, max_clips=cap)
    waves[split], frames[split] = w, df
pd.DataFrame([{"split": s, "clips used": len(w), "seconds each": round(len(w[0]) / SR, 2),
               "unique captions": frames[s]["caption"].nunique()} for s, w in waves.items()])

# %%
ref_df = frames[C["reference_split"]]
tags = MusicnnEmbedder(layer="taggram").embed_audio(waves[C["reference_split"]][:4], SR)   # mean over patches
pd.DataFrame({"caption": ref_df["caption"][:len(tags)],
              "musicnn top-5 MSD tags": [", ".join(MSD_LABELS[j] for j in np.argsort(-t)[:5]) for t in tags]})

# %% [markdown]
# ## 2. Corpus CLAP: an offline text-audio space for the CLAP score
#
# CLAP (Wu et al. 2023) embeds audio $a_i$ and text $t_i$ into one unit sphere, trained so matching pairs have
# high cosine similarity: with similarity logits $s_{ij} = \tau^{-1} a_i^\top t_j$, the symmetric InfoNCE loss is
#
# $$\mathcal{L} = \tfrac12\big[\mathrm{CE}(s, y) + \mathrm{CE}(s^\top, y)\big],$$
#
# where row $i$'s target $y_i$ puts equal mass on every clip whose caption equals caption $i$ (our captions
# repeat across clips of a piece, so those are not negatives). Ours is small: the **audio tower** is an MLP on
# frozen musicnn features (`audio_layer`, default the 1506-d max+mean pooled mid-end), the **text tower** an MLP
# on the frozen sentence embedding of `presto_lib.models.text` (all-MiniLM-L6-v2, mean-pooled), each mapping to
# `embed_dim` dimensions. It knows only what our captions say (style, instruments, key, tempo), so its scores are
# labelled **"CLAP (corpus)"** and are not comparable with LAION-CLAP numbers. We validate it by text→audio
# retrieval on the held-out split: R@k = share of captions whose k nearest clips include one with that caption.

# %%
mus = MusicnnEmbedder(hop_s=C["musicnn_hop_s"], progress=True)
layers = ["penultimate", CC["audio_layer"]]
feats = {s: EV.window_features(waves[s], SR, mus, layers=layers) for s in ("train", C["floor_split"])}
encoder = get_text_encoder()
unique_caps = sorted(set(frames["train"]["caption"]) | set(frames[C["floor_split"]]["caption"]))
caption_vec = dict(zip(unique_caps, text_features(unique_caps, encoder)))
caps = {s: list(frames[s]["caption"]) for s in ("train", C["floor_split"])}
tvec = {s: np.stack([caption_vec[c] for c in caps[s]]) for s in caps}

# %%
clap_cfg = {**CC, "hop_s": C["musicnn_hop_s"], "seed": SEED}
clap_model, clap_log = train_corpus_clap(
    feats["train"][CC["audio_layer"]], tvec["train"], caps["train"], clap_cfg,
    valid=(feats[C["floor_split"]][CC["audio_layer"]], tvec[C["floor_split"]], caps[C["floor_split"]]))
save_corpus_clap(OUT / "corpus_clap", clap_model, clap_cfg)
clap_log = pd.DataFrame(clap_log)
clap_log.to_csv(OUT / "corpus_clap_log.csv", index=False)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].plot(clap_log.step, clap_log.train_loss, label="train (batch)")
ax[0].plot(clap_log.step, clap_log.valid_loss, label=f"{C['floor_split']} (all clips)")
ax[0].set(xlabel="step", ylabel="InfoNCE loss", title="corpus CLAP training")
ax[0].legend()
ax[1].plot(clap_log.step, clap_log.valid_r1, label="R@1")
ax[1].plot(clap_log.step, clap_log.valid_r5, label="R@5")
ax[1].set(xlabel="step", ylabel="text→audio retrieval", ylim=(0, 1), title=f"{C['floor_split']} retrieval")
ax[1].legend()
plt.tight_layout()
plt.show()

# %%
valid_caps = pd.Series(caps[C["floor_split"]])
chance_r1 = float((valid_caps.map(valid_caps.value_counts()) / len(valid_caps)).mean())
last = clap_log.iloc[-1]
pd.DataFrame([{"R@1": last.valid_r1, "R@5": last.valid_r5, "chance R@1": chance_r1,
               "matched - shuffled cosine (x100)": last.valid_gap, "temperature": last.temperature}])

# %% [markdown]
# ## 3. The metrics
#
# Let $X = \{x_i\}_{i=1}^{N}$ be embeddings of generated clips and $Y = \{y_j\}_{j=1}^{M}$ of the reference.
#
# **FAD.** Fit a Gaussian to each set and take the Fréchet (2-Wasserstein) distance between them:
#
# $$\mathrm{FAD} = \|\mu_X - \mu_Y\|^2 + \operatorname{tr}\big(\Sigma_X + \Sigma_Y - 2(\Sigma_X\Sigma_Y)^{1/2}\big).$$
#
# We compute $\operatorname{tr}(\Sigma_X\Sigma_Y)^{1/2}$ as $\operatorname{tr}(\Sigma_X^{1/2}\Sigma_Y\Sigma_X^{1/2})^{1/2}$, the square root of a
# symmetric PSD matrix from its eigenvalues, so FAD is never complex or negative even when $N < D$ makes the
# covariances singular (fadtk patches `scipy.linalg.sqrtm` failures with an $\epsilon I$ offset instead). FAD is
# biased upwards for small $N$: its floor below is the number to compare against, not 0.
#
# **MMD** (CMMD's distance) compares the sets through a Gaussian RBF kernel $k(a,b) = \exp(-\|a-b\|^2 / 2\sigma^2)$,
# with no Gaussian assumption:
#
# $$\mathrm{MMD}^2 = \tfrac{1}{N(N-1)}\sum_{i\ne i'} k(x_i, x_{i'}) + \tfrac{1}{M(M-1)}\sum_{j\ne j'} k(y_j, y_{j'}) - \tfrac{2}{NM}\sum_{i,j} k(x_i, y_j),$$
#
# reported ×1000 like CMMD. We use the *unbiased* estimator (diagonal terms left out), so two samples of one
# distribution score 0 in expectation (single estimates can dip slightly below 0). CMMD fixes $\sigma = 10$ for
# unit-norm CLIP embeddings; musicnn features are not unit-norm, so we fix $\sigma$ once, as the median pairwise
# distance of the reference embeddings (cached with them, so every system is scored with the same kernel).
#
# **CLAP score** $= 100 \cdot \frac1N\sum_i \cos(a_i, t_i)$ for each generated clip's audio embedding and its
# prompt's text embedding.
#
# **Precision / recall / density / coverage** (Naeem et al. 2020) use k-nearest-neighbour balls
# $B(y_j, r_k(y_j))$ around each real point ($k$ = `metrics.k` = 5):
# precision = share of fakes inside some real ball; recall = share of reals inside some *fake* ball;
# density $= \frac{1}{kN}\sum_i \sum_j \mathbb{1}[x_i \in B(y_j)]$ (can exceed 1; rewards fakes in dense real regions);
# coverage = share of real balls holding at least one fake. Density and coverage are the outlier-robust versions
# the paper reports.

# %% [markdown]
# ## 4. The real-vs-real floor
#
# We cache the reference split's embeddings (and the MMD bandwidth) under `data/metrics/reference/`; every later
# table reads them through `presto_lib.eval.evaluate`. Then we score the **held-out real** split against the
# reference, exactly as a generated set would be scored. No model can be expected to beat this row by more than
# noise: it is what "indistinguishable from real music" looks like at this sample size. Bootstrap intervals
# (95%, resampling the scored set) show how much each number moves by chance alone; they are centred on the
# estimate, because a resample repeats clips and that alone inflates FAD and MMD (`metrics.bootstrap_ci`).

# %%
clap_source = C["clap_path"] or "corpus"
ev = EV.Evaluator(MANIFEST, C["reference_split"], OUT, clap=clap_source, backbone=C["backbone"], k=C["k"],
                  hop_s=C["musicnn_hop_s"], write_cache=True)
reference = ev.reference()
print(f"reference: {len(reference['audio'])} clips, {reference['audio'].shape[1]}-d embeddings, "
      f"MMD bandwidth sigma = {float(reference['sigma']):.3f}")
if C["backbone"] == "musicnn" and ev.clap_name == "CLAP (corpus)":
    floor_emb = EV.embeddings_from_features(feats[C["floor_split"]], ev.clap, "penultimate")
else:
    floor_emb = ev.embed(waves[C["floor_split"]], SR)
floor = ev.score_embeddings(floor_emb, caps[C["floor_split"]], n_boot=C["n_boot"], seed=SEED)
shuffled_caps = list(np.random.default_rng(SEED).permutation(caps[C["floor_split"]]))
floor_shuffled = ev.score_embeddings(floor_emb, shuffled_caps)
floor_table = pd.DataFrame([{"comparison": f"real {C['floor_split']} vs real {C['reference_split']}", **floor},
                            {"comparison": "same clips, captions shuffled", **floor_shuffled}])
floor_table

# %% [markdown]
# The second row keeps the audio and shuffles the prompts: only the CLAP score may move (it should drop: that
# gap is the text-adherence signal the score carries on our captions); every audio-only metric is unchanged.
#
# ## 5. Sanity check: each metric under controlled degradations
#
# We degrade real clips of the floor split in three ways, each at increasing severity, and score them against the
# reference like a generated set:
#
# * **noise**: white noise at a decreasing signal-to-noise ratio;
# * **low-pass**: an 8th-order Butterworth filter with a decreasing cutoff (a muffled, band-limited model);
# * **time shuffle**: the clip cut into ever shorter segments played in random order (right timbre, broken
#   musical time: the failure mode a frame-level embedding could miss).
#
# A trustworthy metric gets monotonically worse along every row (FAD / MMD up; CLAP, precision, density, recall,
# coverage down). Severity 0 is the undegraded subset.

# %%
idx = EV.spread_indices(len(waves[C["floor_split"]]), SAN["max_clips"])
sub_waves = [waves[C["floor_split"]][i] for i in idx]
sub_caps = [caps[C["floor_split"]][i] for i in idx]
clean = {k: v[idx] for k, v in floor_emb.items()}
sweeps = {"noise": ("SNR dB", SAN["noise_snr_db"]), "lowpass": ("cutoff Hz", SAN["lowpass_hz"]),
          "time_shuffle": ("segment s", SAN["shuffle_segment_s"])}
rows = []
for kind, (unit, levels) in sweeps.items():
    rows.append({"degradation": kind, "severity": 0, "level": "clean",
                 **ev.score_embeddings(clean, sub_caps)})
    for sev, level in enumerate(levels, start=1):
        bad = degrade(sub_waves, SR, kind, level, seed=SEED)
        rows.append({"degradation": kind, "severity": sev, "level": f"{level} {unit}",
                     **ev.score_embeddings(ev.embed(bad, SR), sub_caps)})
sanity = pd.DataFrame(rows)
metric_cols = ["FAD", "MMD", ev.clap_name, "Precision", "Density", "Recall", "Coverage"]
sanity = sanity[["degradation", "severity", "level", "n", *metric_cols]]
sanity.to_csv(TABLES / "metric_sanity.csv", index=False, float_format="%.4g")
split_sizes = pd.read_csv(MANIFEST)["split"].value_counts()
(TABLES / "metric_sanity.md").write_text(
    f"Metric sanity check (profile `{P['profile']}`, corpus {split_sizes.get('train', 0)} train / "
    f"{split_sizes.get('valid', 0)} valid / {split_sizes.get('test', 0)} test clips, backbone {C['backbone']}, "
    f"reference = {C['reference_split']} split, {len(idx)} degraded {C['floor_split']} clips; severity 0 = clean)."
    "\n\n"
    + sanity.to_markdown(index=False, floatfmt=".3g") + "\n")
sanity

# %%
fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
for ax, m in zip(axes.flat, metric_cols):
    for kind, g in sanity.groupby("degradation", sort=False):
        ax.plot(g.severity, g[m], marker="o", label=kind)
    arrow = "↑ worse" if WORSE_IF_HIGHER.get(m, False) else "↓ worse"
    ax.set(title=f"{m} ({arrow})", xlabel="severity", xticks=range(int(sanity.severity.max()) + 1))
axes.flat[0].legend()
floor_text = ", ".join(f"{m} {floor[m]:.3g}" for m in metric_cols if m in floor)
axes.flat[-1].axis("off")
axes.flat[-1].text(0, 0.5, f"real-vs-real floor\n({C['floor_split']} vs {C['reference_split']}, all clips):\n"
                   + floor_text.replace(", ", "\n"), va="center", fontsize=9)
fig.suptitle("Each metric under controlled degradations (severity 0 = clean real audio)")
plt.tight_layout()
save_figure(fig, FIGS / "fig_metric_sanity.png")
plt.show()

# %%
mono = monotonic_table(sanity, metric_cols)
broken = [(row["degradation"], m) for _, row in mono.iterrows() for m in metric_cols if row[m] == "no"]
write_json(OUT / "sanity_summary.json", {"monotonic": mono.to_dict(orient="records"), "not_monotonic": broken,
                                         "floor": {k: float(v) for k, v in floor.items()}})
display(mono)
display(Markdown(
    "**Every metric gets monotonically worse under every degradation.**" if not broken else
    "**Not monotonic** (a step up in severity made this metric *better*): "
    + "; ".join(f"{m} under {k}" for k, m in broken)
    + ". Read these metrics with care for that kind of error; small-sample noise (compare the floor's bootstrap"
      " interval) and saturation (a metric already at its worst value) are the usual causes."))

# %% [markdown]
# ### Listen
# One clip of the floor split, clean and at each degradation's strongest setting.

# %%
display(Markdown(f"*clean* - caption: {sub_caps[0]}"), Audio(sub_waves[0], rate=SR))
for kind, (unit, levels) in sweeps.items():
    display(Markdown(f"*{kind}, {levels[-1]} {unit}*"),
            Audio(degrade(sub_waves[:1], SR, kind, levels[-1], seed=SEED)[0], rate=SR, normalize=True))

# %% [markdown]
# ## 6. Using the metrics elsewhere
#
# A later notebook that generated `data/samples/<system>/` (CONTRIBUTING layout) gets its table row with
#
# ```python
# from presto_lib.eval.evaluate import evaluate
# row = evaluate("data/samples/presto_s")   # FAD, MMD, CLAP (corpus), Precision, Density, Recall, Coverage
# ```
#
# which reads this stage's cached reference and corpus CLAP from `data/metrics/`. Compare every number with the
# floor above. To use the paper's backbone, put a transformers-format LAION-CLAP music folder on disk and set
# `metrics.clap_path` (CLAP score from LAION-CLAP) and `metrics.backbone: clap` (FAD / MMD / PRDC on it too).
