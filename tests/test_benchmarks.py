"""The benchmark scripts run end to end at the smoke size on CPU (their figures are not checked, only that they
run and report what their docstrings promise), so a GPU session finds them working."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_bench_vae_and_models_print_a_row_per_profile():
    out = run("benchmarks/bench_vae.py", "--profiles", "smoke", "--repeats", "1", "--device", "cpu")
    assert any(line.split()[:1] == ["smoke"] for line in out.splitlines()), out
    out = run("benchmarks/bench_models.py", "--profiles", "smoke", "--repeats", "1", "--device", "cpu", "--train",
              "--train-batch", "2", "--threads", "1")
    row = next(line.split() for line in out.splitlines() if line.startswith("smoke"))
    assert len(row) == 13 and float(row[-1]) > 0, out        # ... est. RTF, train step s, samples/s


def test_bench_presto_s_reports_both_steps():
    out = run("benchmarks/bench_presto_s.py", "--profile", "smoke", "--batch", "2", "--repeats", "1",
              "--threads", "1", "--device", "cpu")
    assert "DSM step" in out and "Presto-S iteration" in out and "ratios:" in out, out


def test_gpu_check_runs_on_cpu_at_smoke_size(tmp_path):
    run("benchmarks/gpu_check.py", "--profile", "smoke", "--train-profile", "smoke", "--device", "cpu",
        "--repeats", "1", "--out", str(tmp_path))
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(r) >= {"env", "numerics", "train", "latency"}
    assert 0 < r["numerics"]["bf16_rel_err"] < 0.05            # bf16 differs from fp32, but only a little
    assert r["train"]["resume_max_abs_diff"] == 0.0            # exact resume on CPU
    assert len(r["train"]["losses"]) == r["train"]["steps"]
    rows = {x["system"].split()[0]: x for x in r["latency"][0]["rows"]}
    assert set(rows) == {"base", "Presto-S", "Presto-LS"} and rows["base"]["speedup_vs_base"] == 1.0
    assert "End-to-end latency" in (tmp_path / "gpu_check.md").read_text()


def test_bench_tables_writes_tables_3_and_4(tmp_path):
    import pandas as pd

    out = run("benchmarks/bench_tables.py", "--smoke", "--threads", "1", "--out", str(tmp_path))
    assert "Table 3" in out and "Table 4" in out, out
    t3, t4 = pd.read_csv(tmp_path / "table3_latency.csv"), pd.read_csv(tmp_path / "table4_max_batch.csv")
    assert t3["system"].tolist() == ["Base DM", "ASE", "Presto-L", "Presto-S", "Presto-LS"]
    assert (t3["batch_size"] == 1).all() and (t4["batch_size"] >= 1).all() and (t4["memory_cap_GiB"] > 0).all()
    for t in (t3, t4):   # the layout's identities: mono = generation + decoding, stereo = mono + M2S
        assert ((t["mono_latency_ms"] - t["generation_ms"] - t["decoding_ms"]).abs() < 1e-6).all()
        assert ((t["stereo_latency_ms"] - t["mono_latency_ms"] - t["m2s_ms"]).abs() < 1e-6).all()
    assert (tmp_path / "table3_latency.md").is_file() and (tmp_path / "table4_max_batch.md").is_file()


def test_bench_inference_runs_at_smoke_size(tmp_path):
    run("benchmarks/bench_inference.py", "--smoke", "--train-mem", "on", "--threads", "1", "--out", str(tmp_path))
    r = json.loads((tmp_path / "bench_inference.json").read_text())
    rows = r["latency"]
    assert {(x["system"], x["path"], x["batch"]) for x in rows} == {
        (s, p, b) for s in ("base", "presto_s", "presto_ls") for p in ("reference", "fast") for b in (1, 2)}
    for x in rows:      # per-stage times add up to the end-to-end time of the fast path
        assert min(x["text_s"], x["generation_s"], x["decode_s"]) >= 0 and x["total_s"] > 0
        if x["path"] == "fast":
            assert abs(x["text_s"] + x["generation_s"] + x["decode_s"] - x["total_s"]) < 1e-3
    assert {(m["turn"], m["checkpoint_blocks"]) for m in r["train_memory"]} == {
        (t, c) for t in ("fake", "generator") for c in (False, True)}
    assert "| presto_ls | fast | 1 |" in (tmp_path / "bench_inference.md").read_text()
    (tmp_path / "skip").mkdir()
    run("benchmarks/bench_inference.py", "--smoke", "--systems", "presto_s", "--threads", "1", "--out",
        str(tmp_path / "skip"))
    assert "CUDA only" in json.loads((tmp_path / "skip" / "bench_inference.json").read_text())["train_memory"]


def _base_step_curve():
    import importlib.util

    spec = importlib.util.spec_from_file_location("base_step_curve", ROOT / "benchmarks" / "base_step_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spectral_stats_tell_tones_from_noise_and_low_from_high():
    import numpy as np

    bsc, sr = _base_step_curve(), 16000
    t = np.arange(4 * sr) / sr
    low = bsc.spectral_stats([np.sin(2 * np.pi * 440 * t)], sr)
    high = bsc.spectral_stats([np.sin(2 * np.pi * 4000 * t)], sr)
    noise = bsc.spectral_stats([np.random.default_rng(0).standard_normal(4 * sr)], sr)
    assert low["hf_share"] < 1e-3 and high["hf_share"] > 0.999
    assert noise["hf_share"] == pytest.approx(6 / 8, abs=0.02)     # 2-8 kHz of a flat 0-8 kHz
    assert low["flatness"] < 0.01 and 0.4 < noise["flatness"] < 0.7              # white noise: e^-gamma ~ 0.56


def test_step_curve_samples_the_same_prompts_and_seeds_for_every_setting_and_step():
    import numpy as np

    bsc, calls = _base_step_curve(), []
    prompts = [{"caption": f"c{i}", "bpm": 90.0 + i} for i in range(3)]

    def generate(caps, bpms, seeds, opts):
        calls.append((tuple(caps), tuple(bpms), tuple(seeds), dict(opts)))
        return np.random.default_rng(opts["steps"]).standard_normal((len(caps), 4000))

    df = bsc.step_curve(generate, lambda w, c: {"n": len(w), "FAD": float(len(c))}, prompts, [2, 4],
                        {"a": {"guidance": "cfgpp", "w": 0.8}, "b": {"guidance": "cond"}}, 8000)
    assert list(zip(df.setting, df.steps)) == [("a", 2), ("a", 4), ("b", 2), ("b", 4)]
    assert {c[:3] for c in calls} == {(("c0", "c1", "c2"), (90.0, 91.0, 92.0), (0, 1, 2))}
    assert [c[3] for c in calls][1] == {"guidance": "cfgpp", "w": 0.8, "steps": 4}
    assert (df.n == 3).all() and {"hf_share", "flatness", "gen_s"} <= set(df.columns)


def test_pipeline_eta_scales_the_committed_run_by_the_vae_step_time(tmp_path):
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("pipeline_eta", ROOT / "benchmarks" / "pipeline_eta.py")
    eta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eta)
    times = pd.DataFrame({"stage": ["corpus", "vae", "SUM", "TOTAL"], "minutes": [3.0, 37.0, 160.0, 164.0],
                          "train_logged_s": [None, 2000.0, None, None]})
    r = eta.project(times, 1500.0)                          # this machine trains the VAE in 3/4 of the time
    assert r["factor"] == pytest.approx(0.75) and r["projected_min"] == pytest.approx(123.0)
    with pytest.raises(ValueError, match="vae"):
        eta.project(times[times["stage"] != "vae"], 1500.0)
    times.to_csv(tmp_path / "times.csv", index=False)
    out = run("benchmarks/pipeline_eta.py", "--profile", "smoke", "--steps", "2", "--warmup", "1", "--threads", "1",
              "--times", str(tmp_path / "times.csv"))
    assert "per GAN step here" in out and "projected pipeline" in out and "committed run 164.0 min" in out, out
