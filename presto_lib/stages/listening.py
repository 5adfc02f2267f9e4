"""Listening test commands (the `listening` DVC stage itself is notebooks/08_listening_test).

    python -m presto_lib.stages.listening build [--out DIR] [--system NAME=DIR ...]
    python -m presto_lib.stages.listening serve data/listening_test/kit --ratings data/listening_test/ratings.csv
    python -m presto_lib.stages.listening analyse data/listening_test/kit [--ratings CSV]

`build` writes a blinded kit (`eval.listening`), `serve` runs the local rating page (`eval.listening_server`),
`analyse` unblinds the ratings and writes the table and Fig. 12 into this profile's results
(`eval.listening_analysis`).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from presto_lib.config import load_params
from presto_lib.stages.common import results_root

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """`build` a kit, `serve` it to raters, `analyse` the ratings."""
    from presto_lib.eval import listening_analysis as la
    from presto_lib.eval.listening import build_kit_from_params
    from presto_lib.eval.listening_server import serve

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.listening", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a blinded kit from params.yaml's `listening` group")
    b.add_argument("--params", default=None, help="params file (default: the project's params.yaml)")
    b.add_argument("--out", default=None, help="kit folder (default: listening.kit_dir)")
    b.add_argument("--system", action="append", default=[], metavar="NAME=DIR",
                   help="a system's samples folder (repeatable; replaces listening.systems)")
    s = sub.add_parser("serve", help="serve a kit to raters on 127.0.0.1 and save their ratings")
    s.add_argument("kit")
    s.add_argument("--ratings", default="data/listening_test/ratings.csv")
    s.add_argument("--port", type=int, default=8000)
    a = sub.add_parser("analyse", help="unblind ratings, paired t-tests (Bonferroni), table + violin plot")
    a.add_argument("kit")
    a.add_argument("--params", default=None)
    a.add_argument("--ratings", default=None, help="ratings CSV (default: listening.ratings; simulated if absent)")
    a.add_argument("--table", default=None, help="default: <results>/tables/listening_test.csv")
    a.add_argument("--figure", default=None, help="default: <results>/figures/fig12_listening_test.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.cmd == "serve":
        serve(args.kit, args.ratings, args.port)
        return 0
    P = load_params(args.params)
    if args.cmd == "build":
        systems = dict(x.split("=", 1) for x in args.system) if args.system else None
        print(f"kit written to {build_kit_from_params(P, args.out, systems)}")
        return 0
    L = P["listening"]
    if args.ratings and not Path(args.ratings).is_file():
        ap.error(f"--ratings {args.ratings} not found (leave it out to analyse simulated raters)")
    res = la.run_analysis(args.kit, args.ratings or L["ratings"], L, seed=int(P["common"]["seed"]))
    root = results_root(P)
    table = Path(args.table or root / "tables" / "listening_test.csv")
    figure = Path(args.figure or root / "figures" / "fig12_listening_test.png")
    la.write_table(res, table)
    la.plot_violin(res, figure)
    print(res.table.to_string(index=False))
    print(f"wrote {table} (+ .md) and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
