"""Presto-LS: layer-then-step distillation, and the combinations that fail (paper sec. 3.4, 4.6, A.4; Fig. 8).

Presto-LS stacks the two distillations in one order and with one twist (sec. 3.4):

    1. layer-step order   Presto-L first (with the *reduced* dropping schedule [12, 8, 8, 0, 0] of a 28-block
                          model, scaled to our depth), then Presto-S on that layer-dropped, budget-conditioned
                          generator; its budget conditioning stays and keeps training;
    2. full capacity      mu_real and mu_psi start from the *original* base score model, not the Presto-L one,
                          which keeps eq. 5's gradient accurate and gives the discriminator (a head on mu_psi)
                          weights different from the generator's;
    3. reduced budget     fewer dropped layers than Presto-L's D3 schedule.

Appendix A.4's failing alternatives are configurations of the same code (`SETUPS`); each changes Presto-LS only
where the paper says:

    setup            G_phi starts from   G_phi drops layers                 mu_real, mu_psi (+ D_psi) start from
    presto_s         base                no                                 base
    presto_ls        Presto-L (reduced)  yes (already layer-distilled)      base
    ls_lfake         Presto-L (reduced)  yes (already layer-distilled)      Presto-L (layer-dropped)
    step_then_layer  Presto-S generator  yes, + Presto-L's losses (A.4)     mu_real base; psi continues Presto-S's
    step_and_layer   base                yes, + Presto-L's losses (A.4)     base

A.4: step-then-layer "first perform[s] Presto-S distillation and then continue[s] distillation with Presto-L layer
dropping on the generator": the generator *and* psi = (mu_psi, D_psi) continue from the Presto-S run
(`Setup.fake = "presto_s"`; pass that run's FakeScore as `presto_s_fake`), and the joint setup "perform[s]
Presto-S and Presto-L at the same time". In both, the generator learns layer dropping with Presto-L's own losses
beside Algorithm 1's: on a generator turn `LayerLosses` runs G_phi once over [x_real + sigma_gen eps (line 3),
x_real + sigma_L eps'] and adds layer_weight (L_DSM + st_weight L_st) (sec. 3.3) of the second half to
L_DMD + nu1 L_GAN. Optimiser state does not carry over: the layer-dropping generator has new (budget) parameters.

Every setup runs Algorithm 1 (`presto_s.PrestoS`) unchanged, in the training loop through Presto-S's own step
(`presto_s_stage.PrestoSStep`), which logs what Fig. 8 plots (`FIG8_METRICS`); trained with `log_every = 1`,
`fig8_curves` turns that log into one row per generator update.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from presto_lib.diffusion.edm import EDMPrecond
from presto_lib.distill.discriminator import make_head
from presto_lib.distill.layer_drop import finetune_sigma
from presto_lib.distill.presto_l import LayerDropModel, PrestoLConfig, presto_l_terms, with_schedule
from presto_lib.distill.presto_s import FakeScore, PrestoS, PrestoSConfig
from presto_lib.models.dit import DiT

__all__ = ["Setup", "SETUPS", "FIG8_METRICS", "reduced_layer_config", "LayerDropScore", "LayerLosses", "build_setup",
           "fig8_curves", "fig8_summary", "dit_of"]


# ---- the five setups of Fig. 8 (sec. 3.4, A.4) -----------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """Where each network of Algorithm 1 starts, whether the generator drops layers and learns it with Presto-L."""
    generator: str      # "base", "presto_l" or "presto_s": the weights G_phi starts from
    drop: bool          # G_phi runs the reduced dropping schedule with budget conditioning
    scores: str         # "base" or "presto_l": the weights mu_real and mu_psi start from
    label: str          # the legend of Fig. 8
    fake: str = "scores"        # "scores": psi = (mu_psi from `scores`, a fresh D_psi); "presto_s": the Presto-S run's
    layer_losses: bool = False  # add Presto-L's DSM + self-teacher on G_phi at generator turns (A.4)

    def __post_init__(self):
        if self.generator not in ("base", "presto_l", "presto_s") or self.scores not in ("base", "presto_l"):
            raise ValueError(f"bad setup {self}: generator in base/presto_l/presto_s, scores in base/presto_l")
        if self.generator == "presto_l" and not self.drop:
            raise ValueError("a Presto-L generator always drops layers (drop=True)")
        if self.fake not in ("scores", "presto_s") or (self.layer_losses and not self.drop):
            raise ValueError(f"bad setup {self}: fake in scores/presto_s; layer_losses needs drop=True")


SETUPS: dict[str, Setup] = {
    "presto_s": Setup("base", False, "base", "Presto-S"),
    "presto_ls": Setup("presto_l", True, "base", "Presto-LS"),
    "ls_lfake": Setup("presto_l", True, "presto_l", "LS with L-Fake/Real"),
    "step_then_layer": Setup("presto_s", True, "base", "Step then Layer", fake="presto_s", layer_losses=True),
    "step_and_layer": Setup("base", True, "base", "Step and Layer (joint)", layer_losses=True),
}

# Fig. 8's panels -> the keys `PrestoS.step` logs (generator turns: lines 5-11; fake turns: lines 13-19).
FIG8_METRICS: dict[str, str] = {
    "loss_gan_g": "generator loss (LSGAN, line 10)",
    "loss_gan_d": "discriminator loss (LSGAN, line 18)",
    "dmd_grad_rms": "distribution matching gradient (RMS of eq. 5)",
    "d_real_acc": "discriminator accuracy on real",
}
_GEN_KEYS, _FAKE_KEYS = ("loss_gan_g", "dmd_grad_rms", "loss_dmd"), ("loss_gan_d", "d_real_acc", "loss_fake_dsm")


def reduced_layer_config(cfg: PrestoLConfig | None = None) -> PrestoLConfig:
    """Presto-L (shift, budget, self-teacher) with the reduced Presto-LS schedule [12, 8, 8, 0, 0] (sec. 3.4)."""
    return with_schedule(cfg or PrestoLConfig(), "presto_ls")


def dit_of(model: nn.Module) -> DiT:
    """The DiT inside an EDMPrecond(DiT), a LayerDropModel or a LayerDropScore."""
    m = getattr(model, "module", model)
    if isinstance(m, LayerDropScore):
        m = m.model
    if isinstance(m, LayerDropModel):
        return m.net.dit
    if isinstance(m, EDMPrecond) and isinstance(m.net, DiT):
        return m.net
    raise ValueError(f"expected an EDMPrecond(DiT) or a LayerDropModel, got {type(m).__name__}")


# ---- a layer-dropped score model with features (the L-Fake/Real discriminator, A.4) ---------------------

class LayerDropScore(nn.Module):
    """A LayerDropModel that can also return per-block features, so a discriminator head can sit on it (A.4)."""

    skips_parameters = True     # dropped blocks (see LayerDropModel)

    def __init__(self, model: LayerDropModel):
        super().__init__()
        if not isinstance(model, LayerDropModel):
            raise ValueError(f"expected a LayerDropModel, got {type(model).__name__}")
        self.model = model

    def forward(self, x: Tensor, sigma: Tensor | float, cond: dict | None = None, return_features: bool = False):
        """x0 (eq. 4) at the schedule's budget for sigma; with `return_features` also one [B, N, hidden] per block.

        Features follow DiT's bool-mask convention: a block a sample drops passes that sample's input through.
        """
        if not return_features:
            return self.model(x, sigma, cond)
        m = self.model
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        n_drop = m.schedule.n_drop(s)
        mask = torch.zeros(x.shape[0], m.schedule.depth, dtype=torch.bool)
        for i, n in enumerate(n_drop.tolist()):
            mask[i, m.schedule.blocks(n)] = True
        net, frac = m.net, (n_drop.float() / m.schedule.depth).to(x.device)

        def f(xin: Tensor, c_noise: Tensor, bpm: Tensor, text: Tensor | None = None,
              text_mask: Tensor | None = None):   # LayerDropNet.forward, keeping the block outputs
            extra = net.budget_emb(frac) if net.budget_emb is not None else None
            h, c, ctx = net.dit.embed(xin, c_noise, bpm, text, text_mask, extra)
            h, feats = net.dit.run_blocks(h, c, ctx, mask, return_features=True)
            if net.out_adaln is not None:
                h = net.out_adaln(h, frac)
            return net.dit.unembed(h, c), feats
        return EDMPrecond(f, m.precond.sigma_data)(x, s, cond)


# ---- Presto-L's losses on the generator during step distillation (A.4) ------------------------------------

class LayerLosses:
    """`PrestoS.generator_extra`: one forward of G_phi over [line 3's input, Presto-L's DSM input] (DDP-safe),
    returning (x_gen, layer_weight (L_DSM + st_weight L_st), logs); the layer noise follows cfg.sigma_dist."""

    def __init__(self, cfg: PrestoLConfig, weight: float = 1.0):
        if weight < 0:
            raise ValueError(f"layer_weight must be >= 0, got {weight}")
        self.cfg, self.weight = cfg, float(weight)

    def __call__(self, ps: PrestoS, x_real: Tensor, cond: dict | None,
                 G: nn.Module | None = None) -> tuple[Tensor, Tensor, dict]:
        c, B, dev = self.cfg, x_real.shape[0], x_real.device
        if not isinstance(getattr(ps.G, "module", ps.G), LayerDropModel):
            raise ValueError("Presto-L's losses need a layer-dropping generator (a LayerDropModel)")
        b = lambda v: v.reshape(-1, *[1] * (x_real.ndim - 1))
        s_gen = ps.gen_sigma(B, dev)                                                    # Algorithm 1, line 1
        s_l = finetune_sigma(c.sigma_dist, B, mix=c.sigma_mix, p_mean=c.p_mean, p_std=c.p_std,
                             sigma_min=c.sigma_min, sigma_max=c.sigma_max, rho=c.rho, device=dev)
        x_l = x_real + b(s_l) * torch.randn_like(x_real)
        x_in = torch.cat([x_real + b(s_gen) * torch.randn_like(x_real), x_l])           # line 2 | eq. 3's input
        cond2 = None if cond is None else {k: torch.cat([v, v]) for k, v in cond.items()}
        out, h = (G or ps.G)(x_in, torch.cat([s_gen, s_l]), cond2, return_hidden=True)  # line 3 | eq. 3
        loss, logs = presto_l_terms(ps.G, x_l, s_l, cond, x_real, out[B:], h[B:], c)
        return out[:B], self.weight * loss, {f"layer_{k}": v for k, v in logs.items()}


# ---- building a setup -----------------------------------------------------------------------------------

def _frozen_copy(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).eval().requires_grad_(False)


def _fresh(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).train().requires_grad_(True)


def build_setup(name: str, base: EDMPrecond, *, presto_l: LayerDropModel | None = None,
                presto_s: EDMPrecond | None = None, presto_s_fake: FakeScore | None = None,
                s_cfg: PrestoSConfig | None = None, l_cfg: PrestoLConfig | None = None, layer_weight: float = 1.0,
                head_channels: int | None = None, head_down: int = 2, feature_block: int = -1,
                **overrides) -> PrestoS:
    """Algorithm 1's players for one setup of `SETUPS`; every network is a fresh copy of its source.

    base: the original score model; presto_l: a Presto-L model (the reduced schedule for Presto-LS); presto_s:
    a Presto-S generator and presto_s_fake its run's psi = (mu_psi, D_psi) (for step_then_layer); l_cfg: the
    layer dropping a generator learns during step distillation and its losses (default: Presto-L with the
    reduced schedule); layer_weight scales those losses. `overrides` replace Setup fields (e.g. fake="scores",
    layer_losses=False: the earlier restart-from-base variants).
    """
    if name not in SETUPS:
        raise ValueError(f"unknown setup {name!r}; choose one of {', '.join(SETUPS)}")
    st = replace(SETUPS[name], **overrides)
    sources = {"base": base, "presto_l": presto_l, "presto_s": presto_s}
    for role in {st.generator, st.scores}:
        if sources[role] is None:
            raise ValueError(f"setup {name!r} needs the {role} model (pass {role}=...)")
    if presto_l is not None and not isinstance(presto_l, LayerDropModel):
        raise ValueError(f"presto_l must be a LayerDropModel, got {type(presto_l).__name__}")
    for role in ("base", "presto_s"):
        if sources[role] is not None:
            dit_of(sources[role])      # raises unless an EDMPrecond(DiT)
    # generator: Presto-L already drops; base / Presto-S learn the reduced dropping now (zero-init budget)
    G = _fresh(sources[st.generator])
    l_cfg = l_cfg or reduced_layer_config()
    if st.drop and not isinstance(G, LayerDropModel):
        G = LayerDropModel(G, l_cfg)
    # score models: full capacity (base) or the layer-dropped Presto-L model (L-Fake/Real)
    if st.scores == "base":
        real, fake_score = _frozen_copy(base), _fresh(base)
    else:
        real, fake_score = _frozen_copy(presto_l), LayerDropScore(_fresh(presto_l))
    hidden, s_cfg = dit_of(base).hidden_size, s_cfg or PrestoSConfig()
    if st.fake == "presto_s":       # A.4: continue the Presto-S run's psi (mu_psi and D_psi), not the base model
        if not isinstance(presto_s_fake, FakeScore):
            raise ValueError(f"setup {name!r} continues the Presto-S run: pass presto_s_fake=<its FakeScore>")
        fake = _fresh(presto_s_fake)
    else:
        fake = FakeScore(fake_score, make_head(s_cfg.disc_head, hidden, head_channels, head_down), feature_block)
    extra = LayerLosses(l_cfg, layer_weight) if st.layer_losses else None
    return PrestoS(G, fake, real, s_cfg, generator_extra=extra)


# ---- Fig. 8: from the per-iteration log to one row per generator update -------------------------------

def fig8_curves(log: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """One row per generator update k: its generator-turn values and the mean of the fake turns before it."""
    df = pd.read_csv(log) if isinstance(log, (str, os.PathLike, Path)) else log.copy()
    if "generator_turn" not in df.columns:
        raise ValueError("the log has no 'generator_turn' column: is it a Presto-S training log?")
    turn = df["generator_turn"].astype(float)
    if not turn.isin([0.0, 1.0]).all():
        raise ValueError("generator_turn is averaged over several iterations: train with log_every=1")
    df = df.sort_values("step").reset_index(drop=True)
    turn = df["generator_turn"].astype(float)
    group = (turn.cumsum() - turn).astype(int)          # fake turns before generator turn k share its group
    gen = df[turn == 1.0].assign(update=lambda d: group[d.index] + 1)
    fake = df[turn == 0.0].assign(update=group[turn == 0.0] + 1)
    out = gen[["update", "step", *[k for k in _GEN_KEYS if k in gen]]].set_index("update")
    fk = [k for k in _FAKE_KEYS if k in fake]
    if fk:
        out = out.join(fake.groupby("update")[fk].mean(), how="left")
    return out.reset_index()


def fig8_summary(curves: dict[str, pd.DataFrame], last: int = 10) -> pd.DataFrame:
    """Per setup: mean of each Fig. 8 metric over the last `last` generator updates, and the DM gradient's std."""
    rows = []
    for name, c in curves.items():
        tail = c.tail(last)
        row = {"setup": name, "label": SETUPS[name].label if name in SETUPS else name, "updates": len(c)}
        row.update({k: float(tail[k].mean()) for k in FIG8_METRICS if k in tail})
        if "dmd_grad_rms" in tail:
            row["dmd_grad_std"] = float(tail["dmd_grad_rms"].std(ddof=0))
        rows.append(row)
    return pd.DataFrame(rows)
