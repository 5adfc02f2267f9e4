"""Consistency distillation (CM) of the base model, with the CFG weight distilled in (paper A.2, Table 2).

Consistency models (Song et al. 2023, "Consistency Models", sec. 4 "consistency distillation") learn a map
f_phi(x_t, t) -> x_0 that is constant along every trajectory of the teacher's PF ODE (eq. 1):

    L_CD = E[ lambda(t_n) d( f_phi(x_{t_{n+1}}, t_{n+1}),  f_phi-(x^_{t_n}, t_n) ) ]          (Song et al. eq. 7)
    x_{t_{n+1}} = x_0 + t_{n+1} eps,    x^_{t_n} = one ODE-solver step of the teacher from t_{n+1} to t_n

on the N-level grid of eq. 9 (Song et al. use EDM's grid, N = 18, and Heun). phi- is the target network: the
stop-gradient copy of phi (mu = 0, as improved CT, Song & Dhariwal 2023) or the loop's EMA of phi.

As in the audio works the paper follows (Bai et al. 2024; Novack et al. 2024a, DITTO-2), the CFG weight w is an
extra input: w ~ U[w_min, w_max] per sample, the teacher step uses mu_w = mu_u + w (mu_c - mu_u) (sec. 2.2) and
both f_phi and f_phi- see w, so one student samples at any guidance weight without a second (null) pass. w enters
through a zero-initialised embedding added to the DiT's AdaLN conditioning (its `extra_emb` hook), so the student
starts exactly at the base model. `ConsistencyStudent` also carries CTM's target-time embedding (`ctm.py`).

Underspecified in the paper (A.2), chosen here: f_phi is the EDM-preconditioned base model itself (eq. 4), so the
boundary condition f(x, sigma_min) = x holds up to c_out(sigma_min) = 0.002 (Song et al. App. C enforce it
exactly with shifted c_skip/c_out; initialising from the teacher needs EDM's); w ~ U[1, 6] (covers the teacher's
4.5 of A.1); an L2 distance (LPIPS has no audio-latent analogue), or iCT's pseudo-Huber.

Sampling: multistep consistency sampling (Song et al. Algorithm 1), i.e. ping-pong sampling (sec. 3.1) of f_phi.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from presto_lib.diffusion import edm
from presto_lib.diffusion.edm import bcast
from presto_lib.diffusion.sampling import cfg_denoiser, sample_pingpong, to_d
from presto_lib.distill.presto_l import BudgetEmbedder
from presto_lib.diffusion.score_model import null_like
from presto_lib.distill.presto_s import pingpong_sigmas

__all__ = ["CMConfig", "ConsistencyStudent", "guided_teacher", "ode_step", "solve_ode", "distance", "draw_w",
           "batch_inputs", "cm_loss", "CMStep", "sample_cm", "SOLVERS"]

SOLVERS = ("heun", "euler", "dpmpp_2s")
NullFn = Callable[[dict], dict]


# ---- configuration -------------------------------------------------------------------------------

@dataclass
class CMConfig(edm.EDMConfig):
    """Consistency distillation with a distilled CFG weight (Song et al. 2023; Bai et al. 2024)."""
    n_levels: int = 18            # N of the eq. 9 grid the teacher steps along (Song et al.: 18 with EDM)
    solver: str = "heun"          # teacher ODE step: "heun" (Song et al.), "euler" (DDIM) or "dpmpp_2s"
    guidance: bool = True         # distil the CFG weight w as an input (Bai et al. 2024)
    w_min: float = 1.0            # w ~ U[w_min, w_max] during distillation (w = 1: conditional teacher)
    w_max: float = 6.0
    sample_w: float = 4.5         # w used by the samplers by default (the teacher's weight in A.1)
    distance: str = "l2"          # "l2" or "pseudo_huber" (improved CT, Song & Dhariwal 2023)
    huber_c: float = 0.03         # pseudo-Huber c on the per-element RMS scale
    weighting: str = "uniform"    # lambda(t_n): "uniform" (Song et al.) or "inv_gap" = 1 / (t_{n+1} - t_n)
    target: str = "stopgrad"      # phi-: "stopgrad" (mu = 0) or "ema" (the loop's EMA of the student)
    w_scale: float = 100.0        # w -> sinusoidal features (w ~ 1-10 -> DiT's timestep range)
    # sigma_data, p_mean, p_std, sigma_min, sigma_max, rho: inherited from edm.EDMConfig

    def __post_init__(self):
        if self.n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {self.n_levels}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not self.w_min <= self.w_max:
            raise ValueError(f"need w_min <= w_max, got {self.w_min}, {self.w_max}")
        if self.distance not in ("l2", "pseudo_huber"):
            raise ValueError(f"distance must be 'l2' or 'pseudo_huber', got {self.distance!r}")
        if self.weighting not in ("uniform", "inv_gap"):
            raise ValueError(f"weighting must be 'uniform' or 'inv_gap', got {self.weighting!r}")
        if self.target not in ("stopgrad", "ema"):
            raise ValueError(f"target must be 'stopgrad' or 'ema', got {self.target!r}")


def _per_sample(v: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or [B] value as a float32 (float64 for float64 x) [B] tensor on x's device."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    v = torch.as_tensor(v, device=x.device).to(dtype).reshape(-1)
    return v.expand(x.shape[0]) if v.numel() == 1 else v


# ---- the student: base model + zero-initialised w / target-time embeddings -----------------------

class ConsistencyStudent(nn.Module):
    """f_phi(x, sigma, cond; w, s) -> x0: the base score model with w (and CTM's target time s) in its AdaLN.

    Both embeddings are zero-initialised (presto_l.BudgetEmbedder), so at init the student is the base model.
    A student without an embedding ignores that input (DITTO-CTM has no target-time embedding; sec. A.2).
    """

    def __init__(self, score: nn.Module, hidden: int, freq_dim: int = 256, guidance: bool = True,
                 target_time: bool = False, w_scale: float = 100.0, s_scale: float = 250.0,
                 s_floor: float = edm.SIGMA_MIN):
        super().__init__()
        self.score, self.s_floor = score, float(s_floor)
        self.w_emb = BudgetEmbedder(hidden, freq_dim, w_scale) if guidance else None
        # s enters as c_noise(s) = ln(s)/4 with the DiT's noise scale; s < s_floor (s = 0) embeds as s_floor
        self.s_emb = BudgetEmbedder(hidden, freq_dim, s_scale) if target_time else None

    def forward(self, x: Tensor, sigma: Tensor | float, cond: dict | None = None, w: Tensor | float | None = None,
                s: Tensor | float | None = None, return_features: bool = False):
        """x0_hat (eq. 4) at noise sigma for guidance w and target time s; with features when asked."""
        emb = None
        if self.w_emb is not None:
            if w is None:
                raise ValueError("this student distils the CFG weight: pass w")
            emb = self.w_emb(_per_sample(w, x))
        if self.s_emb is not None:
            if s is None:
                raise ValueError("this student has a target-time embedding: pass s")
            e = self.s_emb(edm.c_noise(_per_sample(s, x).clamp_min(self.s_floor)))
            emb = e if emb is None else emb + e
        kw: dict[str, Any] = {"return_features": True} if return_features else {}
        if emb is not None:
            kw["extra_emb"] = emb
        return self.score(x, sigma, cond, **kw)


# ---- the teacher's PF ODE (eq. 1), per-sample noise levels ----------------------------------------

def guided_teacher(teacher: Callable, cond: dict | None, w: Tensor | None,
                   null_fn: NullFn = null_like) -> Callable[[Tensor, Tensor], Tensor]:
    """The teacher's denoiser mu_w = mu_u + w (mu_c - mu_u) with a per-sample w [B] (sec. 2.2).

    One batched (cond, null) teacher call per evaluation; an unconditional teacher (cond None) ignores w.
    """
    if cond is None or w is None:
        return lambda x, s: teacher(x, s, cond)
    uncond = null_fn(cond)

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        return cfg_denoiser(teacher, cond, uncond, bcast(w.to(x.dtype), x))(x, sigma)
    return denoiser


def ode_step(denoiser: Callable, x: Tensor, t: Tensor, s: Tensor, solver: str = "heun") -> Tensor:
    """One step of the PF ODE (eq. 1) from t [B] to s [B] < t; a step to s = 0 is Euler (as `sample_heun`).

    heun: EDM Alg. 1; euler: DDIM, x' = x + (s - t)(x - mu)/t; dpmpp_2s: DPM-Solver++(2S) (`sample_dpmpp_2s`).
    """
    tb, sb = bcast(t, x), bcast(s, x)
    den = denoiser(x, t)
    x_e = x + (sb - tb) * to_d(x, t, den)
    if solver == "euler":
        return x_e
    s_pos = s.clamp_min(1e-12)                                   # evaluated where s > 0 only
    if solver == "heun":
        x_h = x + (sb - tb) * (to_d(x, t, den) + to_d(x_e, s_pos, denoiser(x_e, s_pos))) / 2
    elif solver == "dpmpp_2s":
        m = (t * s_pos).sqrt()                                   # midpoint in log sigma (r = 1/2)
        x_2 = bcast(m / t, x) * x + bcast(1 - m / t, x) * den
        x_h = bcast(s_pos / t, x) * x + bcast(1 - s_pos / t, x) * denoiser(x_2, m)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    return torch.where(sb > 0, x_h, x_e)


def solve_ode(denoiser: Callable, x: Tensor, t: Tensor, s: Tensor, steps: int | Tensor = 1,
              solver: str = "heun", rho: float = edm.RHO) -> Tensor:
    """Integrate the PF ODE from t [B] to s [B] in steps [B] steps on each sample's own eq. 9 grid.

    Sub-levels are equally spaced in sigma^(1/rho), so k steps between two levels of the N-grid land exactly on
    the grid levels between them (CTM's multi-step Heun teacher, Kim et al. 2024 sec. 4).
    """
    steps = torch.as_tensor(steps, device=x.device).long().reshape(-1).expand(x.shape[0])
    if (steps < 1).any():
        raise ValueError("steps must be >= 1")
    a, b = t.double() ** (1 / rho), s.double() ** (1 / rho)
    for k in range(int(steps.max())):
        f0 = (k / steps.double()).clamp(max=1.0)
        f1 = ((k + 1) / steps.double()).clamp(max=1.0)
        t0 = (a + f0 * (b - a)) ** rho
        t1 = (a + f1 * (b - a)) ** rho
        active = k < steps
        t0 = torch.where(active, t0, t0.clamp_min(1e-6)).to(x.dtype if x.is_floating_point() else torch.float32)
        x_new = ode_step(denoiser, x, t0, t1.to(t0.dtype), solver)
        x = torch.where(bcast(active, x), x_new, x)
    return x


# ---- the loss ------------------------------------------------------------------------------------

def distance(a: Tensor, b: Tensor, kind: str = "l2", c: float = 0.03) -> Tensor:
    """Per-example distance [B]: mean squared error, or pseudo-Huber sqrt(mse + c^2) - c (improved CT)."""
    mse = (a.float() - b.float()).pow(2).reshape(a.shape[0], -1).mean(1)
    if kind == "l2":
        return mse
    if kind == "pseudo_huber":
        return (mse + c * c).sqrt() - c
    raise ValueError(f"unknown distance {kind!r}")


def _rand(shape: tuple, generator: torch.Generator | None, device: torch.device, kind: str = "rand") -> Tensor:
    dev = generator.device if generator is not None else device
    f = {"rand": torch.rand, "randn": torch.randn}[kind]
    return f(shape, generator=generator, device=dev).to(device)


def draw_w(cfg: CMConfig, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor | None:
    """w ~ U[w_min, w_max] per sample (Bai et al. 2024); None when guidance is not distilled."""
    if not cfg.guidance:
        return None
    return cfg.w_min + (cfg.w_max - cfg.w_min) * _rand((n,), generator, device)


def cm_loss(student: Callable, target: Callable, teacher: Callable, x0: Tensor, cond: dict | None,
            cfg: CMConfig, null_fn: NullFn = null_like,
            generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """L_CD (Song et al. eq. 7) with the CFG weight as an input: one teacher step t_{n+1} -> t_n, target phi-."""
    B, dev = x0.shape[0], x0.device
    grid = edm.edm_sigmas(cfg.n_levels, cfg.sigma_min, cfg.sigma_max, cfg.rho, device=dev)   # [N + 1], ends 0
    n = (_rand((B,), generator, dev) * (cfg.n_levels - 1)).long().clamp(max=cfg.n_levels - 2)
    t, t_next = grid[n], grid[n + 1]                               # t_{n+1} > t_n >= sigma_min (Song's indices)
    w = draw_w(cfg, B, dev, generator)
    x_t = x0 + bcast(t, x0) * _rand(tuple(x0.shape), generator, dev, "randn")
    with torch.no_grad():
        x_next = solve_ode(guided_teacher(teacher, cond, w, null_fn), x_t, t, t_next, 1, cfg.solver, cfg.rho)
        tgt = target(x_next, t_next, cond, w=w)                     # f_phi-(x^_{t_n}, t_n, w)
    pred = student(x_t, t, cond, w=w)                               # f_phi(x_{t_{n+1}}, t_{n+1}, w)
    lam = torch.ones_like(t) if cfg.weighting == "uniform" else 1.0 / (t - t_next)
    per = distance(pred, tgt.detach(), cfg.distance, cfg.huber_c)
    loss = (lam * per).mean()
    return loss, {"loss": float(loss.detach()), "cm_dist": float(per.detach().mean())}


# ---- one step of the shared training loop ----------------------------------------------------------

def batch_inputs(batch: dict[str, Any], device: torch.device, crop_frames: int = 0) -> tuple[Tensor, dict | None]:
    """(x0, cond) of a batch: latents (+ a random crop) and the text/BPM condition (or a toy's label, or None)."""
    from presto_lib.diffusion.score_model import batch_condition

    x0 = batch["latents"].to(device).float()
    if 0 < crop_frames < x0.shape[-1]:
        t0 = int(torch.randint(x0.shape[-1] - crop_frames + 1, ()))
        x0 = x0[..., t0:t0 + crop_frames]
    if "text" in batch:
        return x0, batch_condition(batch, device)
    return x0, ({"label": batch["label"].to(device)} if "label" in batch else None)


def target_module(ctx: Any, name: str, kind: str) -> nn.Module:
    """phi-: the loop's EMA of the student (`ema=[name]` in `train`) or the student itself under no_grad."""
    if kind == "ema":
        if name not in ctx.ema:
            raise ValueError(f"target 'ema' needs train(..., ema=[{name!r}])")
        return ctx.ema[name]
    return ctx.raw[name]


class CMStep:
    """`step_fn(ctx, batch, step)` of `presto_lib.train.train`: one consistency-distillation update.

    modules[module] is a ConsistencyStudent, frozen[teacher] the base score model.
    """

    def __init__(self, cfg: CMConfig, module: str = "student", teacher: str = "teacher", crop_frames: int = 0,
                 null_fn: NullFn = null_like):
        self.cfg, self.module, self.teacher, self.crop, self.null_fn = cfg, module, teacher, int(crop_frames), null_fn

    def __call__(self, ctx: Any, batch: dict[str, Any], step: int) -> dict[str, float]:
        x0, cond = batch_inputs(batch, ctx.device, self.crop)
        target = target_module(ctx, self.module, self.cfg.target)
        loss, logs = cm_loss(ctx.modules[self.module], target, ctx.frozen[self.teacher], x0, cond, self.cfg,
                             self.null_fn)
        logs["grad_norm"] = ctx.backward_and_step(loss, self.module)
        return logs


# ---- few-step sampling ---------------------------------------------------------------------------

@torch.no_grad()
def sample_cm(student: Callable, noise: Tensor, cond: dict | None, cfg: CMConfig, steps: int = 4,
              w: float | None = None, rho: float | None = None, generator: torch.Generator | None = None,
              noise_sampler: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Multistep consistency sampling (Song et al. Algorithm 1) = ping-pong (sec. 3.1) from unit noise [B, C, T]."""
    sig = pingpong_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho if rho is None else rho).to(noise.device)
    wt = _per_sample(cfg.sample_w if w is None else w, noise) if cfg.guidance else None
    return sample_pingpong(lambda x, s: student(x, s, cond, w=wt), noise * sig[0], sig, generator=generator,
                           noise_sampler=noise_sampler, disable=True)
