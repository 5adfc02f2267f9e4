"""The benchmark scripts run end to end at the smoke size on CPU (their figures are not checked, only that they
run and report what their docstrings promise), so a GPU session finds them working."""
import json
import os
import subprocess
import sys
from pathlib import Path

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
