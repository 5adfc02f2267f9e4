"""The `pipeline_times` stage: each DVC stage's wall time -> <results>/tables/pipeline_times.csv (+ .md).

    python -m presto_lib.stages.pipeline_times      # see presto_lib.eval.pipeline_times for how times are found
"""
from __future__ import annotations

import argparse

from presto_lib.eval.pipeline_times import stage_times, write_times
from presto_lib.stages.common import start

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """CLI: read dvc.lock and the executed notebooks, write the stage-times table of this profile."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.pipeline_times", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--lock", default="dvc.lock")
    a = ap.parse_args(argv)
    S = start("pipeline_times", a.params, threads=1)
    path = write_times(stage_times(a.lock, "."), S.tables / "pipeline_times.csv")
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
