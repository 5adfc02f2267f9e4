"""benchmarks/vae_discriminator.py: the variant's params and the run summaries it reports."""
import copy
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vae_discriminator", ROOT / "benchmarks" / "vae_discriminator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_variant_changes_only_the_discriminator_and_keeps_results_out_of_results(bench):
    from presto_lib.config import render_profile

    P = render_profile("cpu")
    before = copy.deepcopy(P)
    Q = bench.variant_params(P, [2, 3, 5], [512], "x")
    assert P == before                                           # the caller's params are not touched
    assert Q["vae"]["periods"] == [2, 3, 5] and Q["vae"]["fft_sizes"] == [512]
    assert {k: v for k, v in Q["vae"].items() if k not in ("periods", "fft_sizes")} == \
        {k: v for k, v in P["vae"].items() if k not in ("periods", "fft_sizes")}
    assert Path(Q["common"]["results"]) == bench.OUT / "results_vae_x"
    assert bench.variant_params(P, None, None, "y")["vae"] == P["vae"]   # nothing given: the recipe as it is


def test_run_summaries_read_the_loop_files(bench, tmp_path):
    assert bench.train_seconds(tmp_path) is None and bench.curve_summary(tmp_path) == {}
    pd.DataFrame({"step": [10, 20], "wall_s": [5.0, 9.5]}).to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"step": [0, 300, 600], "val_mel": [6.0, 2.5, 2.9]}).to_csv(tmp_path / "validation.csv", index=False)
    assert bench.train_seconds(tmp_path) == 9.5                  # cumulative across resumes: the last row
    assert bench.curve_summary(tmp_path) == {"val_mel_last": 2.9, "val_mel_best": 2.5}
