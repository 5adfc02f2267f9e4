# %% [markdown]
# # 06 · Presto-S: score-based distribution matching distillation (paper sec. 3.1-3.2, 4.2, A.3)
#
# A score model needs tens of denoiser calls per sample. **Presto-S** distils it into a generator $G_\phi$ that
# samples in 1-4 steps, by *distribution matching* (DMD2, Yin et al. 2024) rewritten for continuous-time EDM models.
# Three networks, all initialised from the base model $\mu_\theta$ (Fig. 1):
#
# * the **real** score model $\mu_{\text{real}} = \mu_\theta$, frozen, queried with plain CFG at $w = 4.5$ (A.1);
# * the **generator** $G_\phi(x_{\text{real}} + \sigma\epsilon, \sigma)$, a one-shot denoiser of *any* noise level;
# * the **fake** score model $\mu_\psi$, trained online on the generator's outputs so that it knows the score of
#   *the generator's* distribution, with a discriminator head $D_\psi$ on its intermediate features.
#
# The generator follows the gradient of $D_{KL}(p_{\text{fake}} \| p_{\text{real}})$, which only needs the two scores
# (eq. 5):
#
# $$\nabla_\phi \mathcal{L}_{\text{DMD}} = \mathbb{E}_{\sigma, \epsilon}\Big[\big(\mu_{\text{fake}}(\hat x_{\text{gen}} + \sigma\epsilon, \sigma)
#    - \tilde\mu^{w}_{\text{real}}(\hat x_{\text{gen}} + \sigma\epsilon, \sigma)\big)\, \nabla_\phi \hat x_{\text{gen}}\Big]$$
#
# while the fake model minimises the denoising loss *on generator outputs* (eq. 6),
# $\lambda(\sigma)\lVert \hat x_{\text{gen}} - \mu_\psi(\hat x_{\text{gen}} + \sigma\epsilon, \sigma)\rVert^2$, five times
# per generator update, and generator and discriminator play a least-squares GAN (eq. 8; Algorithm 1 lines 10, 18).
# Presto-S's design choices, each a flag in `params.yaml` (`presto_s.algorithm`, `presto_s.runs`):
#
# 1. **Continuous generator inputs** (sec. 3.2.1): $\sigma \sim p_{\text{gen}}$ is a *distribution*, not DMD2's
#    fixed set of levels, so one generator serves any number of steps and any schedule.
# 2. **Four noise distributions** (sec. 3.2.2): $p_{\text{gen}}, p_{\text{DMD}}, p_{\text{DSM}}, p_{\text{GAN}}$ are each
#    EDM's training (log-normal) or inference (eq. 9) distribution. The paper's pick: $p_{\text{gen}}$ = inference,
#    the three losses = training, which puts the losses where CFG and perceptual detail live (mid-to-high SNR).
# 3. **An audio-aligned discriminator** (sec. 3.2.3): least squares instead of non-saturating (eq. 7), and a head
#    that only *partially* downsamples, to a 1-D map of logits over latent time.
#
# The code is `presto_lib/distill/presto_s.py` (Algorithm 1, line by line) and `discriminator.py`. This notebook
# first distils a 2-D toy with that *same* code, then evaluates the music runs of the `presto_s_run` DVC stages:
# **Table 1** (noise distributions; LSGAN vs non-saturating), **Fig. 5** (continuous vs discrete inputs over 1-4
# steps), **Fig. 11** (spectrograms), and the **Presto-S** and **DMD-GAN** rows of **Table 2**.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import start

S = start("presto_s", params_file)   # project root, params, seed, threads, device
P = S.P

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display
from scipy.stats import spearmanr

from presto_lib.audio import mel_spectrogram
from presto_lib.diffusion.pipeline import TextToMusic, read_prompts
from presto_lib.diffusion.score_model import load_score_model
from presto_lib.distill import toy
from presto_lib.distill.presto_s import PrestoSConfig, native_budget, pingpong_sigmas
from presto_lib.distill.generator import generator_sampler, schedule
from presto_lib.stages.presto_s import run_config
from presto_lib.stages.evaluation import make_evaluator
from presto_lib.stages.tables import TABLE2_ORDER, write_rows
from presto_lib.eval.latency import real_time_factor

PS, M = P["presto_s"], P["metrics"]
SEED = int(P["common"]["seed"])
OUT, TABLES, FIGS = Path(PS["out_dir"]), S.tables, S.figures
for d in (TABLES, FIGS):
    d.mkdir(parents=True, exist_ok=True)
torch.manual_seed(SEED)
print(f"profile {P['profile']}: {len(PS['runs'])} Presto-S runs, {PS['train']['iterations']} iterations each")

# %% [markdown]
# ## 1. A 2-D toy with an exact teacher
#
# Data: 8 Gaussians on a ring. Its denoiser $E[x_0 \mid x, \sigma]$ is known in closed form (a responsibility-weighted
# posterior mean), so the **real score model is exact**. The base model is a small MLP trained with DSM (eq. 3); the
# generator and the fake score model are fresh MLPs loaded with its weights, exactly as for music. Points are stored as
# `[B, C=2, T=1]`, so the MLP's per-block features `[B, 1, hidden]` feed the same discriminator head, and the
# *same* `PrestoS` object runs Algorithm 1. The toy is unconditional, so there is no CFG here.
#
# Before distillation, the base model used as a **1-step** generator from $\sigma_{\max} = 80$ outputs
# $E[x_0 \mid x_{80}] \approx$ the data mean: every sample collapses to the centre.

# %%
T = PS["toy"]
gm = toy.ring_mixture(int(T["modes"]))
torch.manual_seed(SEED)
toy_base = toy.train_toy_base(gm, steps=int(T["base_steps"]), batch=256, hidden=int(T["hidden"]), seed=SEED)
toy_ps = toy.toy_presto_s(toy_base, gm, PrestoSConfig(cfg_w=1.0))
n = int(T["n_samples"])
g = torch.Generator().manual_seed(SEED + 1)
ref_pts, z_pts = toy.sample_points(gm, n, g), torch.randn(n, 2, 1, generator=g)
before = toy_ps.sample(z_pts, None, steps=1)
mmd_before = toy.mmd_rbf(before, ref_pts)
history = toy.distill_toy(toy_ps, gm, int(T["iterations"]), batch=int(T["batch"]), lr=float(T["lr"]),
                          log_every=1)
after = {k: toy_ps.sample(z_pts, None, steps=k) for k in (1, 2)}
mmd_after = {k: toy.mmd_rbf(x, ref_pts) for k, x in after.items()}
mmd_floor = toy.mmd_rbf(toy.sample_points(gm, n, g), ref_pts)
print(f"MMD^2 to the mixture: base as 1-step generator {mmd_before:.4f} -> Presto-S 1-step {mmd_after[1]:.4f}, "
      f"2-step {mmd_after[2]:.4f} (fresh data: {mmd_floor:.4f})")

# %%
fig, ax = plt.subplots(1, 4, figsize=(15, 3.8), sharex=True, sharey=True)
for a, (title, pts) in zip(ax, [("target mixture", ref_pts), (f"before: 1 step, MMD {mmd_before:.3f}", before),
                               (f"Presto-S: 1 step, MMD {mmd_after[1]:.3f}", after[1]),
                               (f"Presto-S: 2 steps, MMD {mmd_after[2]:.3f}", after[2])]):
    a.scatter(pts[:, 0, 0], pts[:, 1, 0], s=2, alpha=0.4)
    a.set_title(title, fontsize=10)
    a.set_aspect("equal")
ax[0].set_xlim(-1, 1)
ax[0].set_ylim(-1, 1)
fig.suptitle("2-D toy: the same Presto-S code distils an exact-teacher mixture into a 1-step generator")
plt.show()
h = pd.DataFrame(history).ffill()      # generator turns and fake-score turns log different losses
h = h[h.iteration % max(len(h) // 20, 1) == 0]
h[["iteration", "loss_dmd", "loss_gan_g", "loss_fake_dsm", "loss_gan_d"]].dropna().plot(
    x="iteration", subplots=True, figsize=(10, 5), title="toy losses (latest value at each logged iteration)")
plt.show()

# %% [markdown]
# ## 2. The music runs
#
# Each run of `presto_s.runs` is one DVC stage (`python -m presto_lib.stages.presto_s --run <name>`): the base
# model is loaded once and frozen as the teacher; the generator and the fake score model are *fresh* modules loaded
# with its weights (no deep copies, nothing duplicated per step); Algorithm 1 runs in the shared training loop
# (`presto_lib.train`), one loop step per iteration, so `iterations / 6` generator updates. Samples of the test
# prompts are written with ping-pong sampling (sec. 3.1): denoise with $G$, re-noise to the next level, repeat.
# The $n$-step schedule is eq. 9 on an $(n+1)$-level grid without its last level $\sigma_{\min}$ (a ping-pong step at
# $\sigma_{\min} \approx 0$ would be an identity):
#
# **Optimiser and run length (issue #15, item 6; fixed).** A.1: "we use a learning rate of 5e-7 with Adam. For all
# step distillation methods, we distill each model with a batch size of 80 across 16 Nvidia A100 GPUs for 32K
# iterations." Presto-S follows DMD2 (Yin et al. 2024), whose code trains both players with AdamW, betas (0.9,
# 0.999) and weight decay 0.01. This project used Adam with betas (0.0, 0.99), found in neither paper; both players
# now use DMD2's setting (`presto_s.train.optimizer: dmd2`, `distill.optim.OPTIM_PRESETS`; the earlier choice is the
# `gan` preset). **32K iterations:** DMD2's loop updates the fake player at every iteration and the generator every
# 5th, so 32K iterations are 32K fake updates + 6.4K generator updates; our loop updates one player per step
# (Algorithm 1, line 4), so the same work is `optim.loop_steps(32000)` = 38,400 steps, the paper profile's
# `presto_s.train.iterations` (reading "iteration" as a generator update would give 192,000).
#
# **Discriminator head of the baselines (item 3; fixed).** Sec. 3.2.3 contrasts Presto-S's head, which only
# partially downsamples to a 1-D map of logits over latent time, with DMD2's, which downsamples "into a single
# probability". The runs that stand for DMD2-style baselines (the three non-saturating rows of Table 1 and DMD-GAN)
# now use DMD2's head (`disc_head: dmd2`, `discriminator.DMD2Head`); the least-squares rows use Presto-S's.

# %%
for k in (1, 2, 3, 4):
    print(f"{k} steps:", np.round(pingpong_sigmas(k).numpy(), 3))
info = {r: json.loads((OUT / r / "info.json").read_text()) for r in PS["runs"]}
runs = pd.DataFrame([{"run": r, **{k: run_config(r, P).to_dict()[k] for k in
                                  ("p_gen", "p_dmd", "p_dsm", "p_gan", "gan_loss", "disc_head", "use_dmd",
                                   "discrete_levels")},
                      "iterations": i["iterations"], "generator updates": i["generator_updates"],
                      "distill s": round(i["distill_s"], 1)} for r, i in info.items()])
runs

# %% [markdown]
# Training curves of the Presto-S run: the distribution-matching loss (its gradient is eq. 5), the fake score
# model's DSM loss on generator outputs (eq. 6), and the two sides of the least-squares GAN. Each point is a
# metric's mean over the iterations of a log window that ran its turn (generator or fake score, Algorithm 1
# line 4); a window shorter than `fake_updates + 1` iterations may hold no generator turn, and its cell is empty.

# %%
log = pd.read_csv(OUT / PS["presto_s_run"] / "run" / "log.csv")
cols = [c for c in ("loss_dmd", "dmd_grad_rms", "loss_fake_dsm", "loss_gan_g", "loss_gan_d", "d_real_acc")
        if c in log]
fig, axes = plt.subplots(len(cols), 1, figsize=(10, 8), sharex=True, squeeze=False)
for ax, c in zip(axes[:, 0], cols):
    log.dropna(subset=[c]).plot(x="step", y=c, ax=ax)      # skip the windows without that turn
fig.suptitle(f"Presto-S ({PS['presto_s_run']}) training log")
plt.show()

# %% [markdown]
# ## 3. Table 1: which noise distribution for which loss?
#
# Every run is evaluated with the project's metrics (`presto_lib.eval.evaluate`) on its `table_steps`-step samples
# of the first `eval_prompts` test prompts (`data/presto_s/<run>/steps_<k>/`): FAD and MMD on MSD-musicnn embeddings
# against the test split (lower is better) and the CLAP score of our corpus CLAP (higher is better). These are *not*
# the paper's LAION-CLAP numbers: compare directions.

# %%
ev = make_evaluator(P, "presto_s")
CLAP = ev.clap_name
table_steps = int(PS["table_steps"])
scores = {r: ev.evaluate_dir(OUT / r / f"steps_{table_steps}", system=r) for r in PS["runs"]
          if native_budget(run_config(r, P), table_steps)}       # discrete_k runs: Fig. 5 at their own k only
PAPER_T1 = {  # Table 1: (p_gen, p_dmd, p_dsm, p_gan) -> FAD, MMD, CLAP (LAION-CLAP backbone)
    ("ls", "inf", "inf", "inf", "inf"): (0.37, 1.73, 27.45), ("ls", "inf", "inf", "train", "inf"): (0.37, 1.58, 26.45),
    ("ls", "inf", "inf", "train", "train"): (0.37, 1.51, 24.90), ("ls", "inf", "train", "train", "inf"): (0.27, 1.27, 33.12),
    ("ls", "inf", "train", "inf", "train"): (0.23, 0.86, 33.29), ("ls", "inf", "train", "train", "train"): (0.22, 0.83, 33.13),
    ("ls", "train", "train", "train", "train"): (0.24, 0.99, 30.89),
    ("ns", "inf", "train", "inf", "train"): (0.24, 0.89, 31.48), ("ns", "inf", "train", "train", "train"): (0.25, 0.96, 31.78),
    ("ns", "train", "train", "train", "train"): (0.26, 1.04, 29.46)}
short = {"inf": "Inf.", "train": "Tr."}
rows = []
for r in PS["runs"]:
    c = run_config(r, P)
    key = (c.gan_loss, c.p_gen, c.p_dmd, c.p_dsm, c.p_gan)
    if key not in PAPER_T1 or not c.use_dmd or c.discrete_levels:
        continue
    pf, pm, pc = PAPER_T1[key]
    rows.append({"GAN": "least squares" if c.gan_loss == "ls" else "non-saturating", "run": r,
                 "p_gen": short[c.p_gen], "p_DMD": short[c.p_dmd], "p_DSM": short[c.p_dsm], "p_GAN": short[c.p_gan],
                 "FAD": scores[r]["FAD"], "MMD": scores[r]["MMD"], CLAP: scores[r][CLAP],
                 "FAD (paper)": pf, "MMD (paper)": pm, "CLAP (paper, LAION)": pc})
table1 = pd.DataFrame(rows)
table1.to_csv(TABLES / "table1_noise_distributions.csv", index=False)
(TABLES / "table1_noise_distributions.md").write_text(
    f"Table 1 (profile `{P['profile']}`, {PS['table_steps']}-step sampling): ours (FAD/MMD on MSD-musicnn, "
    f"{CLAP}) beside the paper's (LAION-CLAP backbone).\n\n" + table1.round(4).to_markdown(index=False) + "\n")
table1.round(4)

# %% [markdown]
# ## 4. Fig. 5: continuous vs discrete generator inputs over 1-4 steps
#
# A discrete run is Presto-S with DMD2's generator inputs: $\sigma$ drawn from the $k$ levels of the $k$-step schedule
# only. Sec. 4.2 compares against *separate* discrete models per step budget ("the 1 and 2-step discrete models
# show slightly better FAD metrics than continuous on 1 and 2-step sampling"). **Fixed (issue #15, item 5):** the
# earlier single 4-level model, snapped to its levels at 1-3 steps, is replaced by one model per budget,
# `discrete_1` ... `discrete_4` (`presto_s.discrete_runs`), and `discrete_k` is sampled at exactly $k$ steps, on its
# own levels (`presto_s.native_budget`). The one continuous generator takes every $k$-step schedule as it is.

# %%
curve_rows = []
for r in PS["curve_runs"]:
    for k in PS["eval_steps"]:
        if not native_budget(run_config(r, P), k):
            continue                                  # discrete_k: only at its own k steps
        row = scores[r] if int(k) == table_steps else ev.evaluate_dir(OUT / r / f"steps_{k}", system=r)
        curve_rows.append({"run": r, "inputs": "discrete" if run_config(r, P).discrete_levels else "continuous",
                           "steps": int(k), "FAD": row["FAD"], "MMD": row["MMD"], CLAP: row[CLAP]})
curves = pd.DataFrame(curve_rows)
fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
for a, m in zip(ax, ["FAD", "MMD", CLAP]):
    for name, d in curves.groupby("inputs"):
        a.plot(d.steps, d[m], marker="o", label=name)
    a.set_xlabel("sampling steps")
    a.set_title(m + (" (higher is better)" if m == CLAP else " (lower is better)"))
    a.set_xticks(PS["eval_steps"])
ax[0].legend()
fig.suptitle("Fig. 5: continuous vs discrete generator inputs")
fig.tight_layout()
fig.savefig(FIGS / "fig05_continuous_vs_discrete.png", dpi=150)
plt.show()
curves.round(4)

# %% [markdown]
# ## 5. Fig. 11: 2-step discrete vs continuous spectrograms (same seeds, same prompts)
#
# The paper's failure mode: 2-step discrete models lose high frequencies and smear transients. Both generators get
# identical prompts, initial noise and re-noising draws, so the only difference is the conditioning on $\sigma$.

# %%
t2m = TextToMusic.from_checkpoints(PS["base_model"], PS["vae"])
gens = {r: load_score_model(OUT / r / "generator")[0] for r in (PS["discrete_run"], PS["presto_s_run"])}
prompts = read_prompts(PS["manifest"], "test", limit=int(PS["fig11_prompts"]))
caps, bpms = [p["caption"] for p in prompts], [p["bpm"] for p in prompts]
seeds = [SEED + i for i in range(len(prompts))]
k11 = run_config(PS["discrete_run"], P).discrete_levels or 2   # the discrete model's own budget (2: the paper's)
wav11 = {r: generator_sampler(t2m, G, run_config(r, P), k11)(caps, bpms, seeds) for r, G in gens.items()}
sr = t2m.sample_rate
mels = {r: mel_spectrogram(w[:, 0], sr, n_fft=1024, hop_length=256, n_mels=80) for r, w in wav11.items()}
fig, ax = plt.subplots(len(prompts), 2, figsize=(11, 2.6 * len(prompts)), squeeze=False)
for i, p in enumerate(prompts):
    for j, r in enumerate(gens):
        ax[i, j].imshow(mels[r][i].numpy(), origin="lower", aspect="auto", cmap="magma",
                        extent=[0, t2m.seconds, 0, mels[r].shape[1]])
        ax[i, j].set_title(f"{'discrete' if j == 0 else 'continuous'} · {p['caption'][:60]}", fontsize=8)
        ax[i, j].set_xlabel("time (s)")
        ax[i, j].set_ylabel("mel bin")
fig.suptitle(f"Fig. 11: {k11}-step generations, discrete (left) vs continuous (right) inputs")
fig.tight_layout()
fig.savefig(FIGS / "fig11_spectrograms.png", dpi=150)
plt.show()
hf = {r: float(m[:, m.shape[1] // 2:].mean()) for r, m in mels.items()}
print("mean log-mel energy in the upper half of the mel bins: "
      + ", ".join(f"{'discrete' if r == PS['discrete_run'] else 'continuous'} {v:.3f}" for r, v in hf.items()))
for r, w in wav11.items():
    display(Markdown(f"**{r}**, prompt 0: {caps[0]}"), Audio(w[0, 0].numpy(), rate=sr))

# %% [markdown]
# ## 6. Table 2 rows: Presto-S and DMD-GAN
#
# DMD-GAN (A.2) is DMD2 with the distribution-matching loss removed: only the GAN trains the generator. Here it is the
# `dmd_gan` run: `use_dmd: false` with DMD2's non-saturating loss and inference-distribution noise for the fake
# score and the GAN. Both rows use `table_steps` ping-pong steps (NFE = steps: no CFG at sampling, it is distilled
# in), on the base row's prompts (`data/samples/presto_s_<run>/`). RTF (mono, paper A.6) is measured at batch 1
# including VAE decoding, on this machine.

# %%
prompt = prompts[0]
reps = int(PS["latency_repeats"])
rows = {}
for r, system in [(PS["presto_s_run"], "presto_s"), (PS["dmd_gan_run"], "dmd_gan")]:
    G = gens[r] if r in gens else load_score_model(OUT / r / "generator")[0]
    gen = generator_sampler(t2m, G, run_config(r, P), table_steps)
    rtf = real_time_factor(lambda: gen([prompt["caption"]], [prompt["bpm"]], [SEED]), t2m.seconds, warmup=1,
                           repeats=reps).rtf
    s = ev.evaluate_dir(Path(PS["samples_dir"]) / f"presto_s_{r}", system=r)
    rows[system] = ({"NFE": table_steps, "RTF": rtf, "FAD": s["FAD"], "MMD": s["MMD"],
                 CLAP: s[CLAP], "Density": s["Density"], "Recall": s["Recall"], "Coverage": s["Coverage"],
                 "Precision": s["Precision"]})
write_rows(S, rows)
new_rows = pd.DataFrame([{"Model": dict(TABLE2_ORDER)[k], **r} for k, r in rows.items()])
PAPER_T2 = pd.DataFrame([{"Model": "DMD-GAN", "NFE": 4, "RTF": 118.77, "FAD": 0.29, "MMD": 1.16, "CLAP": 27.56,
                          "Density": 0.57, "Recall": 0.07, "Coverage": 0.41},
                         {"Model": "Presto-S", "NFE": 4, "RTF": 118.77, "FAD": 0.22, "MMD": 0.83, "CLAP": 33.13,
                          "Density": 0.60, "Recall": 0.10, "Coverage": 0.50}])
display(Markdown("**Ours** (this profile, this machine)"), new_rows.round(4),
        Markdown("**Paper** (A100, LAION-CLAP backbone)"), PAPER_T2)

# %% [markdown]
# ## 7. Listen
#
# The first test prompt from every run at `table_steps` steps (same seed everywhere).

# %%
print(prompt["caption"], f"({prompt['bpm']:g} BPM)")
for r in PS["runs"]:
    f = OUT / r / f"steps_{table_steps}" / "0000.wav"
    if f.exists():
        display(Markdown(f"**{r}**"), Audio(str(f)))

# %% [markdown]
# ## 8. Which of the paper's findings our numbers reproduce
#
# Each finding is checked on *paired* runs that differ in one choice only, so the comparison isolates that choice:
#
# * **$p_{\text{DMD}}$ = training is the largest gain** (sec. 4.2): the mean change of each metric when one loss's
#   noise distribution switches from inference to training, for $p_{\text{DMD}}$, $p_{\text{GAN}}$, $p_{\text{DSM}}$;
#   the paper's biggest improvement comes from $p_{\text{DMD}}$.
# * **Least squares beats non-saturating** (Table 1, bottom): the three LS/NS pairs with equal noise distributions.
# * **Continuous inputs scale with steps** (Fig. 5): Spearman correlation between steps and each quality metric.
#
# "Better" means lower FAD/MMD and higher CLAP. Our base model, data, metric backbones and distillation lengths are
# far smaller than the paper's (see the README), so a "no" is a finding about this scale, not a refutation.

# %%
sign = {"FAD": -1, "MMD": -1, CLAP: 1}
t1 = table1.set_index("run")
paper_cols = {"FAD": "FAD (paper)", "MMD": "MMD (paper)", CLAP: "CLAP (paper, LAION)"}
PAIRS = {"p_DMD": [("ls_iiti", "ls_itti"), ("ls_iitt", "ls_ittt")],     # inf -> train, all else equal
         "p_GAN": [("ls_iiti", "ls_iitt"), ("ls_itti", "ls_ittt")],
         "p_DSM": [("ls_iiii", "ls_iiti"), ("ls_itit", "ls_ittt")]}
gain = lambda pairs, m, col: float(np.mean([(t1.loc[b, col] - t1.loc[a, col]) * sign[m] for a, b in pairs]))
switch = pd.DataFrame([{"switch to training": k, **{f"{m} gain (paper)": gain(v, m, paper_cols[m]) for m in sign},
                        **{f"{m} gain (ours)": gain(v, m, m) for m in sign}} for k, v in PAIRS.items()])
display(switch.round(4))
largest = {src: {m: switch.loc[switch[f"{m} gain ({src})"].idxmax(), "switch to training"] for m in sign}
           for src in ("paper", "ours")}
ls_ns = [("ls_itit", "ns_itit"), ("ls_ittt", "ns_ittt"), ("ls_tttt", "ns_tttt")]
ls_wins = lambda col_of: sum(int((t1.loc[a, col_of(m)] - t1.loc[b, col_of(m)]) * sign[m] > 0)
                             for a, b in ls_ns for m in sign)
rho = {name: {m: spearmanr(d.steps, d[m] * sign[m]).correlation for m in sign}
       for name, d in curves.groupby("inputs")}
cont_rho = float(np.nanmean(list(rho["continuous"].values())))
disc_rho = float(np.nanmean(list(rho["discrete"].values())))
findings = pd.DataFrame([
    {"finding": "p_DMD = training is the largest gain",
     "paper": ", ".join(f"{m}: {v}" for m, v in largest["paper"].items()),
     "ours": ", ".join(f"{m}: {v}" for m, v in largest["ours"].items()),
     "reproduced": sum(v == "p_DMD" for v in largest["ours"].values()) >= 2},
    {"finding": "least squares beats non-saturating", "paper": f"{ls_wins(lambda m: paper_cols[m])}/9 (pair, metric)",
     "ours": f"{ls_wins(lambda m: m)}/9", "reproduced": ls_wins(lambda m: m) > 4.5},
    {"finding": "continuous inputs scale with steps (more consistently than discrete)",
     "paper": "continuous improves with steps; discrete inconsistent",
     "ours": f"mean Spearman(steps, quality): continuous {cont_rho:+.2f}, discrete {disc_rho:+.2f}",
     "reproduced": bool(cont_rho > 0 and cont_rho > disc_rho)},
])
findings.to_csv(TABLES / "presto_s_findings.csv", index=False)
print("Reproduced:", "; ".join(findings.finding[findings.reproduced]) or "none")
print("Not reproduced:", "; ".join(findings.finding[~findings.reproduced]) or "none")
findings
