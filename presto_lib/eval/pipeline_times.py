"""How long the pipeline took: each DVC stage's wall time and the total -> results/tables/pipeline_times.csv (+ .md).

DVC records no timings, so they are recovered from what the stages leave behind:

    notebook stages   the executed notebook's papermill metadata (`metadata.papermill.start_time`, `end_time`,
                      `duration`): exact;
    other stages      DVC runs the stages of one `dvc repro` one after another, so a stage starts when the one
                      before it ends, and it ends at the newest modification time among its outputs; its time
                      is that gap (DVC's hashing of its deps and outs included). The first stage, with no stage
                      before it, starts at the oldest modification time among its outputs (a lower bound).

The stages and their outputs come from dvc.lock, which DVC rewrites as each stage finishes, so the final
`pipeline_times` stage of dvc.yaml (downstream of every executed notebook) sees every stage before it:

    python -m presto_lib.stages.pipeline_times      # the stage; the functions here do the work

The total is the last end minus the first start. The numbers describe one full run (`make repro` from a fresh
clone, which excludes its set-up); after a partial rerun, the stages DVC skipped keep the times of the run that
made them (the `end_utc` column shows which). `make repro` writes the time it started to data/.repro_started;
given that time, a stage of this run starts no earlier than it (the first rerun stage is not charged the gap back
to a stage of an earlier run), the `run` column says which stages this run made, and TOTAL spans this run only.

Resumed training: a stage whose training was killed and resumed (or continued to more steps) spends only the
last part in its final run. The shared training loop's `log.csv` keeps `wall_s` summed over every part, so
`train_logged_s` reads it from the stage's outputs, and `full_run_s` = max(seconds, train_logged_s) is what the
stage costs in one uninterrupted run (a lower bound). The SUM row adds up both columns over the stages.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from presto_lib.atomic import atomic_path, write_text

__all__ = ["read_lock", "papermill_times", "newest_mtime", "oldest_mtime", "logged_train_seconds", "stage_times",
           "write_times"]


def read_lock(lock: str | os.PathLike) -> dict[str, dict]:
    """{stage name (foreach items as name@item): {"cmd": str, "outs": [paths]}} from a dvc.lock file."""
    p = Path(lock)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run `dvc repro` first (DVC writes it as stages finish)")
    data = yaml.safe_load(p.read_text()) or {}
    if "stages" not in data:
        raise ValueError(f"{p} is not a dvc.lock file (no 'stages' key)")
    out = {}
    for name, st in data["stages"].items():
        cmd = st.get("cmd", "")
        out[name] = {"cmd": " && ".join(cmd) if isinstance(cmd, list) else str(cmd),
                     "outs": [o["path"] for o in st.get("outs", [])]}
    return out


def _utc(s: str) -> float:
    """An ISO timestamp (papermill writes UTC, without an offset) -> POSIX seconds."""
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def papermill_times(notebook: str | os.PathLike) -> tuple[float, float] | None:
    """(start, end) in POSIX seconds from an executed notebook's papermill metadata, or None."""
    try:
        meta = json.loads(Path(notebook).read_text())["metadata"].get("papermill", {})
    except (OSError, ValueError, KeyError):
        return None
    if not meta.get("start_time") or not meta.get("end_time"):
        return None
    return _utc(meta["start_time"]), _utc(meta["end_time"])


def _files(paths: list[str], root: Path):
    for rel in paths:
        p = root / rel
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from (q for q in p.rglob("*") if q.is_file() and not q.is_symlink())


def newest_mtime(paths: list[str], root: str | os.PathLike = ".") -> float | None:
    """Newest modification time among the files of `paths` (directories walked), or None when none exist."""
    times = [f.stat().st_mtime for f in _files(paths, Path(root))]
    return max(times) if times else None


def oldest_mtime(paths: list[str], root: str | os.PathLike = ".") -> float | None:
    """Oldest modification time among the files of `paths` (directories walked), or None when none exist."""
    times = [f.stat().st_mtime for f in _files(paths, Path(root))]
    return min(times) if times else None


def logged_train_seconds(paths: list[str], root: str | os.PathLike = ".") -> float | None:
    """Training wall time logged by the shared loop under `paths`: the last `wall_s` of each log.csv, summed
    (it accumulates over resumed parts); None when there is no such log."""
    total, found = 0.0, False
    for f in _files(paths, Path(root)):
        if f.name != "log.csv":
            continue
        try:
            wall = pd.read_csv(f, usecols=["wall_s"])["wall_s"].dropna()
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue                                   # not a training log
        if len(wall):
            total, found = total + float(wall.iloc[-1]), True
    return total if found else None


def stage_times(lock: str | os.PathLike = "dvc.lock", root: str | os.PathLike = ".",
                exclude: tuple[str, ...] = ("pipeline_times",), started: float | None = None) -> pd.DataFrame:
    """One row per stage in run order: stage, kind, start, end (POSIX s), seconds, method, train_logged_s
    (see module docstring), and run ("this" / "earlier") when `started` (POSIX s of this `dvc repro`) is given.

    `exclude`: stages left out (this table's own stage, whose output is the table being written).
    """
    root = Path(root)
    rows = []
    for name, st in read_lock(root / lock if not Path(lock).is_absolute() else lock).items():
        if name in exclude:
            continue
        nbs = [o for o in st["outs"] if o.endswith(".ipynb")]
        logged = {"train_logged_s": logged_train_seconds(st["outs"], root)}
        pm = papermill_times(root / nbs[0]) if nbs and st["cmd"].lstrip().startswith("papermill") else None
        if pm:
            rows.append({"stage": name, "kind": "notebook", "start": pm[0], "end": pm[1], "method": "papermill",
                         **logged})
            continue
        end = newest_mtime(st["outs"], root)
        if end is not None:
            rows.append({"stage": name, "kind": "cli", "start": None, "end": end, "method": "after previous stage",
                         "_oldest": oldest_mtime(st["outs"], root), **logged})
    if not rows:
        return pd.DataFrame(columns=["stage", "kind", "start", "end", "seconds", "method", "train_logged_s"])
    df = pd.DataFrame(rows).sort_values("end", kind="stable").reset_index(drop=True)
    for i in df.index[df["start"].isna()]:
        if i == 0:
            df.loc[i, ["start", "method"]] = [df.loc[i, "_oldest"], "oldest output (lower bound)"]
        else:
            df.loc[i, "start"] = df.loc[i - 1, "end"]
            if started is not None and df.loc[i, "end"] >= started > df.loc[i, "start"]:
                df.loc[i, ["start", "method"]] = [started, "from the start of this repro"]
    df["seconds"] = (df["end"] - df["start"].astype(float)).clip(lower=0.0)
    if started is not None:
        df["run"] = ["this" if e >= started else "earlier" for e in df["end"]]
    return df.drop(columns=[c for c in ("_oldest",) if c in df.columns])


def write_times(df: pd.DataFrame, out_csv: str | os.PathLike) -> Path:
    """CSV + Markdown: one row per stage, a SUM row (stage times and full-run times added up) and a TOTAL row
    (first start to last end)."""
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    iso = lambda t: datetime.fromtimestamp(float(t), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    logged = pd.to_numeric(df.get("train_logged_s", pd.Series(index=df.index, dtype=float)), errors="coerce")
    full = pd.concat([df["seconds"].astype(float), logged], axis=1).max(axis=1)
    table = pd.DataFrame({"stage": df["stage"], "kind": df["kind"], "seconds": df["seconds"].round(1),
                          "minutes": (df["seconds"] / 60).round(2), "train_logged_s": logged.round(1),
                          "full_run_s": full.round(1), "start_utc": df["start"].map(iso),
                          "end_utc": df["end"].map(iso), "method": df["method"]})
    this = df["run"] == "this" if "run" in df.columns else pd.Series(True, index=df.index)
    if "run" in df.columns:
        table["run"] = df["run"]
    if this.any():
        t0, t1 = float(df.loc[this, "start"].min()), float(df.loc[this, "end"].max())
        added = {"stage": "SUM", "kind": "", "seconds": round(float(df["seconds"].sum()), 1),
                 "minutes": round(float(df["seconds"].sum()) / 60, 2), "full_run_s": round(float(full.sum()), 1),
                 "method": "stages added up; full_run_s: one uninterrupted run"}
        total = {"stage": "TOTAL", "kind": "", "seconds": round(t1 - t0, 1), "minutes": round((t1 - t0) / 60, 2),
                 "start_utc": iso(t0), "end_utc": iso(t1),
                 "method": "first start to last end" + (" of this run" if "run" in df.columns else "")}
        table = pd.concat([table, pd.DataFrame([added, total])], ignore_index=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    blank = table.astype(object).where(table.notna(), "")       # empty cells, not "nan", in the Markdown
    write_text(out.with_suffix(".md"), blank.to_markdown(index=False) + "\n")
    return out
