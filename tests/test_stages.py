"""The stages layer: the generated dvc.yaml, stage deps vs. imports, layering, the resume rule, Table 2."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from presto_lib.config import find_root, render_profile
from presto_lib.stages.common import ParamsChanged, config_diff, resume_or_restart, results_root
from presto_lib.stages.imports import direct_imports, import_closure
from presto_lib.stages.registry import STAGES
from presto_lib.stages.render import render

ROOT = find_root(Path(__file__).parent)
LOWER = ("models", "diffusion", "distill", "inference", "data", "eval")


def _stage_bodies():
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        yield name, st.get("do", st)


# ---- dvc.yaml ------------------------------------------------------------------------------------

def test_committed_dvc_yaml_is_the_rendered_one():
    assert (ROOT / "dvc.yaml").read_text() == render(ROOT), \
        "dvc.yaml is stale: run `python -m presto_lib.stages.render`"


def test_every_presto_lib_module_a_stage_loads_is_a_dep_of_that_stage():
    """Import each stage's entry (a notebook's import lines) afresh in one process and compare with its deps.

    Independent of the static closure: it sees what Python actually executes, lazy `_EXPORTS` included."""
    deps = {name: set(body["deps"]) for name, body in _stage_bodies()}
    entries = {}
    for spec in STAGES:
        if spec.is_notebook:
            tree = ast.parse((ROOT / spec.source).read_text())
            lines = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                     and "presto_lib" in ast.unparse(n)]
            entries[spec.name] = "\n".join(lines)
        else:
            entries[spec.name] = f"import {spec.entry}"
    code = f"""
import importlib, json, sys
entries = json.loads({json.dumps(json.dumps(entries))})
out = {{}}
for name, src in entries.items():
    for m in [m for m in sys.modules if m == "presto_lib" or m.startswith("presto_lib.")]:
        del sys.modules[m]
    exec(src, {{}})
    out[name] = sorted(getattr(sys.modules[m], "__file__", None) or "" for m in sys.modules
                       if m == "presto_lib" or m.startswith("presto_lib."))
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    for name, files in loaded.items():
        rel = {str(Path(f).resolve().relative_to(ROOT)) for f in files if f}
        missing = sorted(rel - deps[name])
        assert not missing, f"stage {name} imports {missing} but does not list them as deps"


def test_static_closure_follows_relative_lazy_and_function_level_imports():
    corpus = import_closure(ROOT, "presto_lib/data/corpus.py")           # relative, inside functions
    assert {"presto_lib/data/midi.py", "presto_lib/data/arrange.py", "presto_lib/audio.py"} <= set(corpus)
    nb = import_closure(ROOT, "notebooks/src/01_data.py")                # `from presto_lib.data import ClipDataset`
    assert "presto_lib/data/datasets.py" in nb and "presto_lib/config.py" in nb and "presto_lib/__init__.py" in nb


def _expanded_outputs():
    """(stage, output path) of every stage, a foreach list expanded item by item (`${item}` substituted)."""
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        body, items = st.get("do", st), st.get("foreach")
        for kind in ("outs", "metrics", "plots"):
            for o in body.get(kind, []):
                path = next(iter(o)) if isinstance(o, dict) else o
                if isinstance(items, list) and "${item}" in path:
                    yield from ((f"{name}@{i}", path.replace("${item}", str(i))) for i in items)
                else:
                    yield name, path


def test_every_result_is_the_output_of_exactly_one_stage():
    owners = {}
    for name, path in _expanded_outputs():
        assert path not in owners, f"{path} is an output of {owners[path]} and {name}"
        owners[path] = name
    assert owners["${common.results}/tables/table2_full_comparison.csv"] == "tables"
    stems = {Path(p).name for p in owners}
    committed = {p.name for d in ("tables", "figures") for p in (ROOT / "results" / d).rglob("*")
                 if p.is_file() and p.name != ".gitkeep"}          # files only: table2_rows/ holds one per system
    assert committed <= stems, f"committed results no stage declares: {sorted(committed - stems)}"


# ---- layering ------------------------------------------------------------------------------------

def test_lower_layers_have_no_argparse_no_params_and_no_cycle():
    files = [f for layer in LOWER for f in (ROOT / "presto_lib" / layer).rglob("*.py")]
    for f in files:
        mods = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import):
                mods.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                mods.add("." * n.level + (n.module or ""))
        assert "argparse" not in mods, f"{f.relative_to(ROOT)} imports argparse (CLI glue belongs in stages/)"
        assert not mods & {"presto_lib.config", "..config"}, f"{f.relative_to(ROOT)} reads params (config)"
        bad = [g for g in direct_imports(ROOT, f) if g.relative_to(ROOT).parts[:2] == ("presto_lib", "stages")]
        assert not bad, f"{f.relative_to(ROOT)} imports the stages layer"
    graph = {f: {g for g in direct_imports(ROOT, f) if g.name != "__init__.py"}
             for f in (ROOT / "presto_lib").rglob("*.py")}

    def reach(a):
        seen, todo = set(), list(graph[a])
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(graph.get(x, ()))
        return seen
    cyc = [str(f.relative_to(ROOT)) for f in graph if f in reach(f)]
    assert not cyc, f"import cycle through {cyc}"


# ---- the resume rule -----------------------------------------------------------------------------

def test_resume_refuses_changed_params_naming_the_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("PRESTO_RESTART", raising=False)
    cfg = {"train": {"lr": 3e-4, "batch_size": 4}, "seed": 0}
    assert resume_or_restart(tmp_path / "run", cfg) is False           # fresh
    (tmp_path / "run" / "ckpt").write_text("x")
    assert resume_or_restart(tmp_path / "run", cfg) is True            # same params: resume
    changed = {"train": {"lr": 1e-3, "batch_size": 4}, "seed": 0}
    with pytest.raises(ParamsChanged, match=r"train\.lr: 0\.0003 -> 0\.001") as e:
        resume_or_restart(tmp_path / "run", changed)
    assert list(e.value.diff) == ["train.lr"] and (tmp_path / "run" / "ckpt").exists()   # nothing deleted
    monkeypatch.setenv("PRESTO_RESTART", "1")
    assert resume_or_restart(tmp_path / "run", changed) is False       # restart asked for: cleared
    assert not (tmp_path / "run" / "ckpt").exists()
    assert config_diff({"a": {"b": 1}, "c": 2}, {"a": {"b": 1}, "c": 3, "d": 4}) == {"c": (2, 3), "d": (None, 4)}


# ---- results per profile -------------------------------------------------------------------------

def test_only_cpu_results_land_in_results_root():
    roots = {p: results_root(render_profile(p, ROOT)) for p in ("smoke", "cpu", "gpu", "paper")}
    assert roots["cpu"] == Path("results") and len(set(roots.values())) == 4
    assert all(r.parent == Path("results") for p, r in roots.items() if p != "cpu")
    with pytest.raises(ValueError, match="committed cpu results"):
        results_root({"profile": "smoke", "common": {"results": "results"}})


def test_table2_assembles_rows_in_fixed_order(tmp_path):
    from presto_lib.stages.tables import TABLE2_ORDER, assemble_table2, row_path

    systems = [s for s, _ in TABLE2_ORDER]
    for i, s in enumerate(reversed(systems)):                         # written in the wrong order
        p = row_path(tmp_path, s)
        p.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"Model": dict(TABLE2_ORDER)[s], "FAD": float(i)}]).to_csv(p, index=False)
    t = assemble_table2(tmp_path)
    assert t["Model"].tolist() == [m for _, m in TABLE2_ORDER]
    assert (tmp_path / "table2_full_comparison.md").read_text().count("\n") == len(systems) + 2
    row_path(tmp_path, "presto_ls").unlink()
    with pytest.raises(FileNotFoundError, match="presto_ls"):
        assemble_table2(tmp_path)


def test_notebooks_enter_through_start_and_never_rebind_the_stage():
    for spec in STAGES:
        if not spec.is_notebook:
            continue
        tree = ast.parse((ROOT / spec.source).read_text())
        binds = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "S" and isinstance(n.ctx, ast.Store)]
        assert len(binds) == 1, f"{spec.source} binds S {len(binds)} times (S is the stage context of `start`)"
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "start"]
        assert len(calls) == 1 and calls[0].args[0].value == spec.name, f"{spec.source}: start({spec.name!r}, ...)"
        private = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                   and any(p.startswith("_") for p in n.module.split("."))]
        assert not private, f"{spec.source} imports private modules {private}"


def test_registry_foreach_lists_match_the_code():
    from presto_lib.distill.presto_l import VARIANTS
    from presto_lib.stages.registry import PRESTO_L_VARIANTS

    assert tuple(PRESTO_L_VARIANTS) == tuple(VARIANTS)
    runs = next(body for name, body in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
                if name == "presto_s_run")["foreach"]
    assert runs == list(render_profile("cpu", ROOT)["presto_s"]["runs"])


def test_require_names_the_stage_that_makes_a_missing_input(tmp_path):
    from presto_lib.stages.common import MissingInput, require

    (tmp_path / "there").write_text("x")
    assert require(tmp_path / "there", "corpus") == tmp_path / "there"
    with pytest.raises(MissingInput, match=r"`dvc repro vae`") as e:
        require(tmp_path / "data" / "vae", "vae")
    assert isinstance(e.value, FileNotFoundError) and "data/vae" in str(e.value)
