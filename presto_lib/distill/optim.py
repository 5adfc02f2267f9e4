"""Optimisers of Presto-S's two players (A.1; DMD2), and how the paper's iteration count maps to our loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from presto_lib.fields import reject_unknown

__all__ = ["PlayerOptimConfig", "OPTIM_PRESETS", "build_optimizers", "loop_steps"]


# ---- optimisers of the two players (A.1; DMD2) ----------------------------------------------------

@dataclass
class PlayerOptimConfig:
    """Optimiser of G_phi and of psi = (mu_psi, D_psi).

    A.1 says "Adam" at lr 5e-7; DMD2 (Yin et al. 2024), which Presto-S follows, uses AdamW with betas
    (0.9, 0.999) and weight decay 0.01 for both players: `OPTIM_PRESETS["dmd2"]`, the default here. The
    earlier (0.0, 0.99) Adam of this code base, found in neither paper, stays as `OPTIM_PRESETS["gan"]`.

    Iterations (A.1: "32K iterations"): in DMD2's reference loop one iteration is one loop step, which updates
    the fake player every step and the generator every `dfake_gen_update_ratio` (5) steps, i.e. 32K iterations
    = 32K fake updates + 6.4K generator updates. Our loop updates one player per step (Algorithm 1, line 4), so
    the same work is `loop_steps(32_000)` = 38,400 steps (`counting="dmd2"`); reading "iteration" as a
    generator update instead gives 32K x (fake_updates + 1) = 192,000 steps (`counting="generator"`).
    """
    kind: str = "adamw"                   # "adamw" (DMD2) or "adam" (A.1's word)
    lr_generator: float = 5e-7            # A.1
    lr_fake: float = 5e-7                 # A.1 gives one rate
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.kind not in ("adam", "adamw"):
            raise ValueError(f"optimiser kind must be 'adam' or 'adamw', got {self.kind!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas) or self.weight_decay < 0:
            raise ValueError(f"need two betas in [0, 1) and weight_decay >= 0; got {self.betas}, {self.weight_decay}")
        if self.lr_generator <= 0 or self.lr_fake <= 0:
            raise ValueError("learning rates must be > 0")

    @classmethod
    def from_dict(cls, d: dict) -> "PlayerOptimConfig":
        """Build from a params dict (a `preset` key starts from OPTIM_PRESETS[preset]), rejecting unknown keys."""
        d = dict(d)
        base = dict(OPTIM_PRESETS[d.pop("preset")]) if "preset" in d else {}
        reject_unknown(cls, d, "optimiser options", also=("preset",))
        return cls(**{**base, **d})


OPTIM_PRESETS: dict[str, dict] = {
    "dmd2": dict(kind="adamw", betas=(0.9, 0.999), weight_decay=0.01),    # DMD2's setting (the default)
    "gan": dict(kind="adam", betas=(0.0, 0.99), weight_decay=0.0),        # the earlier GAN-style choice
}


def build_optimizers(ps: Any, cfg: PlayerOptimConfig | None = None) -> dict[str, torch.optim.Optimizer]:
    """{"generator": ..., "fake": ...} over a PrestoS's ps.modules() (the names `PrestoS.step` updates)."""
    cfg = cfg or PlayerOptimConfig()
    opt = torch.optim.AdamW if cfg.kind == "adamw" else torch.optim.Adam
    lrs = {"generator": cfg.lr_generator, "fake": cfg.lr_fake}
    return {name: opt([p for p in m.parameters() if p.requires_grad], lr=lrs[name], betas=cfg.betas,
                      weight_decay=cfg.weight_decay) for name, m in ps.modules().items()}


def loop_steps(iterations: int, fake_updates: int = 5, counting: str = "dmd2") -> int:
    """Our loop steps for `iterations` of the paper: "dmd2" (fake updates; one generator update per
    `fake_updates`) or "generator" (generator updates); see `PlayerOptimConfig`."""
    if counting == "dmd2":
        return int(iterations) + int(iterations) // int(fake_updates)
    if counting == "generator":
        return int(iterations) * (int(fake_updates) + 1)
    raise ValueError(f"counting must be 'dmd2' or 'generator', got {counting!r}")
