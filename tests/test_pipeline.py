"""The whole DVC pipeline at the `smoke` profile, in a temporary copy of the working tree."""
import hashlib
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


def _digests(results: Path) -> dict[str, str]:
    """sha256 of every file under results/ outside the other profiles' folders (the committed cpu results)."""
    others = {"smoke", "gpu", "paper"}
    return {str(f.relative_to(results)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(results.rglob("*")) if f.is_file() and f.relative_to(results).parts[0] not in others}


@pytest.mark.pipeline
def test_smoke_pipeline(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    _copy_tree(work)
    committed = _digests(work / "results")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = lambda *cmd: subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    subprocess.run([sys.executable, "-m", "presto_lib.config", "use", "smoke"], cwd=work, env=env, check=True)
    subprocess.run(["dvc", "config", "--local", "core.no_scm", "true"], cwd=work, env=env, check=True)
    r = run("dvc", "repro")
    assert r.returncode == 0, f"dvc repro failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    # the committed cpu results are untouched: smoke results land in results/smoke/
    assert _digests(work / "results") == committed, "a smoke run changed the committed cpu results"
    # every declared output exists (results under the smoke profile's results root)
    params = yaml.safe_load((work / "params.yaml").read_text())
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        if "foreach" in st:
            continue
        for kind in ("outs", "metrics", "plots"):
            for out in st.get(kind, []):
                path = (next(iter(out)) if isinstance(out, dict) else out)
                path = path.replace("${common.results}", params["common"]["results"])
                assert "${" in path or (work / path).exists(), f"stage {name} did not write {path}"
    assert (work / "results/smoke/tables/table2_full_comparison.csv").is_file()
    # DVC's own result commands read them
    r = run("dvc", "metrics", "show", "--json")
    assert r.returncode == 0 and "table2_base" in r.stdout, r.stdout + r.stderr
    # a second repro does nothing
    r = run("dvc", "status")
    assert r.returncode == 0 and "up to date" in r.stdout.lower(), r.stdout + r.stderr
