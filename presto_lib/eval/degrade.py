"""Controlled degradations of real audio: the sanity check that a metric moves the right way (notebook 04).

Each takes a 1-D float waveform and a severity; larger severity index = worse audio:
  noise         white noise at a signal-to-noise ratio (dB; lower = worse)
  lowpass       8th-order Butterworth low-pass, zero-phase (cutoff Hz; lower = worse)
  time_shuffle  cut into segments and shuffle their order (segment seconds; shorter = worse)
"""
from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

KINDS = ("noise", "lowpass", "time_shuffle")


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x + white noise scaled to `snr_db` below the clip's mean power."""
    p = max(float(np.mean(x ** 2)), 1e-10)
    return (x + rng.normal(scale=np.sqrt(p / 10 ** (snr_db / 10)), size=x.shape)).astype(np.float32)


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase 8th-order Butterworth low-pass at `cutoff_hz`."""
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {sample_rate / 2}) Hz")
    sos = butter(8, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def time_shuffle(x: np.ndarray, sample_rate: int, segment_s: float, rng: np.random.Generator) -> np.ndarray:
    """Cut into `segment_s` pieces (the last may be shorter) and concatenate them in random order."""
    n = max(1, int(round(segment_s * sample_rate)))
    pieces = [x[i:i + n] for i in range(0, len(x), n)]
    return np.concatenate([pieces[i] for i in rng.permutation(len(pieces))]).astype(np.float32)


def degrade(waves: list[np.ndarray], sample_rate: int, kind: str, level: float, seed: int = 0
            ) -> list[np.ndarray]:
    """Apply one degradation at one severity to every clip (seeded)."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return [add_noise(np.asarray(w, np.float32), level, rng) for w in waves]
    if kind == "lowpass":
        return [lowpass(np.asarray(w, np.float32), sample_rate, level) for w in waves]
    if kind == "time_shuffle":
        return [time_shuffle(np.asarray(w, np.float32), sample_rate, level, rng) for w in waves]
    raise ValueError(f"unknown degradation {kind!r}; choose one of {KINDS}")


# ---- is each metric monotone in the severity? ----

WORSE_IF_HIGHER = {"FAD": True, "MMD": True, "Precision": False, "Density": False, "Recall": False,
                   "Coverage": False}   # any "CLAP (...)" column: worse if lower


def monotonic_table(df, metrics: list[str], kind_col: str = "degradation", order_col: str = "severity"):
    """For each degradation x metric: 'yes' if every step up in severity is no better, else 'no' (pandas)."""
    import pandas as pd
    rows = []
    for kind, g in df.sort_values(order_col).groupby(kind_col, sort=False):
        row = {kind_col: kind}
        for m in metrics:
            sign = 1.0 if WORSE_IF_HIGHER.get(m, False) else -1.0      # CLAP columns: higher is better
            steps = sign * np.diff(g[m].to_numpy(dtype=float))
            row[m] = "yes" if np.all(steps >= 0) else "no"
        rows.append(row)
    return pd.DataFrame(rows)
