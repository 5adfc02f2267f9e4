"""CM, SoundCTM and DITTO-CTM on the 2-D Presto-S toy (`toy.py`): the same losses that distil the music model.

The student is a `ConsistencyStudent` around a copy of the toy base model (an MLP whose features play the DiT
blocks' role in SoundCTM's feature distance); the teacher is any toy denoiser, e.g. the trained base model or the
exact mixture denoiser `toy.ExactScore` (CM / DITTO-CTM; SoundCTM needs a teacher with features).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor
from tqdm.auto import trange

from presto_lib.diffusion import edm
from presto_lib.distill.cm import CMConfig, ConsistencyStudent, cm_loss
from presto_lib.distill.consistency import make_student, sample_student
from presto_lib.distill.ctm import CTMConfig, ctm_loss
from presto_lib.distill.toy import sample_points

__all__ = ["label_null", "toy_student", "distill_toy_consistency", "sample_toy"]


def label_null(cond: dict) -> dict:
    """The toy's CFG null condition: label -1 = the whole mixture (`edm.GaussianMixture`)."""
    return {"label": torch.full_like(cond["label"], -1)}


def toy_student(base: edm.EDMPrecond, cfg: CMConfig) -> ConsistencyStudent:
    """A fresh student holding the toy base weights, with the w / target-time embeddings its config asks for."""
    return make_student(base, cfg)


def distill_toy_consistency(student: ConsistencyStudent, teacher: torch.nn.Module, gm: edm.GaussianMixture,
                            cfg: CMConfig, iters: int, batch: int = 256, lr: float = 1e-3, ema_decay: float = 0.99,
                            log_every: int = 0) -> list[dict]:
    """Run `iters` Adam updates of cm_loss (CMConfig) or ctm_loss (CTMConfig) on mixture samples; returns logs.

    With cfg.target == "ema" the target network is an EMA of the student with `ema_decay`.
    """
    loss_fn = ctm_loss if isinstance(cfg, CTMConfig) else cm_loss
    teacher.requires_grad_(False).eval()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    target = copy.deepcopy(student).requires_grad_(False) if cfg.target == "ema" else student
    history = []
    for it in trange(iters, desc=f"toy {type(cfg).__name__}", leave=False):
        loss, logs = loss_fn(student, target, teacher, sample_points(gm, batch), None, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if target is not student:
            from presto_lib.train import update_ema
            update_ema(target, student, ema_decay)
        if log_every and (it + 1) % log_every == 0:
            history.append({"iteration": it + 1, **logs})
    return history


@torch.no_grad()
def sample_toy(student: ConsistencyStudent, cfg: CMConfig, n: int, steps: int = 4, w: float | None = None,
               seed: int = 0) -> Tensor:
    """n toy samples [n, 2, 1] in `steps` steps: CTM gamma-sampling for a CTMConfig, consistency sampling for CM."""
    g = torch.Generator().manual_seed(seed)
    return sample_student(student, torch.randn(n, 2, 1, generator=g), None, cfg, steps, w=w, generator=g)
