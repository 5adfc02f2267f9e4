"""Fig. 9 (paper A.5): one latent code, several inference schedules; only rho of eq. 9 changes.

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho          (eq. 9)

A few-step generator (Presto-LS) samples by ping-pong (sec. 3.1): x_N = sigma_max eps_0, then for each step
denoise and re-noise x' = G(x, s) + s' eps_i. The *latent code* is (eps_0, eps_1, ..., eps_{n-1}): a `NoiseBank`
draws it once (per sample, from its own seed) and every rho reuses it, so outputs differ only through where the
steps sit. `distance_to_reference` measures how far each rho moves the outputs from rho = 7, in units of the
distance between *different* latent codes at rho = 7 (1.0 = as different as another seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from presto_lib.diffusion.sampling import sample_pingpong

__all__ = ["NoiseBank", "sample_with_bank", "rho_sweep", "generator_rho_sweep", "per_seed_distance",
           "distance_to_reference"]

PAPER_RHOS = (7.0, 10.0, 20.0, 50.0, 100.0, 1000.0)   # Fig. 9 spans rho = 7 (EDM default) to 1000


# ---- the latent code: start noise + every re-noise, drawn once ----------------------------------

@dataclass(frozen=True)
class NoiseBank:
    """Unit-variance noises of a ping-pong run: `start` [B, C, T] and one re-noise per step but the last."""

    start: Tensor
    renoise: tuple[Tensor, ...]

    @property
    def steps(self) -> int:
        """Ping-pong steps this bank serves (re-noises + 1)."""
        return len(self.renoise) + 1

    @classmethod
    def draw(cls, shape: Sequence[int], seeds: Sequence[int], steps: int) -> "NoiseBank":
        """Per-sample noise from each seed's own generator: sample j is the same in any batch (pipeline.py)."""
        if int(steps) < 1 or not len(seeds):
            raise ValueError(f"need steps >= 1 and at least one seed, got steps={steps}, {len(seeds)} seeds")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        draw = lambda: torch.stack([torch.randn(tuple(shape), generator=g) for g in gens])
        start = draw()
        return cls(start, tuple(draw() for _ in range(int(steps) - 1)))


def sample_with_bank(denoiser: Callable[[Tensor, Tensor], Tensor], bank: NoiseBank, sigmas: Tensor) -> Tensor:
    """Ping-pong from x_N = sigma_max eps_0 with the bank's re-noises (sigmas: [steps + 1], ending in 0)."""
    if len(sigmas) - 1 != bank.steps or sigmas[-1] != 0 or (sigmas[:-1] <= 0).any():
        raise ValueError(f"a {bank.steps}-step bank needs {bank.steps} positive levels then 0, got {sigmas.tolist()}")
    x = bank.start.to(sigmas.device) * sigmas[0]
    return sample_pingpong(denoiser, x, sigmas, noises=list(bank.renoise), disable=True)


def rho_sweep(denoiser: Callable[[Tensor, Tensor], Tensor], bank: NoiseBank, rhos: Sequence[float],
              schedule: Callable[[float], Tensor]) -> dict[float, Tensor]:
    """{rho: outputs} for one latent code; `schedule(rho)` gives the [steps + 1] sigmas (e.g. pingpong_sigmas)."""
    return {float(r): sample_with_bank(denoiser, bank, schedule(float(r))) for r in rhos}


def generator_rho_sweep(t2m: Any, G: Callable, captions: Sequence[str], bpms: Sequence[float], seeds: Sequence[int],
                        rhos: Sequence[float], schedule: Callable[[float], Tensor]) -> dict[float, Tensor]:
    """Fig. 9 with a distilled generator G(x, sigma, cond) and a `TextToMusic` (conditions): {rho: latents}."""
    cond, _ = t2m.conditions(list(captions), list(bpms))
    steps = len(schedule(float(rhos[0]))) - 1
    bank = NoiseBank.draw(t2m.latent_shape, seeds, steps)
    bank = NoiseBank(bank.start.to(t2m.device), tuple(z.to(t2m.device) for z in bank.renoise))
    with torch.no_grad():
        return rho_sweep(lambda x, s: G(x, s, cond), bank, rhos, lambda r: schedule(r).to(t2m.device))


# ---- how far outputs move --------------------------------------------------------------------------

def _flat(x: Any) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    return a.reshape(len(a), -1)


def per_seed_distance(outputs: dict[float, Any], rho_a: float, rho_b: float = 7.0,
                      embed: Callable[[Any], np.ndarray] | None = None) -> np.ndarray:
    """[B] L2 distance of each sample's embedding at rho_a to its own output at rho_b (same latent code)."""
    for r in (rho_a, rho_b):
        if r not in outputs:
            raise ValueError(f"rho {r} not among the swept values {sorted(outputs)}")
    a, b = (_flat(embed(outputs[r]) if embed is not None else outputs[r]) for r in (rho_a, rho_b))
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    return np.linalg.norm(a - b, axis=1)


def distance_to_reference(outputs: dict[float, Any], ref_rho: float = 7.0,
                          embed: Callable[[Any], np.ndarray] | None = None) -> pd.DataFrame:
    """Per rho: mean L2 distance of each sample's embedding to its own rho = ref_rho output (same latent code).

    `embed(outputs[rho]) -> [B, D]` (e.g. musicnn of the decoded audio); identity (flattened) by default.
    `relative` divides by the mean distance between *different* samples at ref_rho (needs B >= 2): 0 = unchanged,
    1 = as far as another latent code.
    """
    if ref_rho not in outputs:
        raise ValueError(f"reference rho {ref_rho} not among the swept values {sorted(outputs)}")
    emb = {r: _flat(embed(v) if embed is not None else v) for r, v in outputs.items()}
    ref = emb[ref_rho]
    if any(e.shape != ref.shape for e in emb.values()):
        raise ValueError("every rho must give embeddings of the same shape [B, D]")
    n = len(ref)
    pair = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    between = float(pair[~np.eye(n, dtype=bool)].mean()) if n > 1 else float("nan")
    rows = []
    for r in sorted(emb):
        d = np.linalg.norm(emb[r] - ref, axis=1)
        rows.append({"rho": r, "distance": float(d.mean()), "distance_max": float(d.max()),
                     "between_codes": between, "relative": float(d.mean()) / between if n > 1 else float("nan")})
    return pd.DataFrame(rows)
