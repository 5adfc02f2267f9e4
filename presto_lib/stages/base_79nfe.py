"""Stage `base_79nfe` (paper A.1, Table 2): the base model at the paper's sampling budget, its own Table 2 row.

    python -m presto_lib.stages.base_79nfe

DPM-2S with `artefacts.base_paper_steps` steps (40 = 79 NFE, the paper's base row) + CFG++, the base row's prompts
and seeds; scored with the shared evaluator and timed at b = 1 (RTF, median of repeats after a warm-up), so every
speed-up against the base model is measured, not extrapolated. The 16-step `base` row (notebook 03) stays as a
second point. Writes data/samples/base_79nfe/ and the Table 2 row <results>/tables/table2_rows/base_79nfe.csv.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from presto_lib.stages.common import start

__all__ = ["SYSTEM", "main"]

SYSTEM = "base_79nfe"


def main(argv: list[str] | None = None) -> int:
    """Sample, score, time and write the row."""
    from presto_lib.diffusion.pipeline import read_prompts, write_samples
    from presto_lib.eval.latency import real_time_factor
    from presto_lib.stages.artefacts import base_pipeline
    from presto_lib.stages.evaluation import make_evaluator
    from presto_lib.stages.tables import write_rows

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.base_79nfe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start(SYSTEM, a.params)
    B, A = S.P["base"], S.P["artefacts"]
    steps = int(A["base_paper_steps"])
    t2m = base_pipeline(S.P, S.device)
    gen = lambda c, b, s: t2m.generate(c, b, s, steps=steps)      # noqa: E731
    prompts = read_prompts(B["manifest"], "test", limit=B["eval_prompts"])
    out = Path(B["samples_dir"]).parent / SYSTEM
    write_samples(gen, prompts, out, t2m.sample_rate, batch_size=int(B["gen_batch_size"]), seed=S.seed)
    nfe = t2m.nfe
    one = prompts[0]
    rtf = real_time_factor(lambda: gen([one["caption"]], [one["bpm"]], [S.seed]), t2m.seconds,
                           repeats=int(B["latency_repeats"]))
    ev = make_evaluator(S.P, "base")
    scores = ev.evaluate_dir(out, system=SYSTEM)
    cols = ["FAD", "MMD", ev.clap_name, "Density", "Recall", "Coverage", "Precision"]
    row = {"NFE": nfe, "RTF": float(rtf.rtf), **{c: scores[c] for c in cols if c in scores}}
    write_rows(S, {SYSTEM: row})
    print({"steps": steps, **row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
