"""End-to-end latency and real-time factor (RTF) of a generation function (paper sec. 4.1, A.6).

    RTF_b(theta) = b * T_theta / latency_theta(b)                         (paper A.6)

with T_theta the seconds of contiguous audio one call generates and latency_theta(b) the wall time of a batch of
b samples. The paper's Table 2 uses b = 1; higher is better (RTF > 1 means faster than real time). `time_systems`
times several systems in interleaved rounds for a table's latency columns.

Tables 3 and 4 (A.6) split each system into its components: generation (sampler or distilled generator -> latents),
decoding (VAE decoder -> mono audio) and mono-to-stereo (M2S); `component_table` times them, interleaved, at b = 1
(Table 3) or at each system's maximum batch size (Table 4), which `max_batch_size` finds under a stated memory cap:
`peak_memory` is CUDA's max_memory_allocated on GPU and the process's peak RSS (VmHWM, reset per probe) on CPU.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pandas as pd
import torch

__all__ = ["LatencyResult", "measure_latency", "real_time_factor", "synchronize", "time_systems", "component_table",
           "TABLE_COLUMNS", "peak_memory", "is_oom", "BatchSearch", "max_batch_size"]


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
    load during the measurement hits every system alike. RTF = audio_seconds / latency. `latency_runs_s` keeps
    the raw timings (space-separated) for the speed-up's interval (`eval.claims.ratio_ci`, claim C10).
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
             "repeats": repeats, "latency_runs_s": " ".join(f"{t:.6g}" for t in times[k])} for k in systems]
    return pd.DataFrame(rows)


# ---- Tables 3 and 4: generation, decoding, M2S, mono and stereo (A.6) ------------------------------------

TABLE_COLUMNS = ("system", "batch_size", "generation_ms", "decoding_ms", "mono_rtf", "mono_latency_ms", "m2s_ms",
                 "stereo_rtf", "stereo_latency_ms")


def _timed(fn: Callable[[], Any], device: str | torch.device | None) -> tuple[Any, float]:
    """(fn(), wall seconds) with the device synchronised on both sides."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def component_table(systems: dict[str, Callable[[int], Any]], decode: Callable[[Any], Any], audio_seconds: float,
                    m2s: Callable[[Any], Any] | None = None, batch_sizes: int | dict[str, int] = 1,
                    repeats: int = 5, warmup: int = 1, device: str | torch.device | None = None) -> pd.DataFrame:
    """Tables 3 / 4 in the paper's layout (ms): median generation, decoding, M2S; mono / stereo latency and RTF.

    systems: name -> generate(b) returning latents for a batch of b; decode(latents) -> mono audio;
    m2s(mono) -> stereo (None: the stereo columns stay empty). Each round times every system's three parts in
    turn (warm-up rounds first), so load changes hit every system alike. Decoding and M2S are the same networks
    for every system, so their times are pooled over systems with the same batch size (one value per b, as in the
    paper's tables). mono latency = generation + decoding, stereo latency = mono + M2S, RTF = b T / latency (A.6).
    `latency_runs_s` / `generation_runs_s` keep each round's own mono latency / generation time (seconds,
    space-separated, as `time_systems`) for the speed-up's interval (`eval.claims.ratio_ci`, claim C10).
    """
    if repeats < 1 or warmup < 0 or audio_seconds <= 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, audio_seconds > 0; got {repeats}, {warmup}, {audio_seconds}")
    bs = {k: int(batch_sizes[k] if isinstance(batch_sizes, dict) else batch_sizes) for k in systems}
    if min(bs.values(), default=1) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {bs}")
    gen_t: dict[str, list[float]] = {k: [] for k in systems}
    mono_t: dict[str, list[float]] = {k: [] for k in systems}
    dec_t: dict[int, list[float]] = {b: [] for b in bs.values()}
    m2s_t: dict[int, list[float]] = {b: [] for b in bs.values()}
    with torch.inference_mode():
        for rnd in range(warmup + repeats):
            for k, gen in systems.items():
                z, tg = _timed(lambda: gen(bs[k]), device)
                wav, td = _timed(lambda: decode(z), device)
                tm = _timed(lambda: m2s(wav), device)[1] if m2s is not None else float("nan")
                if rnd >= warmup:
                    gen_t[k].append(tg)
                    mono_t[k].append(tg + td)
                    dec_t[bs[k]].append(td)
                    m2s_t[bs[k]].append(tm)
    rows = []
    for k in systems:
        b = bs[k]
        g, d, m = (1e3 * statistics.median(v) for v in (gen_t[k], dec_t[b], m2s_t[b]))
        mono, stereo = g + d, g + d + m
        rows.append({"system": k, "batch_size": b, "generation_ms": g, "decoding_ms": d,
                     "mono_rtf": b * audio_seconds / (mono / 1e3), "mono_latency_ms": mono, "m2s_ms": m,
                     "stereo_rtf": b * audio_seconds / (stereo / 1e3), "stereo_latency_ms": stereo,
                     "repeats": repeats, "latency_runs_s": " ".join(f"{t:.6g}" for t in mono_t[k]),
                     "generation_runs_s": " ".join(f"{t:.6g}" for t in gen_t[k])})
    return pd.DataFrame(rows)


# ---- peak memory and the maximum batch size under a cap (Table 4) -----------------------------------------

def _rss_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def _cpu_peak(fn: Callable[[], Any]) -> float:
    """Peak resident memory (bytes) of this process during fn(): VmHWM reset first, else a 1 ms RSS poll."""
    try:
        with open("/proc/self/clear_refs", "w") as f:   # Linux: "5" resets the peak RSS (VmHWM) to the RSS
            f.write("5")
    except OSError:
        import psutil
        proc, peak, done = psutil.Process(), [0], threading.Event()

        def poll():
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(1e-3)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        try:
            fn()
        finally:
            done.set()
            th.join()
        return float(max(peak[0], proc.memory_info().rss))
    fn()
    return 1024.0 * _rss_kb("VmHWM")


def peak_memory(fn: Callable[[], Any], device: str | torch.device | None = None) -> float:
    """Peak memory in bytes while fn() runs: CUDA max_memory_allocated on a GPU, the process's peak RSS on CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            fn()
            torch.cuda.synchronize(dev)
            return float(torch.cuda.max_memory_allocated(dev))
        return _cpu_peak(fn)


def is_oom(err: BaseException) -> bool:
    """An out-of-memory failure (CUDA OOM, MemoryError, an allocator's 'out of memory' RuntimeError)."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass
class BatchSearch:
    """The largest batch whose peak memory stays within the cap, and every probe on the way."""

    batch_size: int                       # 0 when even `start` does not fit
    peak_bytes: float                     # peak memory at batch_size (nan when 0)
    cap_bytes: float
    probes: list[tuple[int, float]] = field(default_factory=list)   # (b, peak bytes; inf = out of memory)
    hit_limit: bool = False               # the search stopped at `limit` while still fitting


def max_batch_size(peak_bytes: Callable[[int], float], cap_bytes: float, *, start: int = 1,
                   limit: int = 4096) -> BatchSearch:
    """Largest b in [start, limit] with peak_bytes(b) <= cap (doubling, then bisection; peak assumed monotone in b).

    peak_bytes(b) runs a batch of b and returns its peak memory (e.g. `lambda b: peak_memory(lambda: run(b), dev)`);
    an out-of-memory error counts as over the cap.
    """
    if cap_bytes <= 0 or not 1 <= start <= limit:
        raise ValueError(f"need cap_bytes > 0 and 1 <= start <= limit, got {cap_bytes}, {start}, {limit}")
    probes: list[tuple[int, float]] = []
    seen: dict[int, float] = {}

    def peak(b: int) -> float:
        if b not in seen:
            try:
                seen[b] = float(peak_bytes(b))
            except Exception as e:                    # noqa: BLE001 (only OOM is swallowed)
                if not is_oom(e):
                    raise
                seen[b] = float("inf")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            probes.append((b, seen[b]))
        return seen[b]

    if peak(start) > cap_bytes:
        return BatchSearch(0, float("nan"), float(cap_bytes), probes)
    ok, bad = start, None
    while bad is None and ok < limit:                 # doubling: bracket the boundary
        b = min(2 * ok, limit)
        if peak(b) <= cap_bytes:
            ok = b
        else:
            bad = b
    if bad is None:
        return BatchSearch(ok, seen[ok], float(cap_bytes), probes, hit_limit=True)
    while bad - ok > 1:                               # bisection: ok fits, bad does not
        mid = (ok + bad) // 2
        if peak(mid) <= cap_bytes:
            ok = mid
        else:
            bad = mid
    return BatchSearch(ok, seen[ok], float(cap_bytes), probes)
