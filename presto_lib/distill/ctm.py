"""Consistency trajectory models: SoundCTM and DITTO-CTM as two configurations of one CTM (paper A.2, Table 2).

CTM (Kim et al. 2024, "Consistency Trajectory Models", ICLR) learns the anywhere-to-anywhere jump of the teacher's
PF ODE (eq. 1), G_phi(x_t, t, s) ~ x_s for any s <= t, through the parameterisation of their Lemma 1 / eq. 5

    G_phi(x_t, t, s) = (s/t) x_t + (1 - s/t) g_phi(x_t, t, s),      G(x_t, t, t) = x_t,   G(x_t, t, 0) = g,

and the consistency loss (their eq. 7, "soft matching" at the data end, match point z0)

    L_CTM = E[ d( G_sg(phi)(G_phi(x_t, t, s), s, 0),  G_sg(phi-)(G_sg(phi-)(Solver(x_t, t, u), u, s), s, 0) ) ]

with t > u >= s on the N-level grid of eq. 9 and Solver the teacher's Heun solver over k grid steps t -> u.
Both ends are mapped to time 0 by the stop-gradient model (gradient flows through its input, not its weights).

- SoundCTM (Saito et al. 2024): g_phi(x_t, t, s) has a learned target-time embedding; a multi-step teacher
  (k ~ U{1..teacher_steps}); no adversarial loss; d is a distance between the *teacher's* intermediate features
  of the two estimates (their sec. 3.2): sum over blocks of the MSE between channel-normalised features; plus
  CTM's DSM term on g_phi(x_t, t, t).
- DITTO-CTM (Novack et al. 2024a, DITTO-2): the loss back on raw outputs (d = L2), a single-step teacher
  (k = 1, u the next grid level, as CM) and no target-time embedding, so g_phi = g_phi(x_t, t) and every jump is
  a DDIM step with the student's x_0 estimate, G = x_t + (s - t)(x_t - g_phi(x_t, t)) / t.

Both distil the CFG weight w as an input like CM (`cm.py`; Bai et al. 2024), sampled U[w_min, w_max].
Underspecified in the paper (A.2), chosen here. SoundCTM follows its released recipe (sony/soundctm ctm_train.sh:
N = 40, features compared at s ("zs"), auxiliary DSM with weight 1 times CTM's adaptive balance) except the
teacher: k ~ U{1..10} Heun steps instead of up to 39, to bound the teacher's cost per update (each step is 2
CFG-batched teacher calls). DITTO-CTM
compares at time 0 (CTM's default) on raw outputs without DSM. Both: s uniform over the grid levels below t
(0 included), w ~ U[w_min, w_max] as CM (SoundCTM's release uses [2, 5]), target = stop-gradient (the loop's EMA
with target="ema").

Sampling: CTM's gamma-sampling (Kim et al. sec. 5, Algorithm 2): x <- G(x, t_n, sqrt(1 - gamma^2) t_{n+1}), then
add gamma t_{n+1} z. gamma = 0 is deterministic anywhere-to-anywhere jumping; gamma = 1 is CM / ping-pong.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from presto_lib.diffusion import edm
from presto_lib.distill.cm import (CMConfig, NullFn, _bcast, _per_sample, _rand, batch_inputs, distance,
                                   guided_teacher, draw_w, solve_ode, target_module)
from presto_lib.diffusion.score_model import null_like
from presto_lib.distill.presto_s import frozen, pingpong_sigmas

__all__ = ["CTMConfig", "VARIANTS", "ctm_config", "ctm_jump", "feature_distance", "last_layer", "adaptive_weight",
           "ctm_loss", "CTMStep", "sample_ctm"]


# ---- configuration -------------------------------------------------------------------------------

@dataclass
class CTMConfig(CMConfig):
    """A CTM distillation (Kim et al. 2024); defaults are SoundCTM (Saito et al. 2024)."""
    n_levels: int = 40            # SoundCTM's grid size (CM's 18 in CMConfig)
    target_time: bool = True      # learned target-time embedding of s (SoundCTM); False: DITTO-CTM
    teacher_steps: int = 10       # Heun steps t -> u drawn U{1..teacher_steps}; 1 = single-step teacher (DITTO)
    feature_loss: bool = True     # d on the teacher's intermediate features (SoundCTM); False: raw outputs
    match_point: str = "z0"       # compare at time 0 (CTM's default) or at s ("zs", SoundCTM's released recipe)
    dsm_weight: float = 0.0       # CTM's auxiliary DSM on g(x_t, t, t) (SoundCTM: 1.0); 0 = consistency loss only
    dsm_adaptive: bool = True     # scale DSM by ||grad L_CTM|| / ||grad L_DSM|| at the last layer (CTM, SoundCTM)
    gamma: float = 0.0            # gamma-sampling: 0 deterministic jumps, 1 ping-pong

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_steps < 1:
            raise ValueError(f"teacher_steps must be >= 1, got {self.teacher_steps}")
        if self.match_point not in ("z0", "zs"):
            raise ValueError(f"match_point must be 'z0' or 'zs', got {self.match_point!r}")
        if self.dsm_weight < 0:
            raise ValueError(f"dsm_weight must be >= 0, got {self.dsm_weight}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")


VARIANTS: dict[str, dict[str, Any]] = {
    "soundctm": dict(target_time=True, teacher_steps=10, feature_loss=True, match_point="zs",   # Saito et al.
                     dsm_weight=1.0),
    "ditto_ctm": dict(target_time=False, teacher_steps=1, feature_loss=False, match_point="z0",  # Novack et al.
                      dsm_weight=0.0),
}


def ctm_config(variant: str, **overrides: Any) -> CTMConfig:
    """The config of a named variant (see VARIANTS) with other fields overridden."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CTM variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return CTMConfig.from_dict({**VARIANTS[variant], **overrides})


# ---- the jump G(x_t, t, s) -----------------------------------------------------------------------

def ctm_jump(model: Callable, x: Tensor, t: Tensor | float, s: Tensor | float, cond: dict | None,
             w: Tensor | None = None, sigma_floor: float = edm.SIGMA_MIN) -> Tensor:
    """G(x_t, t, s) = (s/t) x_t + (1 - s/t) g(x_t, t, s) (Kim et al. eq. 5); G = x_t where s >= t (e.g. t = s = 0)."""
    t, s = _per_sample(t, x), _per_sample(s, x)
    t_eval = t.clamp_min(sigma_floor)                     # g is evaluated where it matters (t > 0) only
    g = model(x, t_eval, cond, w=w, s=s)
    r = _bcast(torch.where(s >= t, torch.ones_like(t), s / t_eval), x)
    return torch.where(_bcast(s >= t, x), x, r * x + (1 - r) * g)


def feature_distance(teacher: Callable, a: Tensor, b: Tensor, sigma: Tensor, cond: dict | None) -> Tensor:
    """SoundCTM's d (Saito et al. sec. 3.2): sum over the teacher's blocks of the MSE of channel-normalised features.

    a carries the gradient (through the frozen teacher); b is the target (no gradient). Returns [B].
    """
    _, fa = teacher(a, sigma, cond, return_features=True)
    with torch.no_grad():
        _, fb = teacher(b, sigma, cond, return_features=True)
    norm = lambda f: f.float() / (f.float().pow(2).sum(-1, keepdim=True).sqrt() + 1e-10)
    return sum((norm(p) - norm(q)).pow(2).reshape(a.shape[0], -1).mean(1) for p, q in zip(fa, fb))


# ---- the loss ------------------------------------------------------------------------------------

def last_layer(model: nn.Module) -> Tensor | None:
    """The output projection's weight of a student's network (DiT final linear, toy MLP `out`), or None."""
    net = getattr(getattr(getattr(model, "module", model), "score", None), "net", None)
    if hasattr(net, "final_layer"):
        return net.final_layer.linear.weight
    return net.out.weight if hasattr(net, "out") else None


def adaptive_weight(l_main: Tensor, l_aux: Tensor, layer: Tensor | None, max_weight: float = 1e3) -> Tensor | float:
    """||d l_main / d layer|| / ||d l_aux / d layer||, clamped, no gradient (CTM's balance of L_DSM, after VQGAN)."""
    if layer is None or not l_main.requires_grad or not l_aux.requires_grad:
        return 1.0
    g1 = torch.autograd.grad(l_main, layer, retain_graph=True, allow_unused=True)[0]
    g2 = torch.autograd.grad(l_aux, layer, retain_graph=True, allow_unused=True)[0]
    if g1 is None or g2 is None:
        return 1.0
    return (g1.norm() / (g2.norm() + 1e-8)).clamp(0.0, max_weight).detach()


def ctm_loss(student: Callable, target: Callable, teacher: Callable, x0: Tensor, cond: dict | None,
             cfg: CTMConfig, null_fn: NullFn = null_like,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """L_CTM (Kim et al. eq. 7) without the GAN term, + dsm_weight L_DSM; d on teacher features or raw outputs."""
    B, dev, N = x0.shape[0], x0.device, cfg.n_levels
    grid = edm.edm_sigmas(N, cfg.sigma_min, cfg.sigma_max, cfg.rho, device=dev)          # [N + 1], ends 0
    i = (_rand((B,), generator, dev) * (N - 1)).long().clamp(max=N - 2)                 # t = grid[i] > 0
    j = i + 1 + (_rand((B,), generator, dev) * (N - i)).long().clamp(max=N - i - 1)     # s in (t, 0], j <= N
    k = 1 + (_rand((B,), generator, dev) * cfg.teacher_steps).long().clamp(max=cfg.teacher_steps - 1)
    u = torch.minimum(i + k, j)                                                          # t > u >= s
    t, s, tu = grid[i], grid[j], grid[u]
    w = draw_w(cfg, B, dev, generator)
    x_t = x0 + _bcast(t, x0) * _rand(tuple(x0.shape), generator, dev, "randn")
    zero = torch.zeros_like(s)
    with torch.no_grad():
        x_u = solve_ode(guided_teacher(teacher, cond, w, null_fn), x_t, t, tu, u - i, cfg.solver, cfg.rho)
        tgt = ctm_jump(target, x_u, tu, s, cond, w, cfg.sigma_min)                      # G_phi-(x_u, u, s)
        if cfg.match_point == "z0":
            tgt = ctm_jump(target, tgt, s, zero, cond, w, cfg.sigma_min)                # G_phi-(., s, 0)
    est = ctm_jump(student, x_t, t, s, cond, w, cfg.sigma_min)                          # G_phi(x_t, t, s)
    if cfg.match_point == "z0":
        with frozen(target) if isinstance(target, nn.Module) else nullcontext():   # G_sg(phi)(., s, 0): grad to est
            est = ctm_jump(target, est, s, zero, cond, w, cfg.sigma_min)
    if cfg.feature_loss:
        at = torch.full_like(s, cfg.sigma_min) if cfg.match_point == "z0" else s.clamp_min(cfg.sigma_min)
        per = feature_distance(teacher, est, tgt, at, cond)
    else:
        per = distance(est, tgt, cfg.distance, cfg.huber_c)
    loss = per.mean()
    logs = {"ctm_dist": float(per.detach().mean()), "teacher_steps": float((u - i).float().mean())}
    if cfg.dsm_weight > 0:                 # CTM's L_DSM (eq. 3): g(x, sigma, sigma) is the denoiser, log-normal sigma
        sig = (cfg.p_mean + cfg.p_std * _rand((B,), generator, dev, "randn")).exp()
        x_d = x0 + _bcast(sig, x0) * _rand(tuple(x0.shape), generator, dev, "randn")
        dsm = (edm.edm_loss_weight(sig, cfg.sigma_data) * distance(student(x_d, sig, cond, w=w, s=sig), x0)).mean()
        bal = adaptive_weight(loss, dsm, last_layer(student)) if cfg.dsm_adaptive else 1.0
        loss = loss + cfg.dsm_weight * bal * dsm
        logs.update(dsm=float(dsm.detach()), dsm_balance=float(bal))
    return loss, {"loss": float(loss.detach()), **logs}


# ---- one step of the shared training loop ----------------------------------------------------------

class CTMStep:
    """`step_fn(ctx, batch, step)` of `presto_lib.train.train`: one CTM update (SoundCTM or DITTO-CTM).

    modules[module] is a ConsistencyStudent (with a target-time embedding iff cfg.target_time), frozen[teacher]
    the base score model.
    """

    def __init__(self, cfg: CTMConfig, module: str = "student", teacher: str = "teacher", crop_frames: int = 0,
                 null_fn: NullFn = null_like):
        self.cfg, self.module, self.teacher, self.crop, self.null_fn = cfg, module, teacher, int(crop_frames), null_fn

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, float]:
        raw = ctx.raw[self.module]
        if (getattr(raw, "s_emb", None) is not None) != self.cfg.target_time:
            raise ValueError(f"the student {'lacks' if self.cfg.target_time else 'has'} a target-time embedding "
                             f"but target_time={self.cfg.target_time}")
        x0, cond = batch_inputs(batch, ctx.device, self.crop)
        target = target_module(ctx, self.module, self.cfg.target)
        loss, logs = ctm_loss(ctx.modules[self.module], target, ctx.frozen[self.teacher], x0, cond, self.cfg,
                              self.null_fn)
        logs["grad_norm"] = ctx.backward_and_step(loss, self.module)
        return logs


# ---- few-step sampling ---------------------------------------------------------------------------

@torch.no_grad()
def sample_ctm(student: Callable, noise: Tensor, cond: dict | None, cfg: CTMConfig, steps: int = 4,
               w: float | None = None, gamma: float | None = None, rho: float | None = None,
               generator: torch.Generator | None = None,
               noise_sampler: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """gamma-sampling (Kim et al. Algorithm 2) from unit noise [B, C, T] over the ping-pong levels (sec. 3.1)."""
    gamma = cfg.gamma if gamma is None else float(gamma)
    sig = pingpong_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho if rho is None else rho).to(noise.device)
    wt = _per_sample(cfg.sample_w if w is None else w, noise) if cfg.guidance else None
    x = noise * sig[0]
    for n in range(len(sig) - 1):
        s_hat = (1 - gamma ** 2) ** 0.5 * sig[n + 1]
        x = ctm_jump(student, x, sig[n], s_hat, cond, wt, cfg.sigma_min)                # anywhere-to-anywhere
        if sig[n + 1] > 0 and gamma > 0:
            z = noise_sampler(sig[n], sig[n + 1]) if noise_sampler is not None else torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + gamma * sig[n + 1] * z
    return x
