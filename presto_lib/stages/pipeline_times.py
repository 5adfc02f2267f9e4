"""The `pipeline_times` stage: each DVC stage's wall time -> <results>/tables/pipeline_times.csv (+ .md).

    python -m presto_lib.stages.pipeline_times      # see presto_lib.eval.pipeline_times for how times are found
"""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from presto_lib.eval.pipeline_times import stage_times, write_times
from presto_lib.stages.common import start

__all__ = ["STARTED", "read_started", "main"]

STARTED = "data/.repro_started"     # written by `make repro` before `dvc repro`


def read_started(path: str) -> float | None:
    """POSIX seconds of this repro's start from `path` (ISO UTC, `date -u +%FT%TZ`), or None when absent."""
    p = Path(path)
    if not p.is_file():
        return None
    return datetime.fromisoformat(p.read_text().strip().replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    """CLI: read dvc.lock and the executed notebooks, write the stage-times table of this profile."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.pipeline_times", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--lock", default="dvc.lock")
    ap.add_argument("--started", default=STARTED, help="file holding this repro's start (ISO UTC; `make repro`)")
    a = ap.parse_args(argv)
    S = start("pipeline_times", a.params, threads=1)
    path = write_times(stage_times(a.lock, ".", started=read_started(a.started)), S.tables / "pipeline_times.csv")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
