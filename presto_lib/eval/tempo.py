"""Does a model follow its BPM input? Tempo estimates of generated audio, paired over target tempi.

The base model is conditioned on BPM (A.1). The check (notebook 03, `base` stage) generates the same caption and
seed at two target tempi, estimates each result's tempo with librosa's onset-autocorrelation estimator and asks,
per pair, whether the faster target is estimated faster (`bpm_pairs`). Estimators often lock onto half or double
the tempo, so the accuracies come in two forms (Acc1: within 8% of the target; Acc2: of the target, its half or
its double), as in the tempo-estimation literature. A second, finer read is the onset rate (note onsets per
second, `onset_rate`): a model whose rhythm moves with BPM only a little can change it without moving the tempo
estimate, which snaps to the estimator's lag grid and prior.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["estimate_tempo", "onset_rate", "tempo_accuracy", "bpm_following", "bpm_pairs"]


def estimate_tempo(wave: np.ndarray, sr: int) -> float:
    """The tempo (BPM) librosa estimates for a mono wave."""
    import librosa

    return float(librosa.feature.tempo(y=np.asarray(wave, dtype=np.float32), sr=sr)[0])


def onset_rate(wave: np.ndarray, sr: int) -> float:
    """Note onsets per second that librosa's onset detector finds in a mono wave (at most one per 0.1 s: the
    detector's default splits a sharp attack into two peaks one frame apart)."""
    import librosa

    y, hop = np.asarray(wave, dtype=np.float32), 512
    onsets = librosa.onset.onset_detect(y=y, sr=sr, hop_length=hop, wait=max(1, round(0.1 * sr / hop)))
    return float(len(onsets) / (len(y) / sr))


def tempo_accuracy(est: np.ndarray, target: np.ndarray | float, octave: bool = False, tol: float = 0.08) -> float:
    """Share of estimates within `tol` of the target (Acc1), or of the target, its half or double (Acc2)."""
    est, target = np.asarray(est, float), np.broadcast_to(np.asarray(target, float), np.shape(est))
    factors = (0.5, 1.0, 2.0) if octave else (1.0,)
    err = np.min([np.abs(est / (target * f) - 1) for f in factors], axis=0)
    return float(np.mean(err <= tol))


def bpm_following(generate: Callable[[list[str], list[float], list[int]], np.ndarray], captions: Sequence[str],
                  bpms: Sequence[float], seeds: Sequence[int], sr: int) -> pd.DataFrame:
    """Each caption and seed generated at every target BPM (`generate(captions, bpms, seeds)` -> waves [B, 1, T]);
    rows (caption, seed, target, estimated, onset_rate)."""
    rows = []
    for c in captions:
        for s in seeds:
            waves = np.asarray(generate([c] * len(bpms), [float(b) for b in bpms], [int(s)] * len(bpms)))
            rows += [{"caption": c, "seed": int(s), "target": float(t), "estimated": estimate_tempo(w[0], sr),
                      "onset_rate": onset_rate(w[0], sr)} for t, w in zip(bpms, waves)]
    return pd.DataFrame(rows, columns=["caption", "seed", "target", "estimated", "onset_rate"])


def bpm_pairs(est: pd.DataFrame, lo: float, hi: float) -> pd.DataFrame:
    """BPM following: one row per (caption, seed) pair generated at targets lo and hi, from rows (caption, seed,
    target, estimated): the two estimates, their ratio est(hi) / est(lo) (the target ratio is hi / lo; 1 = BPM
    ignored) and `win` (the faster target estimated faster; chance 1/2 for a model that ignores BPM). With an
    `onset_rate` column, also onset_low, onset_high and onset_ratio (onsets per second at hi over lo)."""
    if not lo < hi:
        raise ValueError(f"need lo < hi, got {lo}, {hi}")
    onsets = "onset_rate" in est.columns
    wide = est.pivot_table(index=["caption", "seed"], columns="target",
                           values=["estimated", "onset_rate"] if onsets else ["estimated"])
    out = pd.DataFrame({"target_low": float(lo), "target_high": float(hi), "est_low": wide["estimated", lo],
                        "est_high": wide["estimated", hi]}).reset_index()
    out["ratio"] = out.est_high / out.est_low
    out["win"] = out.est_high > out.est_low
    if onsets:      # same table, same row order as `out`
        out["onset_low"], out["onset_high"] = wide["onset_rate", lo].to_numpy(), wide["onset_rate", hi].to_numpy()
        out["onset_ratio"] = out.onset_high / out.onset_low
    return out
