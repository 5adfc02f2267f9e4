"""The `tables` stage: Table 2 assembled from per-system row files in one fixed order.

Each evaluating stage writes its systems' rows with `write_rows(S, {system: row})` to
<results>/tables/table2_rows/<system>.csv (a declared output of that stage); this stage concatenates them in
`TABLE2_ORDER` into <results>/tables/table2_full_comparison.csv (+ .md) and writes one metrics JSON per row.

    python -m presto_lib.stages.tables
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from presto_lib.atomic import atomic_path, write_text
from presto_lib.stages.common import Stage, start

__all__ = ["TABLE2_ORDER", "TABLE2", "ROWS_DIR", "row_path", "write_rows", "assemble_table2", "main"]

# (system key, Model name) in the paper's Table 2 order: the base row, Presto-L and its ASE baseline, the step
# distillation methods (consistency-based: CM, SoundCTM, DITTO-CTM; adversarial), then Presto-LS
TABLE2_ORDER = (("base", "DPM-2S"), ("base_79nfe", "DPM-2S (paper budget)"),
                ("ase", "DPM-2S+ASE"), ("presto_l", "DPM-2S+Presto-L"),
                ("cm", "CM"), ("soundctm", "SoundCTM"), ("ditto_ctm", "DITTO-CTM"),
                ("presto_s", "Presto-S"), ("dmd_gan", "DMD-GAN"), ("presto_ls", "Presto-LS"))
TABLE2 = "table2_full_comparison"
ROWS_DIR = "table2_rows"


def row_path(tables: str | Path, system: str) -> Path:
    """The row file of one Table 2 system under a tables folder."""
    if system not in dict(TABLE2_ORDER):
        raise ValueError(f"unknown Table 2 system {system!r}; one of {[k for k, _ in TABLE2_ORDER]}")
    return Path(tables) / ROWS_DIR / f"{system}.csv"


def write_rows(S: Stage, rows: dict[str, dict[str, Any]]) -> list[Path]:
    """Write {system: row} as Table 2 row files (Model set from `TABLE2_ORDER`) and their metrics JSON."""
    out = []
    for system, row in rows.items():
        path = row_path(S.tables, system)
        row = {"Model": dict(TABLE2_ORDER)[system], **{k: v for k, v in row.items() if k != "Model"}}
        with atomic_path(path) as tmp:
            pd.DataFrame([row]).to_csv(tmp, index=False)
        S.write_metrics(f"table2_{system}", {k: v for k, v in row.items() if k != "Model"})
        out.append(path)
    return out


def assemble_table2(tables: str | Path) -> pd.DataFrame:
    """Concatenate the row files under `tables` in TABLE2_ORDER (every row must exist) and write the table."""
    tables = Path(tables)
    missing = [s for s, _ in TABLE2_ORDER if not row_path(tables, s).is_file()]
    if missing:
        raise FileNotFoundError(f"Table 2 rows missing under {tables / ROWS_DIR}: {missing}")
    table = pd.concat([pd.read_csv(row_path(tables, s)) for s, _ in TABLE2_ORDER], ignore_index=True)
    with atomic_path(tables / f"{TABLE2}.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(tables / f"{TABLE2}.md", table.round(4).to_markdown(index=False) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    """CLI: assemble this profile's Table 2."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.tables", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("tables", a.params, threads=1)
    print(assemble_table2(S.tables).round(4).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
