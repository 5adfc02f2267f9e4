#!/usr/bin/env python
"""How much does a score model use its BPM input? A denoising read and notebook 03's check on more pieces.

    python benchmarks/bpm_probe.py data/base/model --out results/benchmarks              # after `make repro`
    python benchmarks/bpm_probe.py data/base/model other/model --pieces 8 --out /tmp/bp  # compare models

Two reads per model, both on tempo-free captions so that only the BPM input carries the tempo:
1. **BPM loss gap** (`bpm_loss_gap`): the denoising error on validation latents with each clip's true BPM and with
   the BPMs shuffled across clips, at a few noise levels (same noise, same text). A model that ignores BPM scores
   0 %; one that reads the tempo from BPM loses accuracy when it is given another clip's tempo. Fast (forward
   passes only) and sensitive: it moves long before generated audio does.
2. **BPM check** (notebook 03's, `eval.tempo`): each caption and seed generated at 80 and 130 BPM; tempo-estimate
   wins and onset-rate ratio, on the check's 8 pieces x 2 seeds and on --pieces pieces.
Compare the onset ratio with `results/benchmarks/bpm_reference.md` (the same check on real renders that follow BPM
exactly). Writes bpm_probe.csv and .md to --out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor


@torch.no_grad()
def bpm_loss_gap(model: torch.nn.Module, x0: Tensor, cond: dict[str, Tensor], sigmas: Sequence[float],
                 seed: int = 0) -> dict[float, float]:
    """Per sigma: (denoising MSE with the BPMs shuffled across clips) / (MSE with the true BPMs) - 1.

    `model(x, sigma [B], cond)` -> x0_hat (an EDMPrecond); `cond` holds text, text_mask and bpm [B]. The same noise
    and the same permutation (a derangement: no clip keeps its own BPM) serve every sigma."""
    g = torch.Generator().manual_seed(seed)
    n = x0.shape[0]
    if n < 2:
        raise ValueError("need at least two clips to shuffle BPMs")
    perm = (torch.arange(n) + int(torch.randint(1, n, (1,), generator=g))) % n       # a cyclic shift: no fixed point
    eps = torch.randn(x0.shape, generator=g)
    gaps = {}
    for s in sigmas:
        x, sig = x0 + float(s) * eps, torch.full((n,), float(s))
        true = (model(x, sig, cond) - x0).pow(2).mean()
        wrong = (model(x, sig, {**cond, "bpm": cond["bpm"][perm]}) - x0).pow(2).mean()
        gaps[float(s)] = float(wrong / true - 1)
    return gaps


def tempo_free_validation(latents_dir: str | Path, n: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The first n validation latents and their tempo-free text condition with the true BPMs."""
    from presto_lib.data.latents import LatentDataset

    t = LatentDataset(latents_dir, "valid").tensors
    if "text_notempo" not in t:
        raise ValueError(f"{latents_dir} caches no tempo-free text: rebuild it with the current `latents` stage")
    n = min(n, len(t["bpm"]))
    return t["latents"][:n].float(), {"text": t["text_notempo"][:n].float(), "text_mask": t["text_notempo_mask"][:n],
                                      "bpm": t["bpm"][:n].float()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="score-model folders (e.g. data/base/model)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--pieces", type=int, default=32, help="distinct test pieces for the generated check")
    ap.add_argument("--clips", type=int, default=256, help="validation clips for the loss gap")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 0.5, 1.0, 2.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from presto_lib.config import load_params
    from presto_lib.data.captions import strip_tempo
    from presto_lib.data.datasets import read_manifest
    from presto_lib.diffusion.pipeline import TextToMusic
    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.eval.tempo import bpm_following, bpm_pairs
    from presto_lib.stages.base import sampling_config

    P = load_params(a.params)
    B, seed = P["base"], int(P["common"]["seed"])
    bc = B["bpm_check"]
    lo, hi = float(min(bc["bpms"])), float(max(bc["bpms"]))
    pieces = read_manifest(B["manifest"], "test").drop_duplicates("piece_id")
    caps = [strip_tempo(c) for c in pieces["caption"]][: max(a.pieces, int(bc["prompts"]))]
    check = set(caps[: int(bc["prompts"])])
    x0, cond = tempo_free_validation(B["latents"], a.clips)
    rows = []
    for m in a.models:
        model, cfg = load_score_model(m)
        gaps = bpm_loss_gap(model, x0, cond, a.sigmas)
        t2m = TextToMusic.from_checkpoints(m, B["vae"], sampling=sampling_config(P))
        gen = lambda c, b, s: t2m.generate(c, b, seeds=s).numpy()                  # noqa: E731
        pairs = bpm_pairs(bpm_following(gen, caps, [lo, hi], range(seed, seed + int(bc["seeds"])), t2m.sample_rate),
                          lo, hi)
        for name, sub in (("check", pairs[pairs.caption.isin(check)]), ("all", pairs)):
            rows.append({"model": m, "train_steps": cfg.get("train_steps"), "pieces": name, "pairs": len(sub),
                         "tempo wins": int(sub.win.sum()), "median est ratio": float(sub.ratio.median()),
                         "onset wins": int((sub.onset_ratio > 1).sum()),
                         "median onset ratio": float(sub.onset_ratio.median()),
                         **{f"loss gap % sigma {s:g}": 100 * v for s, v in gaps.items()}})
        print(pd.DataFrame(rows[-2:]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bpm_probe.csv", index=False)
    (out / "bpm_probe.md").write_text(
        f"BPM use of score models (profile `{P['profile']}`, `benchmarks/bpm_probe.py`). Loss gap: denoising error "
        f"with shuffled over true BPMs, {len(x0)} validation clips, tempo-free text (0 % = BPM ignored). Check: "
        f"tempo-free captions at {lo:.0f} and {hi:.0f} BPM (target ratio {hi / lo:.3f}), seeds {seed}.."
        f"{seed + int(bc['seeds']) - 1}; `check` = notebook 03's {int(bc['prompts'])} pieces, `all` = "
        f"{len(caps)} pieces.\n\n" + table.round(3).to_markdown(index=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
