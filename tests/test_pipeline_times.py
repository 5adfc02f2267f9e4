"""Stage times from dvc.lock: papermill metadata for notebook stages, serial gaps for the others, a TOTAL row."""
import json
import os

import pandas as pd
import pytest
import yaml

from presto_lib.eval.pipeline_times import papermill_times, stage_times, write_times

T0 = 1_700_000_000.0          # 2023-11-14 22:13:20 UTC


def touch(path, t):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (t, t))


@pytest.fixture
def project(tmp_path):
    """corpus (CLI, two files) -> 01 (notebook, 30 s) -> train (CLI dir) -> pipeline_times (excluded)."""
    lock = {"schema": "2.0", "stages": {
        "corpus": {"cmd": "python -m build", "outs": [{"path": "data/corpus"}]},
        "nb01": {"cmd": "papermill notebooks/01.ipynb data/executed/01.ipynb -k presto",
                 "outs": [{"path": "data/executed/01.ipynb"}, {"path": "results/fig.png"}]},
        "train@a": {"cmd": ["python -m train a"], "outs": [{"path": "data/train/a"}]},
        "missing": {"cmd": "python -m never_ran", "outs": [{"path": "data/nothing"}]},
        "pipeline_times": {"cmd": "python -m presto_lib.eval.pipeline_times",
                           "outs": [{"path": "results/tables/pipeline_times.csv"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    touch(tmp_path / "data/corpus/a.wav", T0)
    touch(tmp_path / "data/corpus/manifest.csv", T0 + 50)
    nb = {"cells": [], "metadata": {"papermill": {"start_time": "2023-11-14T22:14:20.000000",
                                                  "end_time": "2023-11-14T22:14:50.000000", "duration": 30.0}}}
    (tmp_path / "data/executed").mkdir(parents=True)
    (tmp_path / "data/executed/01.ipynb").write_text(json.dumps(nb))
    touch(tmp_path / "results/fig.png", T0 + 89)
    touch(tmp_path / "data/train/a/model/w.safetensors", T0 + 200)
    (tmp_path / "data/train/a").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data/train/a/log.csv").write_text("step,wall_s,loss\n10,40.0,1.0\n20,400.0,0.5\n")   # resumed
    os.utime(tmp_path / "data/train/a/log.csv", (T0 + 150, T0 + 150))
    touch(tmp_path / "results/tables/pipeline_times.csv", T0 - 1000)
    return tmp_path


def test_stage_times_use_papermill_and_serial_gaps(project):
    df = stage_times("dvc.lock", project)
    assert df["stage"].tolist() == ["corpus", "nb01", "train@a"]          # run order; missing and self left out
    s = dict(zip(df["stage"], df["seconds"]))
    assert s["corpus"] == pytest.approx(50.0)                             # first stage: oldest to newest output
    assert s["nb01"] == pytest.approx(30.0)                               # papermill, not the png's mtime
    assert s["train@a"] == pytest.approx(200.0 - 90.0)                    # from the notebook's end
    assert df["kind"].tolist() == ["cli", "notebook", "cli"]


def test_write_times_adds_a_total_row(project, tmp_path):
    out = write_times(stage_times("dvc.lock", project), tmp_path / "t/pipeline_times.csv")
    table = pd.read_csv(out)
    assert table["stage"].iloc[-1] == "TOTAL" and table["seconds"].iloc[-1] == pytest.approx(200.0)
    rows = table.set_index("stage")
    assert rows.loc["SUM", "seconds"] == pytest.approx(50.0 + 30.0 + 110.0)
    # train@a logged 400 s of training over its resumed parts, more than its 110 s in this run
    assert rows.loc["train@a", "train_logged_s"] == pytest.approx(400.0)
    assert rows.loc["train@a", "full_run_s"] == pytest.approx(400.0)
    assert rows.loc["nb01", "full_run_s"] == pytest.approx(30.0) and pd.isna(rows.loc["nb01", "train_logged_s"])
    assert rows.loc["SUM", "full_run_s"] == pytest.approx(50.0 + 30.0 + 400.0)
    assert "| TOTAL" in out.with_suffix(".md").read_text()
    assert "nan" not in out.with_suffix(".md").read_text()


def test_a_partial_rerun_starts_at_the_repro_start(project, tmp_path):
    """corpus and nb01 come from an earlier run; this repro began at T0 + 150 and remade train@a only."""
    df = stage_times("dvc.lock", project, started=T0 + 150)
    s = dict(zip(df["stage"], df["seconds"]))
    assert s["train@a"] == pytest.approx(50.0) and s["corpus"] == pytest.approx(50.0)   # not the gap back to nb01
    assert df["run"].tolist() == ["earlier", "earlier", "this"]
    table = pd.read_csv(write_times(df, tmp_path / "t.csv")).set_index("stage")
    assert table.loc["TOTAL", "seconds"] == pytest.approx(50.0)                        # this run only
    assert table.loc["SUM", "seconds"] == pytest.approx(50.0 + 30.0 + 50.0)            # every stage's cost
    assert stage_times("dvc.lock", project, started=T0 + 1000)["seconds"].sum() == pytest.approx(190.0)


def test_papermill_times_and_missing_lock(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"metadata": {"papermill": {"start_time": "2023-11-14T22:13:20Z",
                                                         "end_time": "2023-11-14T22:13:25.5Z"}}}))
    assert papermill_times(nb) == pytest.approx((T0, T0 + 5.5))
    nb.write_text(json.dumps({"metadata": {}}))
    assert papermill_times(nb) is None
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        stage_times("dvc.lock", tmp_path)
