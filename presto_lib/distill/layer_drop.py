"""Layer-dropping schedules: noise level -> number of dropped DiT blocks (paper sec. 3.3, 4.3; Fig. 3).

ASE (Moon et al. 2024) gives each noise level a fixed compute budget, more blocks for lower noise. The paper
uses ASE's "D3" schedule, listed per quintile of the *inference* noise distribution from the highest noise down:

    D3        = [14, 12, 8, 4, 0]   dropped blocks of a 28-block DiT (sec. 4.3)
    Presto-LS = [12,  8, 8, 0, 0]   the reduced budget of layer-step distillation (sec. 3.4)

Quintile k holds the sigmas of eq. 9 with u in [k/5, (k+1)/5): u = 0 is sigma_max, u = 1 sigma_min, so the
boundaries are sigma(u = 0.2, 0.4, 0.6, 0.8). Sigmas outside [sigma_min, sigma_max] (the log-normal training
noise reaches both sides) fall into the end quintiles.

Which blocks run for a budget of n dropped blocks out of L (Fig. 3):
    ASE (drop from the back)           blocks 0 .. L-1-n
    Presto-L (shifted by one)          blocks 0 .. L-2-n, then block L-1: the final block always runs, because
                                       its output variance differs from every other block's (Fig. 4)

Models of another depth scale the schedule proportionally, n' = floor(n * L / 28 + 1/2) (round half up, so
e.g. 14 of 28 -> 4 of 8 and 12 of 28 -> 3 of 8, 2.57 -> 3 of 6), capped at L - 1 so at least one block runs.

Fine-tune noise (`FINETUNE_SIGMAS`, `finetune_sigma`). Every bucket is used for 1/K of the sampler's steps, so
every bucket's budget must be fine-tuned. DSM's log-normal training noise gives the buckets, highest noise first,
about 0.02%, 1.5%, 34%, 62% and 2% of its samples (P_mean -0.4, P_std 1, eq. 9's range): the 14- and 12-drop
budgets are hardly ever trained. ASE samples its timestep uniformly, i.e. u ~ U[0, 1] through eq. 9 ("inf", 1/K
per bucket); "stratified" draws one u per bucket-sized stratum, so every batch of a multiple of K holds exactly
its share; "mix" draws "inf" with probability `mix` and the log-normal otherwise (each bucket >= mix / K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from presto_lib.diffusion.edm import P_MEAN, P_STD, RHO, SIGMA_MAX, SIGMA_MIN, sample_sigma_train

__all__ = ["D3_SCHEDULE", "PRESTO_LS_SCHEDULE", "SCHEDULES", "REF_DEPTH", "scale_schedule", "inference_quantile",
           "DropSchedule", "FINETUNE_SIGMAS", "finetune_sigma", "bucket_shares", "hidden_variance"]

REF_DEPTH = 28                               # the paper's DiT-XL-like depth the schedules are written for
D3_SCHEDULE = (14, 12, 8, 4, 0)              # ASE "D3" (sec. 4.3), highest-noise quintile first
PRESTO_LS_SCHEDULE = (12, 8, 8, 0, 0)        # Presto-LS reduced dropping budget (sec. 3.4)
SCHEDULES = {"d3": D3_SCHEDULE, "presto_ls": PRESTO_LS_SCHEDULE}


def scale_schedule(drops: Sequence[int], depth: int, ref_depth: int = REF_DEPTH) -> tuple[int, ...]:
    """Drops of a `ref_depth` schedule for a `depth`-block model: floor(n depth / ref_depth + 1/2), <= depth - 1."""
    if depth < 1 or ref_depth < 1:
        raise ValueError(f"depth and ref_depth must be >= 1, got {depth} and {ref_depth}")
    if any(int(n) != n or not 0 <= n < ref_depth for n in drops):
        raise ValueError(f"drops must be integers in [0, {ref_depth - 1}], got {list(drops)}")
    return tuple(min(math.floor(n * depth / ref_depth + 0.5), depth - 1) for n in drops)


def inference_quantile(u: float | Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                       rho: float = RHO) -> Tensor:
    """sigma at quantile u of the inference distribution, counted from the top: eq. 9 with i/(N-1) -> u."""
    u = torch.as_tensor(u, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + u * (lo - hi)) ** rho


# ---- the schedule -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DropSchedule:
    """Noise level -> dropped blocks -> the blocks that run, for one model depth (Fig. 3)."""

    drops: tuple[int, ...]      # dropped blocks per inference-noise bucket, highest noise first (already scaled)
    depth: int
    shift: bool = True          # Presto-L: drop from the second-to-last block and always run the last one
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO

    def __post_init__(self):
        object.__setattr__(self, "drops", tuple(int(n) for n in self.drops))
        if not self.drops:
            raise ValueError("a schedule needs at least one bucket")
        if any(not 0 <= n <= self.depth - 1 for n in self.drops):
            raise ValueError(f"drops {list(self.drops)} must lie in [0, depth - 1 = {self.depth - 1}]")

    @classmethod
    def build(cls, schedule: str | Sequence[int], depth: int, *, ref_depth: int = REF_DEPTH, shift: bool = True,
              sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> "DropSchedule":
        """A named ("d3", "presto_ls") or explicit `ref_depth` schedule, scaled to `depth` blocks."""
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)} or give a list")
            schedule = SCHEDULES[schedule]
        return cls(scale_schedule(schedule, depth, ref_depth), depth, shift, sigma_min, sigma_max, rho)

    @property
    def num_buckets(self) -> int:
        """Number of noise buckets (5: quintiles)."""
        return len(self.drops)

    def boundaries(self) -> Tensor:
        """The K-1 bucket boundaries in sigma, decreasing: sigma(u = k / K) of eq. 9 (float64)."""
        K = self.num_buckets
        u = torch.arange(1, K, dtype=torch.float64) / K
        return inference_quantile(u, self.sigma_min, self.sigma_max, self.rho)

    def bucket(self, sigma: Tensor | float) -> Tensor:
        """Bucket index per sigma (0 = highest-noise quintile): the number of boundaries above sigma."""
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        return (s.cpu()[:, None] < self.boundaries()[None]).sum(1)

    def n_drop(self, sigma: Tensor | float) -> Tensor:
        """Dropped blocks per sigma, a long tensor [B] on the CPU."""
        return torch.tensor(self.drops, dtype=torch.long)[self.bucket(sigma)]

    def blocks(self, n_drop: int) -> list[int]:
        """Indices of the blocks run with n_drop dropped (ASE: from the back; shift: from the second-to-last)."""
        n = int(n_drop)
        if not 0 <= n <= self.depth - 1:
            raise ValueError(f"n_drop must lie in [0, {self.depth - 1}], got {n}")
        if n == 0:
            return list(range(self.depth))
        if self.shift:
            return [*range(self.depth - 1 - n), self.depth - 1]
        return list(range(self.depth - n))

    def plan(self, n_drop: Tensor) -> list[int] | Tensor:
        """DiT's `blocks` argument: an index list when the batch shares one budget (real speed-up), else a bool mask."""
        n_drop = torch.as_tensor(n_drop).reshape(-1).cpu()
        if bool((n_drop == n_drop[0]).all()):
            return self.blocks(int(n_drop[0]))
        mask = torch.zeros(len(n_drop), self.depth, dtype=torch.bool)
        for i, n in enumerate(n_drop.tolist()):
            mask[i, self.blocks(n)] = True
        return mask

    def expected_fraction_run(self) -> float:
        """Share of the blocks run per step, averaged over the inference distribution (each bucket 1/K of it)."""
        return 1.0 - sum(self.drops) / (self.num_buckets * self.depth)

    def table(self) -> list[dict]:
        """One row per bucket: its sigma range, dropped blocks and the blocks that run (for notebooks)."""
        b = [self.sigma_max, *self.boundaries().tolist(), self.sigma_min]
        return [{"bucket": k, "sigma_hi": b[k], "sigma_lo": b[k + 1], "dropped": n, "run": len(self.blocks(n)),
                 "blocks": self.blocks(n)} for k, n in enumerate(self.drops)]


# ---- fine-tune noise: every bucket gets its share (eq. 9) ----------------------------------------------

FINETUNE_SIGMAS = ("train", "inf", "stratified", "mix")


def finetune_sigma(kind: str, n: int, *, mix: float = 0.5, p_mean: float = P_MEAN,
                   p_std: float = P_STD, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                   rho: float = RHO, generator: torch.Generator | None = None,
                   device: str | torch.device = "cpu") -> Tensor:
    """n fine-tune noise levels [n] (float32): "train" log-normal, "inf" eq. 9 with u ~ U[0, 1] (ASE),
    "stratified" u = (k + U) / n over a random permutation k of 0..n-1, or "mix" (inf w.p. `mix`, else train)."""
    if kind not in FINETUNE_SIGMAS:
        raise ValueError(f"unknown fine-tune noise {kind!r}; choose one of {', '.join(FINETUNE_SIGMAS)}")
    if n < 1 or not 0.0 <= mix <= 1.0:
        raise ValueError(f"need n >= 1 and mix in [0, 1]; got {n} and {mix}")
    if kind == "train":
        return sample_sigma_train(n, p_mean, p_std, generator=generator).to(device)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if kind == "stratified":      # one u per stratum [k/n, (k+1)/n): a batch of m*K fills every bucket exactly
        u = (torch.randperm(n, generator=generator).double() + u) / n
    sigma = inference_quantile(u, sigma_min, sigma_max, rho).float()
    if kind == "mix":
        use_train = torch.rand(n, generator=generator) >= mix
        sigma = torch.where(use_train, sample_sigma_train(n, p_mean, p_std, generator=generator), sigma)
    return sigma.to(device)


def bucket_shares(schedule: DropSchedule, sigma: Tensor) -> Tensor:
    """Share of the noise levels `sigma` falling in each bucket [K] (highest noise first), float64."""
    counts = torch.bincount(schedule.bucket(sigma), minlength=schedule.num_buckets).double()
    return counts / counts.sum()


# ---- Fig. 4: hidden activation variance over depth ----------------------------------------------------

@torch.no_grad()
def hidden_variance(score_model: torch.nn.Module, x0: Tensor, cond: dict, sigmas: Sequence[float],
                    generator: torch.Generator | None = None) -> Tensor:
    """Variance of every block's output [len(sigmas), depth] of an EDMPrecond(DiT) on x0 + sigma eps (Fig. 4).

    The variance is over all entries (batch, tokens, channels) of the block output h_i [B, N, hidden].
    """
    rows = []
    for s in sigmas:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        _, feats = score_model(x0 + float(s) * noise, torch.full((x0.shape[0],), float(s)), cond,
                               return_features=True)
        rows.append(torch.stack([h.float().var() for h in feats]))
    return torch.stack(rows)
