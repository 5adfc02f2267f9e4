"""The single entry of every stage (module or notebook): root, params, seed, threads, device, logging, results.

    S = start("presto_s", params_file)          # chdir to the project root, read params.yaml, seed, threads
    S.P["presto_s"], S.T["presto_s"].train.lr_fake, S.seed, S.device, S.tables / "x.csv", S.log.info(...)

`S.P` holds params.yaml validated and coerced by `stages.params` (unknown keys, wrong types and out-of-range
values stop the stage with the group and key named); `S.T` the same as typed dataclasses.

and the rules every stage shares:

- `resume_or_restart(run_dir, run_config)`: a training run resumes only with the params it was started with. A
  run whose params changed is refused with `ParamsChanged`, naming the keys, unless a restart is asked for
  (`restart=True`, a stage's `--restart`, or `PRESTO_RESTART=1`), which clears the run and starts afresh.
- `require(path, stage)`: an input that is missing stops a notebook or stage with the `dvc repro <stage>` that
  makes it (a notebook stepped through in JupyterLab before its stages ran).
- Atomic writes through `presto_lib.atomic` (`write_text`, `write_json`, `atomic_path`), re-exported here.
- Results land in `results_root(P)` (params `common.results`): `results/` for the committed `cpu` profile,
  `results/<profile>/` for every other one, so a `smoke` run never touches the `cpu` tables and figures.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from presto_lib.atomic import atomic_path, write_json, write_text
from presto_lib.config import find_root, load_params
from presto_lib.stages.params import Group, coerced_params, typed_params

__all__ = ["current_stage", "Stage", "start", "results_root", "require", "MissingInput", "ParamsChanged",
           "resume_or_restart", "json_safe", "config_diff", "atomic_path", "write_json", "write_text", "THREADS_ENV",
           "RESTART_ENV"]

THREADS_ENV = "PRESTO_THREADS"       # torch threads per stage (default 2: the cpu profile's laptop)
RESTART_ENV = "PRESTO_RESTART"       # "1": restart training runs whose params changed instead of refusing
COMMITTED_PROFILE = "cpu"            # the profile whose results are committed at results/


# ---- results layout ----------------------------------------------------------------------------

def results_root(P: dict[str, Any]) -> Path:
    """Where a profile's tables, figures and metrics land: params `common.results` (profiles/common.yaml:
    results/ for `cpu`, results/<profile>/ for every other profile)."""
    root = Path(P["common"]["results"])
    if P.get("profile", COMMITTED_PROFILE) != COMMITTED_PROFILE and root == Path("results"):
        raise ValueError(f"profile {P.get('profile')!r} would write into the committed cpu results at results/; "
                         "set common.results to results/<profile>")
    return root


# ---- inputs ------------------------------------------------------------------------------------

class MissingInput(FileNotFoundError):
    """An input of a notebook or stage does not exist yet; the message names the stage that makes it."""


def require(path: str | os.PathLike, stage: str) -> Path:
    """`path` if it exists, else MissingInput naming `dvc repro <stage>` (the stage that writes it)."""
    p = Path(path)
    if not p.exists():
        raise MissingInput(f"{p} does not exist yet: it is made by the `{stage}` stage; run `dvc repro {stage}` "
                           "(from the project root) first")
    return p


# ---- the stage context -------------------------------------------------------------------------

@dataclass
class Stage:
    """What a running stage knows: its name, the project root, the params and where results go."""
    name: str
    root: Path
    P: dict[str, Any]
    T: dict[str, Group] = field(repr=False)
    seed: int
    device: str
    log: logging.Logger = field(repr=False)

    @property
    def profile(self) -> str:
        """The profile params.yaml was rendered for."""
        return str(self.P.get("profile", COMMITTED_PROFILE))

    @property
    def results(self) -> Path:
        """This profile's results root (relative to the project root)."""
        return results_root(self.P)

    @property
    def tables(self) -> Path:
        """results/<...>/tables, created."""
        p = self.results / "tables"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def figures(self) -> Path:
        """results/<...>/figures, created."""
        p = self.results / "figures"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def metrics_dir(self) -> Path:
        """results/<...>/metrics (the JSON files of `dvc metrics show`), created."""
        p = self.results / "metrics"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def write_metrics(self, name: str, values: dict[str, Any]) -> Path:
        """Write a stage's key numbers to results/<...>/metrics/<name>.json (what `dvc metrics show` reads)."""
        return write_json(self.metrics_dir / f"{name}.json", json_safe(values))


_CURRENT: dict[str, str] = {}          # the stage this process entered (`start`)


def current_stage() -> str | None:
    """The name passed to `start` in this process (None before any stage started)."""
    return _CURRENT.get("stage")


def _threads(n: int | None) -> int:
    """Torch threads for a stage: `n`, else $PRESTO_THREADS, else 2 (never more than the machine has)."""
    want = int(n if n is not None else os.environ.get(THREADS_ENV, "2"))
    return max(1, min(want, os.cpu_count() or 1))


def start(name: str, params_file: str | os.PathLike = "params.yaml", *, threads: int | None = None,
          device: str | None = None) -> Stage:
    """Enter a stage: chdir to the project root, read params, seed python/numpy/torch, set threads and device."""
    import numpy as np
    import torch

    root = find_root()
    os.chdir(root)
    P = coerced_params(load_params(params_file))
    seed = int(P["common"]["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(_threads(threads))
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger(f"presto.{name}")
    log.info("profile %s, seed %d, device %s, %d threads", P.get("profile"), seed, dev, torch.get_num_threads())
    _CURRENT["stage"] = name
    return Stage(name=name, root=root, P=P, T=typed_params(P), seed=seed, device=dev, log=log)


# ---- resume or restart -------------------------------------------------------------------------

class ParamsChanged(RuntimeError):
    """A training run exists with other params than the ones asked for."""

    def __init__(self, run_dir: Path, diff: dict[str, tuple[Any, Any]]):
        self.run_dir, self.diff = Path(run_dir), diff
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        super().__init__(f"{run_dir} holds a run started with other params ({lines}); refusing to resume it. "
                         f"Restart it (stage option --restart, or {RESTART_ENV}=1) or delete {run_dir}.")


def json_safe(obj: Any) -> Any:
    """obj as it reads back from JSON (tuples -> lists, numpy scalars -> numbers), so configs compare equal."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} of every leaf that differs between two nested dicts."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(old) | set(new), key=str):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_diff(a, b, key + "."))
        elif a != b:
            out[key] = (a, b)
    return out


def resume_or_restart(run_dir: str | os.PathLike, run_config: dict[str, Any], *, restart: bool | None = None,
                      is_main: bool = True, name: str = "run_config.json") -> bool:
    """The one resume rule: resume a run only if it was started with `run_config`; returns True when resuming.

    A run whose saved config differs raises `ParamsChanged` naming the keys, unless `restart` (default: the
    `PRESTO_RESTART` environment variable) asks to clear it and start afresh. Only the main process writes.
    """
    run_dir = Path(run_dir)
    path = run_dir / name
    cfg = json_safe(run_config)
    if restart is None:
        restart = os.environ.get(RESTART_ENV, "") not in ("", "0")
    resuming = path.is_file()
    if resuming:
        diff = config_diff(json.loads(path.read_text()), cfg)
        if diff:
            if not restart:
                raise ParamsChanged(run_dir, diff)
            if is_main:
                shutil.rmtree(run_dir)
            resuming = False
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, cfg, sort_keys=True)
    return resuming
