"""Presto-L: variance-preserving, budget-conditioned layer dropping, and the ASE baseline (paper sec. 3.3, Fig. 3).

Both fine-tune the base score model so that, at noise level sigma, only the blocks chosen by a dropping schedule
run (`layer_drop.DropSchedule`: quintiles of the inference noise -> dropped blocks). ASE (Moon et al. 2024) drops
from the last block backwards and trains with plain DSM (eq. 3). Presto-L adds three things, each a switch here
so the ablation of Fig. 10 (and Presto-LS's reduced schedule, sec. 3.4) are configurations, not forks:

    shift         drop from the second-to-last block backwards; the final block always runs (Fig. 4's spike)
    budget        a budget embedding added to the noise embedding (so to every block's AdaLN, via DiT's
                  `extra_emb`), and an AdaLN on the output of the DiT stack conditioned only on the budget;
                  both zero-initialised, so the fine-tune starts exactly at the base model run with dropping
    self_teacher  L_st = || h_L(x, theta) - sg(h_full(x, theta)) ||^2 on the normalised output of the stack,
                  beside DSM; the target is the same weights run at full depth under no_grad (no second copy)

`LayerDropModel` keeps the denoiser interface `model(x, sigma, cond) -> x0`: the budget is picked from sigma on
every call, so the samplers, CFG / CFG++ wrappers and `TextToMusic` use it exactly like the base model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.diffusion import edm
from presto_lib.diffusion.edm import EDMPrecond
from presto_lib.diffusion.score_model import batch_condition, build_score_model, drop_conditions
from presto_lib.distill.layer_drop import FINETUNE_SIGMAS, REF_DEPTH, DropSchedule, finetune_sigma
from presto_lib.models.dit import DiT, DiTConfig
from presto_lib.models.layers import ScalarEmbedder, modulate

__all__ = ["PrestoLConfig", "VARIANTS", "variant_config", "BudgetEmbedder", "BudgetAdaLN", "LayerDropNet",
           "LayerDropModel", "presto_l_loss", "presto_l_terms", "PrestoLStep", "save_layer_drop_model",
           "load_layer_drop_model", "with_schedule"]


# ---- configuration -------------------------------------------------------------------------------------

@dataclass
class PrestoLConfig(edm.EDMConfig):
    """A layer-dropping fine-tune; the defaults are Presto-L with the D3 schedule (sec. 4.3)."""
    schedule: str | list = "d3"   # "d3", "presto_ls" or dropped blocks per quintile for a `ref_depth` model
    ref_depth: int = REF_DEPTH    # depth the schedule is written for (scaled to the model's depth)
    shift: bool = True            # sec. 3.3 "variance preservation" (False: ASE, drop from the last block)
    budget: bool = True           # sec. 3.3 "budget conditioning"
    self_teacher: bool = True     # sec. 3.3 "knowledge distillation"
    st_weight: float = 1.0        # L = L_DSM + st_weight * L_st (the paper gives no weight)
    sigma_dist: str = "inf"       # fine-tune noise (`layer_drop.finetune_sigma`): "inf" (eq. 9, u ~ U[0, 1], as
                                  # ASE's uniform t: 1/5 per bucket), "stratified", "mix" or "train" (log-normal)
    sigma_mix: float = 0.75       # "mix": share of eq. 9 draws (the rest log-normal): each bucket >= 15%
    cond_dropout: float = 0.1     # as the base model (A.1), so CFG / CFG++ keep working
    budget_scale: float = 1000.0  # dropped fraction in [0, 1) -> the range of DiT's sinusoidal timestep features
    # sigma_data, p_mean, p_std, sigma_min, sigma_max, rho: inherited from edm.EDMConfig

    def __post_init__(self):
        if self.sigma_dist not in FINETUNE_SIGMAS:
            raise ValueError(f"sigma_dist must be one of {FINETUNE_SIGMAS}, got {self.sigma_dist!r}")
        if not 0.0 <= self.sigma_mix <= 1.0:
            raise ValueError(f"sigma_mix must lie in [0, 1], got {self.sigma_mix}")
        if self.st_weight < 0 or not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f"need st_weight >= 0 and cond_dropout in [0, 1]; got {self.st_weight}, "
                             f"{self.cond_dropout}")
        if not isinstance(self.schedule, str):
            self.schedule = [int(n) for n in self.schedule]


    def drop_schedule(self, depth: int) -> DropSchedule:
        """The schedule scaled to a `depth`-block model."""
        return DropSchedule.build(self.schedule, depth, ref_depth=self.ref_depth, shift=self.shift,
                                  sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho)


# The ablation of Fig. 10 (A.7): ASE plus each of Presto-L's changes alone, and all three (Presto-L).
VARIANTS: dict[str, dict[str, bool]] = {
    "ase": dict(shift=False, budget=False, self_teacher=False),
    "ase_shift": dict(shift=True, budget=False, self_teacher=False),
    "ase_budget": dict(shift=False, budget=True, self_teacher=False),
    "ase_st": dict(shift=False, budget=False, self_teacher=True),
    "presto_l": dict(shift=True, budget=True, self_teacher=True),
}


def variant_config(name: str, **overrides: Any) -> PrestoLConfig:
    """The config of a named variant (see VARIANTS), with other fields (schedule, st_weight, ...) overridden."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return PrestoLConfig.from_dict({**VARIANTS[name], **overrides})


# ---- budget conditioning (sec. 3.3) ---------------------------------------------------------------------

class BudgetEmbedder(nn.Module):
    """Budget (dropped fraction) -> [B, hidden], added to the noise embedding, so it enters every AdaLN."""

    def __init__(self, hidden_size: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.embed = ScalarEmbedder(hidden_size, freq_dim, scale)
        nn.init.normal_(self.embed.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.embed.mlp[0].bias)
        # Zero-init the output projection: the embedding is 0 at init, so the blocks see the base conditioning.
        nn.init.zeros_(self.embed.mlp[2].weight)
        nn.init.zeros_(self.embed.mlp[2].bias)

    def forward(self, frac: Tensor) -> Tensor:
        return self.embed(frac)


class BudgetAdaLN(nn.Module):
    """AdaLN on the output of the DiT stack, conditioned only on the budget: h (1 + scale(b)) + shift(b)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256, scale: float = 1000.0):
        super().__init__()
        self.embed = ScalarEmbedder(hidden_size, freq_dim, scale)
        for lin in (self.embed.mlp[0], self.embed.mlp[2]):     # DiT's embedder init
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        # Zero-init shift/scale: the layer is the identity at init (AdaLN-zero, Peebles & Xie 2023).
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, h: Tensor, frac: Tensor) -> Tensor:
        shift, scale = self.modulation(self.embed(frac)).chunk(2, dim=-1)
        return modulate(h, shift.to(h.dtype), scale.to(h.dtype))


# ---- the layer-dropped network and denoiser ---------------------------------------------------------------

class LayerDropNet(nn.Module):
    """F_theta(x, c_noise; n_drop): the DiT running the schedule's blocks for each sample's budget (Fig. 3)."""

    def __init__(self, dit: DiT, schedule: DropSchedule, budget: bool = True, budget_scale: float = 1000.0):
        super().__init__()
        if schedule.depth != dit.depth:
            raise ValueError(f"schedule is for depth {schedule.depth}, the DiT has {dit.depth} blocks")
        self.dit, self.schedule = dit, schedule
        D, fd = dit.hidden_size, dit.cfg.freq_dim
        self.budget_emb = BudgetEmbedder(D, fd, budget_scale) if budget else None
        self.out_adaln = BudgetAdaLN(D, fd, budget_scale) if budget else None

    def forward(self, x: Tensor, c_noise: Tensor, bpm: Tensor, text: Tensor | None = None,
                text_mask: Tensor | None = None, n_drop: Tensor | None = None, return_hidden: bool = False):
        """[B, C, T] -> [B, C, T]; with `return_hidden` also LayerNorm(h_L) [B, N, hidden], the self-teacher's h."""
        B = x.shape[0]
        n_drop = torch.zeros(B, dtype=torch.long) if n_drop is None else torch.as_tensor(n_drop).reshape(-1)
        if n_drop.numel() == 1:
            n_drop = n_drop.expand(B)
        if n_drop.numel() != B:
            raise ValueError(f"n_drop must be a scalar or [B={B}], got {tuple(n_drop.shape)}")
        frac = (n_drop.float() / self.dit.depth).to(x.device)
        extra = self.budget_emb(frac) if self.budget_emb is not None else None
        h, c, ctx = self.dit.embed(x, c_noise, bpm, text, text_mask, extra)
        h, _ = self.dit.run_blocks(h, c, ctx, self.schedule.plan(n_drop))
        if self.out_adaln is not None:
            h = self.out_adaln(h, frac)
        out = self.dit.unembed(h, c)
        if return_hidden:   # "normalised outputs of the final DiT layer" (sec. 3.3): the final layer's LayerNorm
            return out, F.layer_norm(h.float(), (h.shape[-1],), eps=1e-6)
        return out


def _sigmas(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma as a float32 [B] tensor on x's device (a scalar is broadcast)."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    s = s.expand(x.shape[0]) if s.numel() == 1 else s
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma has {s.numel()} entries but the batch has {x.shape[0]}")
    return s


class LayerDropModel(nn.Module):
    """Denoiser model(x, sigma, cond) -> x0 of a layer-dropped DiT; each sample's budget comes from its sigma."""

    skips_parameters = True     # a batch's dropped blocks get no gradient: DDP must find unused parameters

    def __init__(self, score_model: EDMPrecond, cfg: PrestoLConfig | None = None):
        super().__init__()
        if not isinstance(score_model, EDMPrecond) or not isinstance(score_model.net, DiT):
            raise ValueError(f"expected an EDMPrecond(DiT) score model, got {type(score_model).__name__}")
        self.cfg = cfg or PrestoLConfig()
        self.schedule = self.cfg.drop_schedule(score_model.net.depth)
        net = LayerDropNet(score_model.net, self.schedule, self.cfg.budget, self.cfg.budget_scale)
        self.precond = EDMPrecond(net, score_model.sigma_data)   # shares the DiT's weights (no copy)

    @property
    def net(self) -> LayerDropNet:
        """The layer-dropped network (DiT + budget modules)."""
        return self.precond.net

    @torch.no_grad()
    def budget_embedding_norms(self) -> list[float]:
        """RMS of the budget embedding per bucket (highest noise first): 0 at init, > 0 once a budget is tuned."""
        if self.net.budget_emb is None:
            return [0.0] * self.schedule.num_buckets
        w = self.net.budget_emb.embed.mlp[0].weight
        frac = torch.tensor(self.schedule.drops, dtype=torch.float32, device=w.device) / self.schedule.depth
        return self.net.budget_emb(frac).float().pow(2).mean(1).sqrt().tolist()

    def forward(self, x: Tensor, sigma: Tensor | float, cond: dict | None = None, n_drop: Tensor | None = None,
                return_hidden: bool = False):
        """x0_hat (eq. 4); n_drop defaults to the schedule's budget for sigma (the per-step budget of sampling)."""
        s = _sigmas(sigma, x)
        n_drop = self.schedule.n_drop(s) if n_drop is None else n_drop
        return self.precond(x, s, cond, n_drop=n_drop, return_hidden=return_hidden)


# ---- the loss: DSM (+ self-teacher) ---------------------------------------------------------------------

def _select(cond: dict | None, idx: Tensor) -> dict | None:
    return None if cond is None else {k: v[idx] for k, v in cond.items()}


def presto_l_loss(model: nn.Module, x0: Tensor, cond: dict | None, cfg: PrestoLConfig,
                  sigma: Tensor | None = None, noise: Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """L_DSM (eq. 3, EDM weighting) at the schedule's budget, plus st_weight * L_st when self_teacher is on.

    `model` is a LayerDropModel (or its DDP wrapper). L_st's target h_full is the same model at full depth
    (budget 0) under no_grad; samples whose budget is already 0 contribute 0 and skip that pass.
    """
    B = x0.shape[0]
    schedule = getattr(model, "module", model).schedule
    if sigma is None:
        sigma = finetune_sigma(cfg.sigma_dist, B, mix=cfg.sigma_mix,
                               p_mean=cfg.p_mean, p_std=cfg.p_std, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max,
                               rho=cfg.rho, generator=generator, device=x0.device)
    sigma = _sigmas(sigma, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x = x0 + sigma.reshape(-1, *[1] * (x0.ndim - 1)) * noise
    n_drop = schedule.n_drop(sigma)
    x0_hat, h = model(x, sigma, cond, n_drop=n_drop, return_hidden=True)
    return presto_l_terms(model, x, sigma, cond, x0, x0_hat, h, cfg)


def presto_l_terms(model: nn.Module, x: Tensor, sigma: Tensor, cond: dict | None, x0: Tensor, x0_hat: Tensor,
                   h: Tensor, cfg: PrestoLConfig) -> tuple[Tensor, dict[str, float]]:
    """DSM + st_weight * L_st from a forward already made at the schedule's budget: x = x0 + sigma eps gave
    (x0_hat, h). Used by `presto_l_loss` and by step distillation that shares the forward (Presto-LS, A.4)."""
    B = x0.shape[0]
    n_drop = getattr(model, "module", model).schedule.n_drop(sigma)
    err = (x0_hat.float() - x0.float()).pow(2).reshape(B, -1).mean(1)
    dsm = (edm.edm_loss_weight(sigma, cfg.sigma_data) * err).mean()
    logs = {"dsm": float(dsm.detach()), "dropped": float(n_drop.float().mean())}
    if not cfg.self_teacher:
        logs["loss"] = logs["dsm"]
        return dsm, logs
    st = h.new_zeros(())
    idx = (n_drop > 0).nonzero().squeeze(1).to(x.device)
    if len(idx):
        with torch.no_grad():   # sg(h_full): the same weights at full depth, no graph, no second model
            _, h_full = model(x[idx], sigma[idx], _select(cond, idx), n_drop=torch.zeros(len(idx), dtype=torch.long),
                              return_hidden=True)
        st = (h[idx] - h_full).pow(2).reshape(len(idx), -1).mean(1).sum() / B
    loss = dsm + cfg.st_weight * st
    logs.update(st=float(st.detach()), loss=float(loss.detach()))
    return loss, logs


class PrestoLStep:
    """One fine-tuning update for `presto_lib.train.train` (modules["model"] a LayerDropModel)."""

    def __init__(self, cfg: PrestoLConfig, module: str = "model"):
        self.cfg, self.module = cfg, module

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, float]:
        model = ctx.modules[self.module]
        x0 = batch["latents"].to(ctx.device).float()
        cond, _ = drop_conditions(batch_condition(batch, ctx.device), self.cfg.cond_dropout)
        loss, logs = presto_l_loss(model, x0, cond, self.cfg)
        logs["grad_norm"] = ctx.backward_and_step(loss, self.module)
        return logs


# ---- checkpoints ------------------------------------------------------------------------------------------

def save_layer_drop_model(path_dir: str | os.PathLike, model: LayerDropModel,
                          extra: dict[str, Any] | None = None) -> Path:
    """Weights (DiT + budget modules) + config {dit, sigma_data, presto_l, **extra} via `presto_lib.checkpoint`."""
    m = getattr(model, "module", model)
    if not isinstance(m, LayerDropModel):
        raise ValueError(f"expected a LayerDropModel, got {type(m).__name__}")
    config = {"dit": m.net.dit.cfg.to_dict(), "sigma_data": m.precond.sigma_data, "presto_l": m.cfg.to_dict(),
              **(extra or {})}
    return save_checkpoint(path_dir, dict(m.net.state_dict()), config)


def load_layer_drop_model(path_dir: str | os.PathLike,
                          device: str | torch.device = "cpu") -> tuple[LayerDropModel, dict[str, Any]]:
    """Load what `save_layer_drop_model` wrote: (LayerDropModel in eval mode, its config)."""
    tensors, config = load_checkpoint(path_dir, device)
    if "presto_l" not in config:
        raise ValueError(f"{path_dir} holds no layer-dropping config (config.json lacks 'presto_l')")
    base = build_score_model(DiTConfig.from_dict(config["dit"]), sigma_data=config["sigma_data"])
    model = LayerDropModel(base, PrestoLConfig.from_dict(config["presto_l"]))
    model.net.load_state_dict(tensors)
    return model.to(device).eval(), config


def with_schedule(cfg: PrestoLConfig, schedule: str | Sequence[int]) -> PrestoLConfig:
    """A copy of `cfg` with another dropping schedule (e.g. Presto-LS's reduced "presto_ls")."""
    return replace(cfg, schedule=schedule if isinstance(schedule, str) else [int(n) for n in schedule])
