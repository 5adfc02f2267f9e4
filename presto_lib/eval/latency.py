"""End-to-end latency and real-time factor (RTF) of a generation function (paper sec. 4.1, A.6).

    RTF_b(theta) = b * T_theta / latency_theta(b)                         (paper A.6)

with T_theta the seconds of contiguous audio one call generates and latency_theta(b) the wall time of a batch of
b samples. The paper's Table 2 uses b = 1; higher is better (RTF > 1 means faster than real time). `time_systems`
times several systems in interleaved rounds for a table's latency columns.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import pandas as pd
import torch

__all__ = ["LatencyResult", "measure_latency", "real_time_factor", "synchronize", "time_systems"]


@dataclass
class LatencyResult:
    """Wall times (seconds) of the timed calls, their summary, and the RTF they imply."""

    times_s: list[float]
    audio_seconds: float
    batch_size: int

    @property
    def median_s(self) -> float:
        """Median latency: robust to one slow call (the number we report)."""
        return statistics.median(self.times_s)

    @property
    def mean_s(self) -> float:
        """Mean latency."""
        return statistics.fmean(self.times_s)

    @property
    def std_s(self) -> float:
        """Standard deviation of the latency (0 for a single repeat)."""
        return statistics.stdev(self.times_s) if len(self.times_s) > 1 else 0.0

    @property
    def rtf(self) -> float:
        """Real-time factor b * T / latency (paper A.6), from the median latency."""
        return self.batch_size * self.audio_seconds / self.median_s

    def as_dict(self) -> dict[str, Any]:
        """Flat summary for tables and logs."""
        return {**asdict(self), "median_s": self.median_s, "mean_s": self.mean_s, "std_s": self.std_s,
                "rtf": self.rtf}


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait for queued accelerator work so wall times measure finished work (a no-op on CPU)."""
    dev = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        torch.cuda.synchronize(dev)


def measure_latency(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3, audio_seconds: float = 0.0,
                    batch_size: int = 1, device: str | torch.device | None = None) -> LatencyResult:
    """Time `fn()` end to end: `warmup` untimed calls (allocation, compilation, caches), then `repeats` timed ones."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if audio_seconds < 0 or batch_size < 1:
        raise ValueError(f"need audio_seconds >= 0 and batch_size >= 1, got {audio_seconds}, {batch_size}")
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        synchronize(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return LatencyResult(times_s=times, audio_seconds=float(audio_seconds), batch_size=int(batch_size))


def real_time_factor(fn: Callable[[], Any], audio_seconds: float, *, warmup: int = 1, repeats: int = 3,
                     batch_size: int = 1, device: str | torch.device | None = None) -> LatencyResult:
    """Latency and RTF = b * audio_seconds / latency of a generation function producing `audio_seconds` each."""
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be > 0 for an RTF, got {audio_seconds}")
    return measure_latency(fn, warmup=warmup, repeats=repeats, audio_seconds=audio_seconds,
                           batch_size=batch_size, device=device)


# ---- several systems side by side (Table 2's latency columns, A.6) ----------------------------------------

def time_systems(systems: dict[str, Callable[[], Any]], decode: Callable[[], Any], audio_seconds: float,
                 repeats: int = 5, warmup: int = 1) -> pd.DataFrame:
    """Median end-to-end latency (generation + decode, b = 1) of each system, its decode share, RTF (A.6).

    Rounds are interleaved (every system once per round, then the VAE decode alone), so a change of machine
    load during the measurement hits every system alike. RTF = audio_seconds / latency.
    """
    if repeats < 1 or audio_seconds <= 0:
        raise ValueError(f"need repeats >= 1 and audio_seconds > 0, got {repeats}, {audio_seconds}")
    jobs = {**systems, "__decode__": decode}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in jobs.values():
                fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            times[k] += measure_latency(fn, warmup=0, repeats=1).times_s
    med = {k: float(pd.Series(v).median()) for k, v in times.items()}
    rows = [{"system": k, "latency_s": med[k], "decode_s": med["__decode__"],
             "generation_s": max(med[k] - med["__decode__"], 0.0), "rtf": audio_seconds / med[k],
             "repeats": repeats} for k in systems]
    return pd.DataFrame(rows)
