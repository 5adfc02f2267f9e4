# %% [markdown]
# # 00 · EDM basics: the score model that Presto distils
#
# Presto (Novack et al., ICLR 2025) accelerates a *continuous-time* diffusion model in the EDM style
# (Karras et al. 2022, 2024). Everything later in this project (the DiT score model, Presto-S step
# distillation, Presto-L layer distillation) is built on the few formulas of this notebook, implemented in
# `presto_lib/diffusion/edm.py` and `presto_lib/diffusion/sampling.py`:
#
# 1. the forward process and the probability-flow ODE (paper eq. 1–2),
# 2. the training loss (eq. 3) and EDM's preconditioning (eq. 4),
# 3. the *two* noise distributions, one for training and one for inference (eq. 9), i.e. the paper's **Figure 2**,
# 4. ODE samplers (Euler, Heun, DPM-Solver++(2S) = the paper's "DPM-2S") and ping-pong sampling,
# 5. classifier-free guidance (CFG, sec. 2.2) and CFG++ (the paper samples every score model with CFG++, w = 0.8).
#
# Samplers are checked on a 2-D toy whose denoiser is *exact*, so every error we see is the solver's.
#
# **Needs:** no other stage (it reads only `params.yaml`); runs in a minute. Stage `edm_basics`.

# %% tags=["parameters"]
params_file = "params.yaml"

# %%
import os

from presto_lib.stages.common import start

S = start("edm_basics", params_file)   # project root, params, seed, threads, device
P = S.P

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from presto_lib.diffusion import edm
from presto_lib.diffusion.edm import GaussianMixture, edm_sigmas
from presto_lib.eval.plotting import save_figure, set_theme
from presto_lib.diffusion.sampling import cfg_denoiser, cfgpp_denoiser, get_sampler, sample_heun, sample_pingpong

E = P["edm"]
SEED = P["common"]["seed"]
SD, PM, PS = E["sigma_data"], E["p_mean"], E["p_std"]
SMIN, SMAX, RHO = E["sigma_min"], E["sigma_max"], E["rho"]
FIG_DIR = S.figures
set_theme()                        # the project's one figure style
FIG_DIR.mkdir(parents=True, exist_ok=True)
torch.manual_seed(SEED)
print(f"profile {P['profile']}: sigma_data={SD}, P_mean={PM}, P_std={PS}, sigma in [{SMIN}, {SMAX}], rho={RHO}")

# %% [markdown]
# ## 1. Forward process and probability-flow ODE
#
# Data is corrupted by adding Gaussian noise of standard deviation $\sigma$ (the variance-exploding process):
# $\mathbf{x} = \mathbf{x}_{\text{real}} + \sigma\boldsymbol{\epsilon}$. Running it backwards deterministically is the
# *probability-flow ODE*
#
# $$d\mathbf{x} = -\sigma \nabla_{\mathbf{x}} \log p(\mathbf{x} \mid \sigma)\, d\sigma, \qquad (1)$$
#
# and the score is available from a *denoiser* $\mu_\theta(\mathbf{x}, \sigma) \approx \mathbb{E}[\mathbf{x}_{\text{real}} \mid \mathbf{x}, \sigma]$:
#
# $$\nabla_{\mathbf{x}} \log p(\mathbf{x} \mid \sigma) \approx \frac{\mathbf{x} - \mu_\theta(\mathbf{x}, \sigma)}{\sigma}. \qquad (2)$$
#
# So $d\mathbf{x}/d\sigma = (\mathbf{x} - \mu_\theta)/\sigma$: an ODE solver only ever needs the denoiser. Sampling starts
# from pure noise at $\sigma_{\max} = 80$ (where $\mathbf{x} \approx \sigma_{\max}\boldsymbol{\epsilon}$) and integrates down to $\sigma = 0$.
#
# ## 2. Training: denoising score matching and preconditioning
#
# The denoiser is trained with the denoising score-matching loss
#
# $$\mathcal{L}_{\text{DSM}} = \mathbb{E}_{\mathbf{x}_{\text{real}}, \sigma \sim p(\sigma^{\text{train}}), \boldsymbol\epsilon}
#   \big[\lambda(\sigma)\, \|\mathbf{x}_{\text{real}} - \mu_\theta(\mathbf{x}_{\text{real}} + \sigma\boldsymbol\epsilon, \sigma)\|_2^2\big], \qquad (3)$$
#
# and the network $f_\theta$ is wrapped with noise-dependent scalings:
#
# $$\mu_\theta(\mathbf{x}, \sigma) = c_{\text{skip}}(\sigma)\,\mathbf{x} + c_{\text{out}}(\sigma)\, f_\theta\big(c_{\text{in}}(\sigma)\,\mathbf{x},\, c_{\text{noise}}(\sigma)\big). \qquad (4)$$
#
# EDM (Table 1) derives every scaling from one requirement, *unit variance everywhere*, with $\sigma_{\text{data}} = 0.5$:
#
# | | formula | why |
# |---|---|---|
# | $c_{\text{in}}$ | $1/\sqrt{\sigma^2 + \sigma_{\text{data}}^2}$ | the network input has unit variance at every $\sigma$ |
# | $c_{\text{skip}}$ | $\sigma_{\text{data}}^2/(\sigma^2 + \sigma_{\text{data}}^2)$ | minimises the variance of the network's target: at low noise $\mu \approx \mathbf{x}$, at high noise $f_\theta$ predicts the data |
# | $c_{\text{out}}$ | $\sigma\,\sigma_{\text{data}}/\sqrt{\sigma^2 + \sigma_{\text{data}}^2}$ | the effective target $(\mathbf{x}_{\text{real}} - c_{\text{skip}}\mathbf{x})/c_{\text{out}}$ has unit variance |
# | $c_{\text{noise}}$ | $\tfrac14 \ln \sigma$ | a well-scaled conditioning input |
# | $\lambda$ | $1/c_{\text{out}}^2 = (\sigma^2 + \sigma_{\text{data}}^2)/(\sigma\,\sigma_{\text{data}})^2$ | makes the loss weight of every $\sigma$ equal *at the network's output* |
#
# `EDMPrecond(net)` implements eq. 4 around any network (our DiT later); `dsm_loss` implements eq. 3.

# %%
s = torch.logspace(math.log10(SMIN), math.log10(SMAX), 400, dtype=torch.float64)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for name, v in [("c_skip", edm.c_skip(s, SD)), ("c_out", edm.c_out(s, SD)), ("c_in", edm.c_in(s, SD)),
                ("c_noise", edm.c_noise(s))]:
    ax[0].plot(s, v, label=name)
ax[0].set(xscale="log", xlabel="sigma", title="EDM preconditioning (eq. 4, sigma_data = %.1f)" % SD)
ax[0].axvline(SD, color="gray", ls=":", lw=1)
ax[0].legend()
ax[1].plot(s, edm.edm_loss_weight(s, SD), label="lambda(sigma)")
ax[1].plot(s, edm.edm_loss_weight(s, SD) * edm.c_out(s, SD) ** 2, label="lambda * c_out^2 (= 1)")
ax[1].set(xscale="log", yscale="log", xlabel="sigma", title="loss weight of eq. 3")
ax[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The identities are exact, and a Monte-Carlo check confirms what they promise: the network input and its
# effective training target both have unit variance at every noise level, when the data has std $\sigma_{\text{data}}$.

# %%
g = torch.Generator().manual_seed(SEED)
rows = []
for sigma in [SMIN, 0.05, SD, 2.0, 10.0, SMAX]:
    x0 = SD * torch.randn(100_000, generator=g, dtype=torch.float64)
    x = x0 + sigma * torch.randn(100_000, generator=g, dtype=torch.float64)
    rows.append({"sigma": sigma, "c_skip": edm.c_skip(sigma, SD).item(), "c_out": edm.c_out(sigma, SD).item(),
                 "c_in": edm.c_in(sigma, SD).item(), "Var[c_in x]": (edm.c_in(sigma, SD) * x).var().item(),
                 "Var[target]": ((x0 - edm.c_skip(sigma, SD) * x) / edm.c_out(sigma, SD)).var().item()})
pd.DataFrame(rows).round(4)

# %% [markdown]
# A consequence worth knowing when reading training logs: for data $\mathcal{N}(m, \sigma_{\text{data}}^2 I)$ the *perfect*
# denoiser scores $\mathcal{L}_{\text{DSM}} = 1$ at every $\sigma$ (the posterior variance times $\lambda$ is exactly 1),
# while a network that does nothing ($\mu = \mathbf{x}$) scores $1 + \sigma^2/\sigma_{\text{data}}^2$. `dsm_loss` reports the
# per-element mean of eq. 3 (eq. 3's norm divided by the number of elements).

# %%
x0 = 0.3 + SD * torch.randn(256, 1, 256, generator=g, dtype=torch.float64)
exact = lambda x, sig, cond: 0.3 + SD**2 / (SD**2 + sig.reshape(-1, 1, 1) ** 2) * (x - 0.3)
print("DSM loss, exact Gaussian denoiser, sigma ~ p_train:", round(edm.dsm_loss(exact, x0, generator=g).item(), 4))
print("DSM loss, identity 'denoiser' at sigma = 1:       ",
      round(edm.dsm_loss(lambda x, sig, cond: x, x0, sigma=torch.ones(256), generator=g).item(), 4),
      "(expected", 1 + 1 / SD**2, ")")

# %% [markdown]
# ## 3. Two noise distributions (the paper's Figure 2)
#
# A discrete-time model has one schedule for training and sampling. EDM decouples them:
#
# * **training** draws $\ln\sigma \sim \mathcal{N}(P_{\text{mean}}, P_{\text{std}}^2)$ with $P_{\text{mean}} = -0.4$, $P_{\text{std}} = 1.0$;
# * **inference** discretises
#
# $$\sigma_{i<N} = \Big(\sigma_{\max}^{1/\rho} + \tfrac{i}{N-1}\big(\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho}\big)\Big)^{\rho}, \qquad (9)$$
#
# with $\rho = 7$, followed by $\sigma_N = 0$. Replacing $i/(N-1)$ by $u \sim U[0,1]$ turns eq. 9 into a *continuous
# inference distribution*, which is what Presto-S samples from for the generator's inputs ($p_{\text{gen}}(\sigma^{\text{inf}})$).
#
# In decibels of signal-to-noise ratio, $\text{SNR} = 1/\sigma^2$, $\text{SNR}_{\text{dB}} = -20\log_{10}\sigma$, both densities
# are analytic: the training one is Gaussian, $\mathcal{N}(-k P_{\text{mean}}, (k P_{\text{std}})^2)$ with $k = 20/\ln 10$; for the
# inference one $v = \sigma^{1/\rho}$ is uniform, so by change of variables
# $p(\text{SNR}_{\text{dB}}) = v / \big(k\rho\,(\sigma_{\max}^{1/\rho} - \sigma_{\min}^{1/\rho})\big)$ on its support.
#
# The training distribution puts its mass in the mid-to-high SNR range (perceptual detail); the inference one is
# spread more evenly with a bias to low SNR (structure). Presto-S's key finding (sec. 3.2, Table 1) is to use the
# *training* distribution for its three loss terms and the *inference* distribution for the generator's inputs.

# %%
n_fig = int(E["fig_samples"])
g = torch.Generator().manual_seed(SEED)
draws = {kind: edm.sigma_to_snr_db(edm.sample_sigma(kind, n_fig, p_mean=PM, p_std=PS, sigma_min=SMIN,
                                                    sigma_max=SMAX, rho=RHO, generator=g)).numpy()
         for kind in ("train", "inf")}
y = torch.linspace(-50, 65, 1000, dtype=torch.float64)
dens = {kind: edm.density_snr_db(kind, y, p_mean=PM, p_std=PS, sigma_min=SMIN, sigma_max=SMAX, rho=RHO).numpy()
        for kind in ("train", "inf")}
labels = {"train": f"training: ln sigma ~ N({PM}, {PS}^2)", "inf": f"inference: eq. 9, rho = {RHO:g}"}
colors = {"train": "tab:orange", "inf": "tab:blue"}
fig, ax = plt.subplots(figsize=(7.5, 3.8))
for kind in ("train", "inf"):
    ax.hist(draws[kind], bins=120, range=(-50, 65), density=True, alpha=0.3, color=colors[kind])
    ax.plot(y, dens[kind], color=colors[kind], lw=2, label=labels[kind])
ax.axvline(0, color="gray", lw=0.8, ls=":")
ax.set(xlabel="SNR (dB) = 10 log10(1 / sigma^2)", ylabel="density",
       title="Figure 2: EDM noise distributions in dB SNR (curves: analytic, bars: %d draws)" % n_fig)
ax.title.set_fontsize(10)
ax.legend(loc="upper left")
plt.tight_layout()
save_figure(fig, FIG_DIR / "fig02_noise_distributions.png")
plt.show()

# %%
pd.DataFrame({kind: {"median SNR dB": np.median(draws[kind]), "P(SNR > 0 dB) i.e. sigma < 1": (draws[kind] > 0).mean(),
                     "P(SNR > 20 dB) i.e. sigma < 0.1": (draws[kind] > 20).mean(),
                     "P(SNR < -20 dB) i.e. sigma > 10": (draws[kind] < -20).mean()}
              for kind in ("train", "inf")}).round(3)

# %% [markdown]
# ### Discrete schedules and ρ
# `edm_sigmas(N)` returns the $N$ levels of eq. 9 and a final 0 (identical to k-diffusion's `get_sigmas_karras`).
# Larger $\rho$ packs steps into the low-noise (high-SNR) end; the paper's "adaptive step schedule" (sec. 5, A.5)
# tunes $\rho$ of a distilled generator at inference time.

# %%
fig, ax = plt.subplots(figsize=(7.5, 2.6))
for k, rho in enumerate([1.0, 3.0, 7.0, 30.0]):
    sig = edm_sigmas(8, SMIN, SMAX, rho)[:-1]
    ax.plot(edm.sigma_to_snr_db(sig), np.full(8, k), "o-", label=f"rho = {rho:g}")
ax.set(yticks=[], xlabel="SNR (dB)", title="8-step schedules of eq. 9")
ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Samplers on a toy with an exact denoiser
#
# The data is a mixture of isotropic Gaussians on a ring in $\mathbb{R}^2$; its posterior mean is available in closed
# form, $\mu(\mathbf{x}, \sigma) = \sum_k r_k(\mathbf{x}) \big(\mathbf{m}_k + \tfrac{s_k^2}{s_k^2 + \sigma^2}(\mathbf{x} - \mathbf{m}_k)\big)$, with
# responsibilities $r_k$ under $\mathcal{N}(\mathbf{m}_k, (s_k^2 + \sigma^2) I)$ (`GaussianMixture`). With a perfect denoiser the
# ODE maps each $\mathbf{x}_T$ to one endpoint, so a sampler's error is the distance to a fine reference solution
# (Heun with many steps) from the same $\mathbf{x}_T$.
#
# All samplers share k-diffusion's convention `sample_X(denoiser, x, sigmas)` (checked step for step against
# k-diffusion in `tests/test_sampling.py`):
#
# * **Euler**: $\mathbf{x}' = \mathbf{x} + (\sigma' - \sigma)\,(\mathbf{x} - \mu)/\sigma$, 1 NFE per step.
# * **Heun** (EDM Alg. 1): an Euler predictor, then the average of the slopes at both ends; 2 NFE per step, the last step to $\sigma=0$ is Euler.
# * **DPM-Solver++(2S)** ("DPM-2S"): exact integration of the linear part in $t = -\ln\sigma$, with the denoiser evaluated at the geometric midpoint $\sqrt{\sigma\sigma'}$; 2 NFE per step.

# %%
K = int(E["toy_modes"])
ang = torch.arange(K, dtype=torch.float64) * 2 * math.pi / K
toy = GaussianMixture(0.7 * torch.stack([ang.cos(), ang.sin()], 1), E["toy_mode_std"], classes=torch.arange(K) % 2)
x_real, _ = toy.sample(int(E["toy_samples"]), torch.Generator().manual_seed(SEED))
print("toy data std per axis:", x_real.std(0).numpy().round(3), "(sigma_data =", SD, ")")
den = lambda x, sig: toy.denoise(x, sig)
x_T = SMAX * torch.randn(int(E["toy_samples"]), 2, generator=torch.Generator().manual_seed(SEED + 1), dtype=torch.float64)
ref = sample_heun(den, x_T, edm_sigmas(int(E["toy_ref_steps"]), SMIN, SMAX, RHO, dtype=torch.float64), disable=True)
on_mode = lambda x: (toy.nearest(x)[1] < 3).double().mean().item()     # fraction within 3 std of a mode
print(f"reference (Heun, {E['toy_ref_steps']} steps): {100 * on_mode(ref):.1f}% of samples within 3 std of a mode")

# %%
traj = []
sample_heun(den, x_T[:12], edm_sigmas(16, SMIN, SMAX, RHO, dtype=torch.float64),
            callback=lambda d: traj.append(d["x"].clone()), disable=True)
traj = torch.stack(traj + [ref[:12]])          # [steps + 1, 12, 2]
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
ax[0].scatter(*x_real.T, s=2, color="lightgray", label="data")
for j in range(12):
    ax[0].plot(*traj[:, j].T, ".-", lw=0.8, ms=3)
ax[0].set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal", title="Heun, 16 steps: 12 trajectories (zoomed to the data)")
ax[1].plot(edm.sigma_to_snr_db(edm_sigmas(16, SMIN, SMAX, RHO)[:-1]), traj[:-1, :, 0].abs().mean(1), "o-")
ax[1].set(xlabel="SNR (dB) at step start", ylabel="mean |x_1|", yscale="log", title="the state shrinks from sigma_max*eps to data scale")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Sample quality vs. steps
# NFE (network evaluations) is the cost that Presto reduces: Euler uses $N$, Heun and DPM-2S use $2N-1$.

# %%
rows, finals = [], {}
for name in ("euler", "heun", "dpmpp_2s"):
    for n in E["toy_steps"]:
        out = get_sampler(name)(den, x_T, edm_sigmas(int(n), SMIN, SMAX, RHO, dtype=torch.float64), disable=True)
        finals[name, int(n)] = out
        rows.append({"sampler": name, "steps": int(n), "NFE": int(n) if name == "euler" else 2 * int(n) - 1,
                     "mean distance to reference": (out - ref).norm(dim=1).mean().item(),
                     "% on a mode": 100 * on_mode(out)})
quality = pd.DataFrame(rows)
fig, ax = plt.subplots(figsize=(6, 3.6))
for name, d in quality.groupby("sampler", sort=False):
    ax.plot(d["NFE"], d["mean distance to reference"], "o-", label=name)
ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="mean |x - x_ref|", title="ODE error vs. cost (exact denoiser)")
ax.legend()
plt.tight_layout()
plt.show()
quality.round(4)

# %%
n_show = int(sorted(E["toy_steps"])[min(2, len(E["toy_steps"]) - 1)])
fig, ax = plt.subplots(1, 4, figsize=(14, 3.6), sharex=True, sharey=True)
ax[0].scatter(*ref.T, s=2)
ax[0].set_title(f"reference ({E['toy_ref_steps']} Heun steps)")
for a, name in zip(ax[1:], ("euler", "heun", "dpmpp_2s")):
    a.scatter(*finals[name, n_show].T, s=2)
    a.set_title(f"{name}, {n_show} steps")
for a in ax:
    a.set(xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), aspect="equal")
plt.tight_layout()
plt.show()

# %% [markdown]
# Heun with very few steps can be *worse* than Euler: its corrector evaluates the slope at $\sigma'$ at a point the
# Euler predictor placed off the data manifold, and with the $\rho=7$ schedule's huge first step that slope
# $(\mathbf{x}_2 - \mu)/\sigma'$ is large. DPM-2S integrates the linear part exactly and is the most accurate per NFE
# here, one reason the paper's base-model baselines use it.
#
# ### Ping-pong sampling
# A few-step *generator* $G_\phi(\mathbf{x}, \sigma)$ (what Presto-S produces) is not an ODE solver: it jumps straight to
# a clean estimate. Multi-step sampling then alternates: denoise, re-noise to the next level with *fresh* noise,
# $\mathbf{x}' = G_\phi(\mathbf{x}, \sigma) + \sigma'\boldsymbol{\epsilon}$ (`sample_pingpong`). Used with the exact one-step denoiser
# (the best possible 1-step "generator" in the MSE sense) it shows why distillation is needed: the posterior mean
# at high noise is the mixture's centre, and each re-noising has to recover the spread.

# %%
fig, ax = plt.subplots(1, 4, figsize=(14, 3.6), sharex=True, sharey=True)
for a, n in zip(ax, [1, 2, 4, 8]):
    out = sample_pingpong(den, x_T, edm_sigmas(n, SMIN, SMAX, RHO, dtype=torch.float64),
                          generator=torch.Generator().manual_seed(SEED), disable=True)
    a.scatter(*out.T, s=2)
    a.set(title=f"ping-pong, {n} step(s): {100 * on_mode(out):.0f}% on a mode", xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), aspect="equal")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Classifier-free guidance and CFG++
#
# A text-to-music model is conditioned, $\mu_\theta(\mathbf{x}, \sigma, e)$, and trained with 10% of conditions dropped to a
# null $\varnothing$, so one network gives both estimates. **CFG** (paper sec. 2.2) extrapolates:
#
# $$\tilde\mu^w_\theta(\mathbf{x}, \sigma, e) = \mu_\theta(\mathbf{x}, \sigma, \varnothing) + w\,\big(\mu_\theta(\mathbf{x}, \sigma, e) - \mu_\theta(\mathbf{x}, \sigma, \varnothing)\big),$$
#
# and a sampler uses $\tilde\mu^w$ for *both* the data estimate and the noise direction $(\mathbf{x} - \tilde\mu^w)/\sigma$.
# **CFG++** (Chung et al. 2024), which the paper uses for every score-model sample with $w = 0.8$, keeps $w \in [0, 1]$,
# uses $\tilde\mu^w$ as the data estimate but re-noises along the *unconditional* direction
# $\hat{\boldsymbol\epsilon}_\varnothing = (\mathbf{x} - \mu_\varnothing)/\sigma$. For Euler:
#
# $$\text{CFG: } \mathbf{x}' = \tilde\mu^w + \sigma'\,\frac{\mathbf{x} - \tilde\mu^w}{\sigma}, \qquad
#   \text{CFG++: } \mathbf{x}' = \tilde\mu^w + \sigma'\,\frac{\mathbf{x} - \mu_\varnothing}{\sigma}.$$
#
# Writing $\Delta = \mu_e - \mu_\varnothing$, CFG moves $\mathbf{x}'$ by $w\Delta(1 - \sigma'/\sigma)$ and CFG++ by $w\Delta$: one CFG++
# step at $w$ equals a CFG step at $w\,\sigma/(\sigma - \sigma')$, a guidance that *grows* as steps get finer, without ever
# extrapolating the data estimate beyond the conditional one. In code both are denoiser wrappers, so every sampler
# supports them: `cfg_denoiser(model, cond, uncond, w)` returns $\tilde\mu^w$; `cfgpp_denoiser` returns the pair
# $(\tilde\mu^w, \mu_\varnothing)$ and each sampler's docstring states its CFG++ update. Both run the conditional and
# null passes as one batched call.
#
# The toy's modes alternate between two classes; the condition is the class (label $-1$ = null = all modes).

# %%
n_g = int(E["toy_samples"])
cond, uncond = {"label": torch.zeros(n_g, dtype=torch.long)}, {"label": torch.full((n_g,), -1)}
model = lambda x, sig, c: toy.denoise(x, sig, c)
sig_g = edm_sigmas(int(E["guide_steps"]), SMIN, SMAX, RHO, dtype=torch.float64)
dpm = get_sampler("dpmpp_2s")
runs = [("unconditional", 0.0, lambda x, sig: model(x, sig, uncond))]
runs += [(f"CFG w={w:g}", w, cfg_denoiser(model, cond, uncond, w)) for w in E["cfg_weights"]]
runs += [(f"CFG++ w={w:g}", w, cfgpp_denoiser(model, cond, uncond, w)) for w in E["cfgpp_weights"]]
rows, outs = [], {}
for name, w, d in runs:
    outs[name] = dpm(d, x_T, sig_g, disable=True)
    rows.append({"guidance": name, "% in class 0": 100 * (toy.classes[toy.nearest(outs[name])[0]] == 0).double().mean().item(),
                 "% on a mode": 100 * on_mode(outs[name])})
fig, ax = plt.subplots(1, len(runs), figsize=(2.8 * len(runs), 3.2), sharex=True, sharey=True)
for a, (name, _, _) in zip(ax, runs):
    a.scatter(*outs[name].T, s=2)
    a.scatter(*toy.means[toy.classes == 0].T, s=400, facecolors="none", edgecolors="tab:green", zorder=3)
    a.set(title=name, xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), aspect="equal")
fig.suptitle(f"DPM-2S, {E['guide_steps']} steps; green circles = class-0 modes")
plt.tight_layout()
plt.show()
pd.DataFrame(rows).round(3)

# %% [markdown]
# With an exact model the conditional sampler ($w = 1$) already lands on class 0; raising CFG's $w$ sharpens
# $p(\mathbf{x}\mid e)^w p(\mathbf{x})^{1-w}$ but the extrapolated data estimate overshoots, and samples drift off the modes.
# CFG++ stays within $[\mu_\varnothing, \mu_e]$ for its data estimate and still steers strongly, because its per-step
# guidance is amplified by $\sigma/(\sigma - \sigma')$. Real score models are not exact, which is where the paper finds
# CFG++ at $w = 0.8$ best for its base and layer-distilled models, and CFG at $w = 4.5$ for the Presto-S teacher
# (where a single guided estimate, not a trajectory, is needed).
#
# **Next:** the base-model notebook trains the DiT score model with `dsm_loss` and `EDMPrecond` and samples it with
# exactly these samplers; Presto-S and Presto-L distil it.
