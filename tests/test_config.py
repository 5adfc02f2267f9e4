"""Profiles render into params.yaml; notebooks match their percent-format sources."""
import importlib.util
from pathlib import Path

import nbformat
import pytest
import yaml

from presto_lib.config import PROFILES, deep_merge, find_root, render_profile

ROOT = find_root(Path(__file__).parent)


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_renders(profile):
    p = render_profile(profile, ROOT)
    assert p["profile"] == profile
    assert p["common"]["sample_rate"] > 0 and p["edm"]["sigma_data"] == 0.5


def test_paper_profile_has_paper_sizes():
    p = render_profile("paper", ROOT)
    assert p["common"]["sample_rate"] == 44100 and p["common"]["clip_seconds"] == 32.0


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        render_profile("huge", ROOT)


def test_params_yaml_has_every_group_and_key():
    """params.yaml must carry every key of its profile's preset (a user may change values, not drop keys)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = render_profile(params["profile"], ROOT)

    def keys(d, pre=""):
        for k, v in d.items():
            yield pre + k
            if isinstance(v, dict):
                yield from keys(v, pre + k + ".")
    missing = set(keys(preset)) - set(keys(params))
    assert not missing, f"params.yaml lacks {sorted(missing)}; rerun `python -m presto_lib.config use {params['profile']}`"


def _py2nb():
    spec = importlib.util.spec_from_file_location("py2nb", ROOT / "scripts" / "py2nb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("src", sorted((ROOT / "notebooks" / "src").glob("*.py")), ids=lambda p: p.stem)
def test_notebook_matches_source(src):
    nb_path = ROOT / "notebooks" / (src.stem + ".ipynb")
    assert nb_path.exists(), f"{nb_path} missing: python scripts/py2nb.py {src} {nb_path}"
    want = _py2nb().convert(src.read_text())
    have = nbformat.read(nb_path, as_version=4)
    assert [(c.cell_type, c.source) for c in have.cells] == [(c.cell_type, c.source) for c in want.cells], \
        f"{nb_path} is stale: python scripts/py2nb.py {src} {nb_path}"
    assert any("parameters" in c.metadata.get("tags", []) for c in have.cells), "no papermill parameters cell"
