"""The base score model: the EDM-preconditioned DiT (eq. 4), its DSM training step (eq. 3) and checkpoints.

    mu_theta(x, sigma, e) = c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x, c_noise(sigma); e)     (eq. 4)
    L_DSM = E[lambda(sigma) || x_real - mu_theta(x_real + sigma eps, sigma, e) ||^2],
            ln sigma ~ N(P_mean, P_std^2)                                                               (eq. 3)

with e = (text tokens, BPM). Paper A.1: sigma_data 0.5, P_mean -0.4, P_std 1.0, Adam lr 1e-4, and 10% condition
dropout (text and BPM replaced together by the null condition of CONTRIBUTING.md: an all-False text mask and
bpm <= 0) so one network is both mu(., e) and mu(., null) for CFG / CFG++.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.diffusion.edm import P_MEAN, P_STD, SIGMA_DATA, EDMPrecond, dsm_loss
from presto_lib.models.dit import DiT, DiTConfig

__all__ = ["build_score_model", "null_condition", "null_like", "drop_conditions", "tempo_free_text", "batch_condition",
           "DSMStep",
           "save_score_model", "load_score_model"]


# ---- building ----------------------------------------------------------------------------------

def build_score_model(dit: dict[str, Any] | DiTConfig, *, in_channels: int | None = None,
                      text_dim: int | None = None, sigma_data: float = SIGMA_DATA) -> EDMPrecond:
    """EDMPrecond(DiT) from a DiT config or a params dict (`in_channels`/`text_dim` fill in the data's sizes)."""
    if isinstance(dit, DiTConfig):
        cfg = dit
    else:
        d = dict(dit)
        if in_channels is not None:
            d["in_channels"] = int(in_channels)
        if text_dim is not None:
            d["text_dim"] = int(text_dim)
        cfg = DiTConfig.from_dict(d)
    return EDMPrecond(DiT(cfg), sigma_data=sigma_data)


# ---- conditions and their dropout (A.1: 10% condition dropout for CFG) -------------------------

def null_condition(batch: int, length: int, dim: int, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The CFG null condition: zero text, all-False mask, bpm 0 (CONTRIBUTING: null = mask False, bpm <= 0)."""
    from presto_lib.models.text import null_condition as null_text

    text, mask = null_text(batch, length, dim, device)
    return {"text": text, "text_mask": mask, "bpm": torch.zeros(batch, device=device)}


def null_like(cond: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    """The null condition shaped like `cond`: boolean masks all False, every other entry zero (bpm <= 0)."""
    if cond is None:
        return None
    return {k: torch.zeros_like(v) for k, v in cond.items()}


def drop_conditions(cond: dict[str, Tensor], p: float,
                    generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Replace each sample's (text, BPM) by the null condition with probability p; returns (cond, dropped [B])."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout must lie in [0, 1], got {p}")
    text, mask, bpm = cond["text"], cond["text_mask"], cond["bpm"]
    B = bpm.shape[0]
    drop = torch.rand(B, generator=generator, device="cpu" if generator is None else generator.device) < p
    drop = drop.to(bpm.device)
    keep = ~drop
    return {"text": text * keep[:, None, None].to(text.dtype),
            "text_mask": mask & keep[:, None],
            "bpm": torch.where(drop, torch.zeros_like(bpm), bpm)}, drop


def tempo_free_text(batch: dict[str, Any], p: float, generator: torch.Generator | None = None) -> dict[str, Any]:
    """With probability p per sample, the caption's text is replaced by its tempo-free version (text_notempo, which
    `data.latents` caches), so the tempo must be read from the BPM input; p = 0 or no such key: `batch` as is."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"tempo_free_p must lie in [0, 1], got {p}")
    if p == 0.0 or "text_notempo" not in batch:
        return batch
    B = batch["bpm"].shape[0]
    swap = torch.rand(B, generator=generator, device="cpu" if generator is None else generator.device) < p
    swap = swap.to(batch["text"].device)
    return {**batch, "text": torch.where(swap[:, None, None], batch["text_notempo"], batch["text"]),
            "text_mask": torch.where(swap[:, None], batch["text_notempo_mask"], batch["text_mask"])}


def batch_condition(batch: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """The condition dict {text, text_mask, bpm} of a LatentDataset batch, on `device`."""
    missing = {"text", "text_mask", "bpm"} - set(batch)
    if missing:
        raise ValueError(f"batch lacks condition keys {sorted(missing)}")
    return {"text": batch["text"].to(device).float(), "text_mask": batch["text_mask"].to(device).bool(),
            "bpm": batch["bpm"].to(device).float()}


# ---- the DSM training step ---------------------------------------------------------------------

class DSMStep:
    """One base-model update (eq. 3 with 10% condition dropout), the step function of `presto_lib.train.train`.

    `step(ctx, batch, step)` reads `ctx.modules["score"]` (an EDMPrecond(DiT), DDP-wrapped when distributed),
    and lets the loop do backward, gradient clipping, the NaN guard, the optimiser step and EMA.
    """

    def __init__(self, *, p_mean: float = P_MEAN, p_std: float = P_STD, sigma_data: float = SIGMA_DATA,
                 cond_dropout: float = 0.1, tempo_free_p: float = 0.0, module: str = "score"):
        if not 0.0 <= cond_dropout <= 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1], got {cond_dropout}")
        if not 0.0 <= tempo_free_p <= 1.0:
            raise ValueError(f"tempo_free_p must lie in [0, 1], got {tempo_free_p}")
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data
        self.cond_dropout, self.tempo_free_p, self.module = cond_dropout, tempo_free_p, module

    def loss(self, model: nn.Module, batch: dict[str, Any],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """The DSM loss of one batch (conditions dropped at the configured rate) and its log entries."""
        device = next(model.parameters()).device
        x0 = batch["latents"].to(device).float()
        batch = tempo_free_text(batch, self.tempo_free_p, generator)      # BPM conditioning (A.1), see base.yaml
        cond, dropped = drop_conditions(batch_condition(batch, device), self.cond_dropout, generator)
        loss = dsm_loss(model, x0, cond, p_mean=self.p_mean, p_std=self.p_std, sigma_data=self.sigma_data,
                        generator=generator)
        return loss, {"loss": float(loss.detach()), "cond_dropped": float(dropped.float().mean())}

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, float]:
        loss, logs = self.loss(ctx.modules[self.module], batch)
        logs["grad_norm"] = ctx.backward_and_step(loss, self.module)
        return logs


# ---- checkpoints -------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)     # DDP wrapper -> module


def save_score_model(path_dir: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Save an EDMPrecond(DiT) as safetensors + config.json {dit, sigma_data, **extra} (extra: latent/audio info)."""
    m = _unwrap(model)
    if not isinstance(m, EDMPrecond) or not isinstance(m.net, DiT):
        raise ValueError(f"expected EDMPrecond(DiT), got {type(m).__name__}")
    config = {"dit": m.net.cfg.to_dict(), "sigma_data": m.sigma_data, **(extra or {})}
    return save_checkpoint(path_dir, {k: v for k, v in m.net.state_dict().items()}, config)


def load_score_model(path_dir: str | os.PathLike,
                     device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict[str, Any]]:
    """Load what `save_score_model` wrote: (EDMPrecond(DiT) in eval mode, its config)."""
    tensors, config = load_checkpoint(path_dir, device)
    model = build_score_model(DiTConfig.from_dict(config["dit"]), sigma_data=config["sigma_data"])
    model.net.load_state_dict(tensors)
    return model.to(device).eval(), config
