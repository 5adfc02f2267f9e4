"""Presto-S: score-based distribution matching distillation for continuous-time (EDM) models.

Paper sec. 3.1-3.2 and Algorithm 1 (appendix A.3). Three networks share one interface, `model(x, sigma, cond) -> x0`:
    G_phi     the few-step generator, initialised from the base score model;
    mu_real   the base score model itself, frozen, queried with plain CFG at w = 4.5 (A.1);
    mu_psi    the "fake" score model of the generator's outputs, initialised from the base model and trained
              online with the fake-DSM loss (eq. 6), 5 updates per generator update;
plus D_psi, a discriminator head on mu_psi's intermediate features (sec. 3.2.3, `discriminator.py`).

Each of the four noise distributions p_gen, p_DMD, p_DSM, p_GAN is "train" (log-normal) or "inf" (eq. 9 with
u ~ U[0, 1]); the generator's inputs are continuous unless `discrete_levels` > 0 (DMD2's fixed set). With
`use_dmd=False` only the GAN term trains the generator: the DMD-GAN baseline (A.2). `gan_loss="ns"` is the
non-saturating loss of eq. 7 instead of the least-squares loss of eq. 8.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from presto_lib.diffusion import edm
from presto_lib.diffusion.edm import bcast
from presto_lib.diffusion.sampling import cfg_denoiser, sample_pingpong
from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.diffusion.score_model import null_like
from presto_lib.distill.discriminator import (HEADS, discriminator_gan_loss, generator_gan_loss, make_head,
                                              real_accuracy)

Update = Callable[[Tensor, str], object]     # update(loss, "generator" | "fake"): zero_grad, backward, step
# generator_extra(ps, x_real, cond, G_player) -> (x_gen with gradient, extra generator loss, logs)
GeneratorExtra = Callable[["PrestoS", Tensor, "dict | None", "Callable | None"], "tuple[Tensor, Tensor, dict]"]

DISTS = ("train", "inf")


# ---- configuration -------------------------------------------------------------------------------

@dataclass
class PrestoSConfig(edm.EDMConfig):
    """Algorithm 1's inputs; defaults are the paper's final choice (sec. 4.2: p_gen inf, the rest train, LSGAN)."""
    p_gen: str = "inf"            # generator input noise (line 1)
    p_dmd: str = "train"          # distribution-matching noise (line 5)
    p_dsm: str = "train"          # fake-DSM noise (line 13)
    p_gan: str = "train"          # GAN noise (lines 8 and 16)
    gan_loss: str = "ls"          # "ls" (eq. 8, Presto-S) or "ns" (eq. 7, DMD2)
    disc_head: str = "presto"     # D_psi: "presto" (T/4 logits, sec. 3.2.3) or "dmd2" (one logit; the DMD2 rows)
    use_dmd: bool = True          # False: DMD-GAN baseline (GAN loss only)
    use_gan: bool = True          # False: pure distribution matching (DMD without GAN)
    discrete_levels: int = 0      # 0: continuous p_gen (sec. 3.2.1); n > 0: the n levels of the n-step schedule
    cfg_w: float = 4.5            # plain CFG on the teacher (A.1; CFG++ does not apply to eq. 5)
    nu1: float = 3e-3             # generator GAN weight (line 11)
    nu2: float = 1e-2             # discriminator GAN weight (line 19)
    fake_updates: int = 5         # fake-score updates per generator update (sec. 3.1)
    dmd_normalize: bool = True    # DMD2: divide (mu_fake - mu_real) by mean |x_gen - mu_real| per example
    # sigma_data, p_mean, p_std, sigma_min, sigma_max, rho: inherited from edm.EDMConfig

    def __post_init__(self):
        for k in ("p_gen", "p_dmd", "p_dsm", "p_gan"):
            if getattr(self, k) not in DISTS:
                raise ValueError(f"{k} must be 'train' or 'inf', got {getattr(self, k)!r}")
        if self.gan_loss not in ("ls", "ns"):
            raise ValueError(f"gan_loss must be 'ls' or 'ns', got {self.gan_loss!r}")
        if self.disc_head not in HEADS:
            raise ValueError(f"disc_head must be one of {HEADS}, got {self.disc_head!r}")
        if not (self.use_dmd or self.use_gan):
            raise ValueError("use_dmd and use_gan are both off: the generator would get no gradient")
        if self.fake_updates < 1 or self.discrete_levels < 0:
            raise ValueError("fake_updates must be >= 1 and discrete_levels >= 0")


# ---- schedules and helpers -----------------------------------------------------------------------

def pingpong_sigmas(steps: int, sigma_min: float = edm.SIGMA_MIN, sigma_max: float = edm.SIGMA_MAX,
                    rho: float = edm.RHO) -> Tensor:
    """Few-step schedule [steps + 1]: eq. 9 on a (steps + 1)-level grid, its sigma_min level dropped, then 0.

    Ping-pong sampling (sec. 3.1) denoises at every level; a step at sigma_min ~ 0 would be an identity, so an
    n-step schedule uses the n highest levels of eq. 9 with N = n + 1 (e.g. rho = 7, 2 steps: [80, 2.52, 0]).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    s = edm.edm_sigmas(int(steps) + 1, sigma_min, sigma_max, rho)[: int(steps)]
    return torch.cat([s, s.new_zeros(1)])


def snap_sigmas(sigmas: Tensor, levels: Tensor) -> Tensor:
    """Replace each nonzero level of a schedule by the nearest (in log sigma) of a discrete generator's levels."""
    s = sigmas[:-1]
    idx = (s.log()[:, None] - levels.log()[None, :]).abs().argmin(1)
    return torch.cat([levels[idx], sigmas[-1:]])


def init_from_base(make_model: Callable[[], nn.Module], state: dict[str, Tensor]) -> nn.Module:
    """A fresh module holding the base weights (no deep copy of a live model)."""
    m = make_model()
    m.load_state_dict(state, strict=True)
    return m


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Temporarily turn off parameter gradients (gradients still flow through to the inputs)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, fl in zip(modules, flags):
            for p, f in zip(m.parameters(), fl):
                p.requires_grad_(f)


def discrete_levels(cfg: PrestoSConfig) -> Tensor | None:
    """DMD2-style generator inputs: the levels of the `discrete_levels`-step schedule; None when continuous."""
    if not cfg.discrete_levels:
        return None
    return pingpong_sigmas(cfg.discrete_levels, cfg.sigma_min, cfg.sigma_max, cfg.rho)[:-1]


def discrete_runs(budgets: Sequence[int] = (1, 2, 3, 4), prefix: str = "discrete") -> dict[str, dict]:
    """One discrete-input model per step budget (sec. 3.2.1, 4.2: "the 1 and 2-step discrete models"; Figs 5, 11):
    run name -> PrestoSConfig overrides {"discrete_levels": k}. Model k is sampled at k steps, on its own levels."""
    if not budgets or any(int(k) != k or k < 1 for k in budgets):
        raise ValueError(f"budgets must be integers >= 1, got {list(budgets)}")
    return {f"{prefix}_{int(k)}": {"discrete_levels": int(k)} for k in budgets}


def native_budget(cfg: PrestoSConfig, steps: int) -> bool:
    """True when `steps`-step sampling runs exactly on the generator's training inputs (continuous, or k = n levels);
    False means a discrete generator's schedule would be snapped to levels it was trained on for another budget."""
    return not cfg.discrete_levels or int(steps) == int(cfg.discrete_levels)


# ---- the fake player psi: mu_psi and its discriminator head D_psi --------------------------------

class FakeScore(nn.Module):
    """psi = (mu_psi, D_psi): the fake score model and a head on one block's features (line 19 updates both).

    One forward gives both outputs, so a fake turn is a single (DDP-safe) call over all its inputs.
    """

    def __init__(self, score: nn.Module, head: nn.Module, feature_block: int = -1):
        super().__init__()
        self.score, self.head, self.feature_block = score, head, int(feature_block)

    @property
    def skips_parameters(self) -> bool:
        """A forward without logits leaves D_psi unused, and a layer-dropping mu_psi its dropped blocks (DDP)."""
        return True

    def forward(self, x: Tensor, sigma: Tensor, cond: dict | None = None, with_logits: bool = False):
        """mu_psi(x, sigma, cond) -> x0, or (x0, D_psi logits [B, T']) with `with_logits`."""
        if not with_logits:
            return self.score(x, sigma, cond)
        x0, feats = self.score(x, sigma, cond, return_features=True)
        k = self.feature_block if self.feature_block >= 0 else len(feats) // 2   # default: the middle block
        if not 0 <= k < len(feats):
            raise ValueError(f"feature_block {k} out of range for {len(feats)} blocks")
        return x0, self.head(feats[k])


def save_fake_score(path_dir: str | os.PathLike, fake: FakeScore, extra: dict | None = None) -> Path:
    """psi = (mu_psi, D_psi) of a run, so a later distillation can continue it (A.4 step-then-layer)."""
    fake = getattr(fake, "module", fake)
    score, head = fake.score, fake.head
    if not isinstance(score, edm.EDMPrecond) or not hasattr(score.net, "cfg"):
        raise ValueError(f"expected a FakeScore over an EDMPrecond(DiT), got {type(score).__name__}")
    config = {"dit": score.net.cfg.to_dict(), "sigma_data": score.sigma_data, "feature_block": fake.feature_block,
              "head": {"kind": head.kind, "channels": head.channels, "n_down": head.n_down}, **(extra or {})}
    return save_checkpoint(path_dir, dict(fake.state_dict()), config)


def load_fake_score(path_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FakeScore, dict]:
    """Load what `save_fake_score` wrote: (FakeScore in train mode, its config)."""
    from presto_lib.diffusion.score_model import build_score_model

    tensors, config = load_checkpoint(path_dir, device)
    if "head" not in config:
        raise ValueError(f"{path_dir} holds no fake score model (config.json lacks 'head')")
    score = build_score_model(config["dit"], sigma_data=config["sigma_data"])
    h = config["head"]
    fake = FakeScore(score, make_head(h["kind"], score.net.hidden_size, h["channels"], h["n_down"]),
                     config["feature_block"])
    fake.load_state_dict(tensors)
    return fake.to(device).train(), config


# ---- Algorithm 1 ---------------------------------------------------------------------------------

class PrestoS:
    """Algorithm 1 over G_phi, a frozen mu_real and psi = (mu_psi, D_psi); each network lives once."""

    def __init__(self, generator: nn.Module, fake: FakeScore, real: nn.Module | Callable,
                 cfg: PrestoSConfig | None = None, generator_extra: GeneratorExtra | None = None):
        if not isinstance(fake, FakeScore):
            raise ValueError(f"fake must be a FakeScore (score model + head), got {type(fake).__name__}")
        self.G, self.fake, self.real = generator, fake, real
        self.cfg = cfg or PrestoSConfig()
        # optional: replaces lines 1-3 of a generator turn and adds a loss on the same forward (A.4's layer losses)
        self.generator_extra = generator_extra
        if isinstance(real, nn.Module):
            real.requires_grad_(False).eval()                                   # mu_real is frozen throughout

    def modules(self) -> dict[str, nn.Module]:
        """The trained players, by the names of their optimisers (mu_real is the base model, never saved)."""
        return {"generator": self.G, "fake": self.fake}

    # -- noise distributions (sec. 3.2.2) --
    def sigma(self, kind: str, n: int, device: torch.device) -> Tensor:
        """sigma ~ p(sigma^train) or p(sigma^inf), [n]."""
        c = self.cfg
        return edm.sample_sigma(kind, n, p_mean=c.p_mean, p_std=c.p_std, sigma_min=c.sigma_min,
                                sigma_max=c.sigma_max, rho=c.rho, device=device)

    def gen_levels(self) -> Tensor | None:
        """The discrete generator's input levels (DMD2-style), or None for continuous inputs."""
        return discrete_levels(self.cfg)

    def gen_sigma(self, n: int, device: torch.device) -> Tensor:
        """Algorithm 1, line 1: sigma ~ p_gen, continuous (Presto-S) or from a fixed set (DMD2)."""
        levels = self.gen_levels()
        if levels is None:
            return self.sigma(self.cfg.p_gen, n, device)
        return levels.to(device)[torch.randint(len(levels), (n,), device=device)]

    def generate(self, x_real: Tensor, cond: dict | None, G: Callable | None = None) -> Tensor:
        """Lines 1-3: x_gen = G(x_real + sigma eps_gen, sigma)."""
        sigma = self.gen_sigma(x_real.shape[0], x_real.device)                  # line 1
        eps = torch.randn_like(x_real)                                          # line 2
        return (G or self.G)(x_real + bcast(sigma, x_real) * eps, sigma, cond)    # line 3

    def real_denoise(self, x: Tensor, sigma: Tensor, cond: dict | None) -> Tensor:
        """mu~_real^w: the frozen teacher with plain CFG (sec. 2.2); an unconditional teacher ignores w."""
        if cond is None:
            return self.real(x, sigma, None)
        return cfg_denoiser(self.real, cond, null_like(cond), self.cfg.cfg_w)(x, sigma)

    # -- losses --
    def dmd_loss(self, x_gen: Tensor, cond: dict | None) -> tuple[Tensor, dict]:
        """Lines 5-7, eq. 5: a surrogate whose gradient w.r.t. x_gen is (mu_fake - mu_real^w) / (norm * numel).

        The direction g is computed without gradient (mu_real and mu_psi get none) and applied through the
        stop-gradient target x_gen - g: d/dx_gen 0.5 mean((x_gen - sg(x_gen - g))^2) = g / numel. As in DMD2,
        g is divided per example by mean |x_gen - mu_real^w|, so its scale does not depend on sigma.
        """
        with torch.no_grad():
            sigma = self.sigma(self.cfg.p_dmd, x_gen.shape[0], x_gen.device)      # line 5
            x_t = x_gen + bcast(sigma, x_gen) * torch.randn_like(x_gen)         # line 6
            mu_fake = self.fake(x_t, sigma, cond).float()
            mu_real = self.real_denoise(x_t, sigma, cond).float()
            g = mu_fake - mu_real                                                # line 7, eq. 5
            if self.cfg.dmd_normalize:
                dims = tuple(range(1, x_gen.ndim))
                g = g / (x_gen.float() - mu_real).abs().mean(dims, keepdim=True).clamp_min(1e-8)
            g = torch.nan_to_num(g)
        target = (x_gen.float() - g).detach()
        loss = 0.5 * (x_gen.float() - target).pow(2).mean()
        return loss, {"dmd_grad_rms": float(g.pow(2).mean().sqrt())}

    def generator_loss(self, x_gen: Tensor, cond: dict | None) -> tuple[Tensor, dict]:
        """Lines 5-10: L_DMD + nu1 L_GAN (L_GAN alone for DMD-GAN); psi gets no gradient."""
        c, logs = self.cfg, {}
        loss = x_gen.new_zeros((), dtype=torch.float32)
        if c.use_dmd:
            l_dmd, extra = self.dmd_loss(x_gen, cond)
            loss = loss + l_dmd
            logs.update(loss_dmd=float(l_dmd.detach()), **extra)
        if c.use_gan:
            sigma = self.sigma(c.p_gan, x_gen.shape[0], x_gen.device)                  # line 8
            x_t = x_gen + bcast(sigma, x_gen) * torch.randn_like(x_gen)              # line 9
            with frozen(self.fake):                                                    # gradient flows to x_gen only
                _, logits = self.fake(x_t, sigma, cond, with_logits=True)
            l_gan = generator_gan_loss(logits, c.gan_loss)                             # line 10
            loss = loss + (c.nu1 if c.use_dmd else 1.0) * l_gan
            logs["loss_gan_g"] = float(l_gan.detach())
        return loss, logs

    def fake_loss(self, x_real: Tensor, cond: dict | None, x_gen: Tensor,
                  fake: Callable | None = None) -> tuple[Tensor, dict]:
        """Lines 13-18: L_fake-DSM (eq. 6) + nu2 L_GAN, from one forward of psi over all noisy inputs."""
        c, fake = self.cfg, fake or self.fake
        x_gen, B = x_gen.detach(), x_gen.shape[0]                                # no gradient to G
        s_dsm = self.sigma(c.p_dsm, B, x_gen.device)                             # line 13
        xs, ss = [x_gen + bcast(s_dsm, x_gen) * torch.randn_like(x_gen)], [s_dsm]    # line 14
        if c.use_gan:
            s_gan = self.sigma(c.p_gan, 2 * B, x_gen.device)                     # line 16: sigma_fake, sigma_real
            x = torch.cat([x_gen, x_real.to(x_gen.dtype)])
            xs.append(x + bcast(s_gan, x) * torch.randn_like(x))                # line 17
            ss.append(s_gan)
        x_in, s_in = torch.cat(xs), torch.cat(ss)
        n = len(s_in) // B
        cond_n = None if cond is None else {k: torch.cat([v] * n) for k, v in cond.items()}
        x0, logits = fake(x_in, s_in, cond_n, with_logits=True) if c.use_gan else (fake(x_in, s_in, cond_n), None)
        err = (x0[:B].float() - x_gen.float()).pow(2).reshape(B, -1).mean(1)
        l_dsm = (edm.edm_loss_weight(s_dsm, c.sigma_data) * err).mean()          # line 15, eq. 6
        loss, logs = l_dsm, {"loss_fake_dsm": float(l_dsm.detach())}
        if c.use_gan:
            logits_fake, logits_real = logits[B:2 * B], logits[2 * B:]
            l_gan = discriminator_gan_loss(logits_real, logits_fake, c.gan_loss)   # line 18
            loss = loss + c.nu2 * l_gan
            logs.update(loss_gan_d=float(l_gan.detach()), d_real_acc=real_accuracy(logits_real, c.gan_loss))
        return loss, logs

    # -- one iteration --
    def is_generator_turn(self, iteration: int) -> bool:
        """Line 4: iterations fake_updates, 2 fake_updates + 1, ... are the generator's; the rest update psi."""
        return iteration % (self.cfg.fake_updates + 1) == self.cfg.fake_updates

    def step(self, x_real: Tensor, cond: dict | None, iteration: int, update: Update,
             players: dict[str, Callable] | None = None) -> dict:
        """One iteration of Algorithm 1 (lines 1-19). `update(loss, name)` steps optimiser `name`.

        `players` optionally holds wrapped (e.g. DDP) "generator"/"fake" modules for the forward whose loss
        updates that player; the raw modules are used everywhere else.
        """
        players = players or {}
        if self.is_generator_turn(iteration):
            if self.generator_extra is None:
                x_gen, extra, extra_logs = self.generate(x_real, cond, players.get("generator")), None, {}  # 1-3
            else:
                x_gen, extra, extra_logs = self.generator_extra(self, x_real, cond, players.get("generator"))
            loss, logs = self.generator_loss(x_gen, cond)
            if extra is not None:
                loss = loss + extra
                logs.update(extra_logs)
            update(loss, "generator")                                            # line 11
            turn, name = 1.0, "loss_generator"
        else:
            with torch.no_grad():
                x_gen = self.generate(x_real, cond)                              # lines 1-3
            loss, logs = self.fake_loss(x_real, cond, x_gen, players.get("fake"))
            update(loss, "fake")                                                 # line 19
            turn, name = 0.0, "loss_fake"
        return {"generator_turn": turn, name: float(loss.detach()), **logs}

    # -- few-step sampling (sec. 3.1; A.5) --
    @torch.no_grad()
    def sample(self, noise: Tensor, cond: dict | None, steps: int = 4, rho: float | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Ping-pong sampling from unit noise [B, C, T] in `steps` (1-4) steps; any rho (A.5)."""
        return sample_generator(self.G, noise, cond, steps, self.cfg, rho=rho, generator=generator)


def optimizer_update(optimizers: dict[str, torch.optim.Optimizer]) -> Update:
    """A plain `update(loss, name)`: zero_grad, backward, step (the training loop's `backward_and_step` in stages)."""
    def update(loss: Tensor, name: str) -> None:
        opt = optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return update

def generator_sigmas(cfg: PrestoSConfig, steps: int, rho: float | None = None) -> Tensor:
    """The ping-pong schedule of a distilled generator: `steps` levels of eq. 9, a discrete generator's snapped to
    its trained set (the one owner of this rule)."""
    sig = pingpong_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho if rho is None else rho)
    levels = discrete_levels(cfg)
    return sig if levels is None else snap_sigmas(sig, levels)


def sample_generator(G: Callable, noise: Tensor, cond: dict | None, steps: int, cfg: PrestoSConfig,
                     rho: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Ping-pong sampling of a distilled generator; a discrete one uses its own levels nearest the schedule."""
    sig = generator_sigmas(cfg, steps, rho).to(noise.device)
    return sample_pingpong(lambda x, s: G(x, s, cond), noise * sig[0], sig, generator=generator, disable=True)
