"""The whole DVC pipeline at the `smoke` profile, in a temporary copy of the working tree."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from presto_lib.config import find_root

ROOT = find_root(Path(__file__).parent)


def _copy_tree(dst: Path) -> None:
    """Copy tracked + untracked-not-ignored files (what a clean clone would hold, plus local edits)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


@pytest.mark.pipeline
def test_smoke_pipeline(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    _copy_tree(work)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = lambda *cmd: subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    subprocess.run([sys.executable, "-m", "presto_lib.config", "use", "smoke"], cwd=work, env=env, check=True)
    subprocess.run(["dvc", "config", "--local", "core.no_scm", "true"], cwd=work, env=env, check=True)
    r = run("dvc", "repro")
    assert r.returncode == 0, f"dvc repro failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    # every declared output exists
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        for out in st.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            assert (work / path).exists(), f"stage {name} did not write {path}"
    # a second repro does nothing
    r = run("dvc", "status")
    assert r.returncode == 0 and "up to date" in r.stdout.lower(), r.stdout + r.stderr
