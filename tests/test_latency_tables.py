"""Tables 3-4 (A.6): component timing in the paper's layout, and the max-batch search under a memory cap.

Timing is checked on a fake clock (each fake component advances it by a known amount), so the test is exact and
never depends on this machine's speed."""
import math

import numpy as np
import pytest

from presto_lib.eval import latency as L


class FakeClock:
    def __init__(self):
        self.t, self.log = 0.0, []

    def __call__(self):
        return self.t

    def work(self, name, seconds):
        self.log.append(name)
        self.t += seconds


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(L.time, "perf_counter", c)
    return c


def test_component_table_layout_and_numbers(clock):
    # generation: 0.1 s per sample (A) / 0.02 s (B); decoding 0.05 s per sample; M2S 0.03 s per sample
    gen = {"A": lambda b: clock.work("genA", 0.1 * b) or ("z", b), "B": lambda b: clock.work("genB", 0.02 * b) or ("z", b)}
    dec = lambda z: clock.work("dec", 0.05 * z[1]) or ("wav", z[1])
    m2s = lambda w: clock.work("m2s", 0.03 * w[1])
    df = L.component_table(gen, dec, audio_seconds=2.0, m2s=m2s, batch_sizes={"A": 1, "B": 4}, repeats=3, warmup=1)
    assert tuple(df.columns[:9]) == L.TABLE_COLUMNS
    a, b = df.set_index("system").loc["A"], df.set_index("system").loc["B"]
    assert a.generation_ms == pytest.approx(100) and a.decoding_ms == pytest.approx(50) and a.m2s_ms == pytest.approx(30)
    assert a.mono_latency_ms == pytest.approx(150) and a.stereo_latency_ms == pytest.approx(180)
    assert a.mono_rtf == pytest.approx(2.0 / 0.15) and a.stereo_rtf == pytest.approx(2.0 / 0.18)
    assert b.batch_size == 4 and b.generation_ms == pytest.approx(80) and b.decoding_ms == pytest.approx(200)
    assert b.mono_rtf == pytest.approx(4 * 2.0 / 0.28) and b.stereo_latency_ms == pytest.approx(400)
    # interleaved: every round runs A's parts then B's, warm-up round included (1 + 3 rounds)
    assert clock.log == ["genA", "dec", "m2s", "genB", "dec", "m2s"] * 4


def test_component_table_pools_decode_per_batch_size_and_handles_no_m2s(clock):
    times = iter([0.010, 0.030, 0.020, 0.040] * 3)
    gen = {"A": lambda b: clock.work("g", 0.1), "B": lambda b: clock.work("g", 0.1)}
    dec = lambda z: clock.work("dec", next(times))
    df = L.component_table(gen, dec, audio_seconds=1.0, repeats=2, warmup=0)
    # b = 1 for both: decode times 10, 30, 20, 40 ms pooled -> median 25 ms, the same value in both rows
    assert df["decoding_ms"].tolist() == pytest.approx([25.0, 25.0])
    assert df["m2s_ms"].isna().all() and df["stereo_rtf"].isna().all() and df["mono_rtf"].notna().all()
    with pytest.raises(ValueError):
        L.component_table(gen, dec, audio_seconds=0.0)


def linear_memory(base, per):
    calls = []

    def peak(b):
        calls.append(b)
        return base + per * b
    return peak, calls


@pytest.mark.parametrize("boundary", [1, 2, 3, 37, 64, 65, 1000])
def test_max_batch_finds_the_cap_boundary_exactly(boundary):
    peak, calls = linear_memory(500.0, 7.0)
    cap = 500.0 + 7.0 * boundary                         # b = boundary fits exactly, boundary + 1 does not
    r = L.max_batch_size(peak, cap)
    assert r.batch_size == boundary and r.peak_bytes == cap and not r.hit_limit
    assert len(calls) == len(set(calls)) <= 2 * math.ceil(math.log2(boundary + 1)) + 2     # logarithmic probes
    assert L.max_batch_size(peak, cap - 1e-6).batch_size == boundary - 1


def test_max_batch_oom_limits_and_errors():
    def oom_model(b):
        if b > 50:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return float(b)
    r = L.max_batch_size(oom_model, cap_bytes=1e9)
    assert r.batch_size == 50 and any(p == math.inf for _, p in r.probes)
    r = L.max_batch_size(lambda b: float(b), cap_bytes=1e9, limit=100)
    assert r.batch_size == 100 and r.hit_limit
    r = L.max_batch_size(lambda b: 10.0 * b, cap_bytes=5.0)
    assert r.batch_size == 0 and math.isnan(r.peak_bytes)
    with pytest.raises(ValueError, match="shape"):
        L.max_batch_size(lambda b: (_ for _ in ()).throw(ValueError("shape")), cap_bytes=1.0)
    with pytest.raises(ValueError):
        L.max_batch_size(lambda b: 1.0, cap_bytes=0)


def test_cpu_peak_memory_sees_a_transient_allocation():
    n = 20_000_000                                       # 160 MB of float64, freed before fn returns
    base = L.peak_memory(lambda: None)
    peak = L.peak_memory(lambda: np.ones(n).sum())
    assert peak - base > 0.9 * 8 * n


def test_component_table_keeps_each_rounds_raw_timings(clock):
    """C10's interval needs every round (`latency_runs_s`: generation + decoding, `generation_runs_s`)."""
    steps = iter([0.10, 0.12, 0.11])
    gen = {"A": lambda b: clock.work("g", next(steps)) or ("z", b)}
    dec = lambda z: clock.work("dec", 0.05)
    df = L.component_table(gen, dec, audio_seconds=1.0, repeats=2, warmup=1)
    row = df.iloc[0]
    assert [float(x) for x in row.generation_runs_s.split()] == pytest.approx([0.12, 0.11])   # warm-up dropped
    assert [float(x) for x in row.latency_runs_s.split()] == pytest.approx([0.17, 0.16])
