"""What a stage needs around the consistency baselines (`cm.py`, `ctm.py`): build, save, load and sample a student.

    cfg = CMConfig.from_dict(...)  or  ctm_config("soundctm" | "ditto_ctm", **overrides)
    student = make_student(base, cfg)                         # base: the loaded EDMPrecond(DiT), also the teacher
    step = CMStep(cfg) or CTMStep(cfg)                        # train(step, modules={"student": student}, ...,
                                                              #       frozen={"teacher": base})
    save_student(dir, student, cfg)  /  load_student(dir)
    generate = student_sampler(t2m, student, cfg, steps=4)    # generate(captions, bpms, seeds) -> audio
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.diffusion.edm import EDMPrecond
from presto_lib.distill.cm import CMConfig, CMStep, ConsistencyStudent, sample_cm
from presto_lib.distill.ctm import CTMConfig, CTMStep, sample_ctm
from presto_lib.models.dit import DiT, DiTConfig

__all__ = ["make_student", "make_step", "method_of", "save_student", "load_student", "sample_student",
           "student_sampler"]


def method_of(cfg: CMConfig) -> str:
    """'ctm' for a CTMConfig (SoundCTM, DITTO-CTM), 'cm' for a CMConfig."""
    return "ctm" if isinstance(cfg, CTMConfig) else "cm"


def make_student(base: EDMPrecond, cfg: CMConfig) -> ConsistencyStudent:
    """A fresh student holding a copy of the base weights plus the w / target-time embeddings cfg asks for.

    Works for the DiT (hidden_size, freq_dim, noise_emb_scale) and the 2-D toy's MLP (hidden, freq_dim).
    """
    net = base.net
    if isinstance(net, DiT):
        hidden, freq, s_scale = net.hidden_size, net.cfg.freq_dim, net.cfg.noise_emb_scale
    else:
        hidden, freq, s_scale = net.hidden, net.freq_dim, 100.0
    score = copy.deepcopy(base).float().train().requires_grad_(True)
    return ConsistencyStudent(score, hidden, freq, cfg.guidance, bool(getattr(cfg, "target_time", False)),
                              cfg.w_scale, s_scale, s_floor=cfg.sigma_min)


def make_step(cfg: CMConfig, **kwargs: Any) -> CMStep | CTMStep:
    """The `step_fn` of `presto_lib.train.train` for cfg (kwargs: module, teacher, crop_frames, null_fn)."""
    return CTMStep(cfg, **kwargs) if isinstance(cfg, CTMConfig) else CMStep(cfg, **kwargs)


def save_student(path_dir: str | os.PathLike, student: nn.Module, cfg: CMConfig,
                 extra: dict[str, Any] | None = None) -> Path:
    """Weights (DiT + embeddings) + config {dit, sigma_data, method, consistency, **extra} (presto_lib.checkpoint)."""
    m = getattr(student, "module", student)
    if not isinstance(m, ConsistencyStudent) or not isinstance(m.score.net, DiT):
        raise ValueError(f"expected a ConsistencyStudent around an EDMPrecond(DiT), got {type(m).__name__}")
    config = {"dit": m.score.net.cfg.to_dict(), "sigma_data": m.score.sigma_data, "method": method_of(cfg),
              "consistency": cfg.to_dict(), **(extra or {})}
    return save_checkpoint(path_dir, dict(m.state_dict()), config)


def load_student(path_dir: str | os.PathLike,
                 device: str | torch.device = "cpu") -> tuple[ConsistencyStudent, CMConfig, dict[str, Any]]:
    """Load what `save_student` wrote: (student in eval mode, its CMConfig / CTMConfig, the config dict)."""
    from presto_lib.diffusion.score_model import build_score_model

    tensors, config = load_checkpoint(path_dir, device)
    if "consistency" not in config:
        raise ValueError(f"{path_dir} holds no consistency student (config.json lacks 'consistency')")
    cfg = (CTMConfig if config["method"] == "ctm" else CMConfig).from_dict(config["consistency"])
    student = make_student(build_score_model(DiTConfig.from_dict(config["dit"]), sigma_data=config["sigma_data"]),
                           cfg)
    student.load_state_dict(tensors)
    return student.to(device).eval(), cfg, config


def sample_student(student: Callable, noise: Tensor, cond: dict | None, cfg: CMConfig, steps: int = 4,
                   w: float | None = None, **kwargs: Any) -> Tensor:
    """Few-step samples from unit noise: CTM gamma-sampling for a CTMConfig, consistency sampling for CM."""
    fn = sample_ctm if isinstance(cfg, CTMConfig) else sample_cm
    return fn(student, noise, cond, cfg, steps, w=w, **kwargs)


def student_sampler(t2m: Any, student: Callable, cfg: CMConfig, steps: int = 4,
                    w: float | None = None) -> Callable[[list[str], list[float], list[int]], Tensor]:
    """generate(captions, bpms, seeds) -> audio from a `TextToMusic`, in `steps` steps at guidance w (default
    cfg.sample_w; no CFG pass: w is an input). Noise comes from each sample's own seed (as Presto-S's sampler)."""
    def generate(captions: list[str], bpms: list[float], seeds: list[int]) -> Tensor:
        cond, _ = t2m.conditions(captions, bpms)
        x = t2m.initial_noise(seeds, 1.0)
        gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        noise = lambda s, s_next: torch.stack([torch.randn(t2m.latent_shape, generator=g) for g in gens]).to(x)
        with torch.no_grad():
            z = sample_student(student, x, cond, cfg, steps, w=w, noise_sampler=noise)
        return t2m.decode(z)
    return generate
