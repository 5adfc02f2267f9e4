"""The `noise_floor` stage: the base model sampled twice (two seeds, same prompts) and compared with itself.

The true difference between two seeds of one model is zero, so the bootstrap interval of "seed 1 - seed 2" is the
smallest effect a run of this many prompts can resolve (`eval.claims.noise_floor`, DESIGN.md "How a claim is
judged"). The first run is the base row's samples (data/samples/base, notebook 03); this stage generates the
second with the same prompts, sampler and steps and seeds shifted by SEED_OFFSET, into data/noise_floor/base/,
and writes <results>/tables/noise_floor.csv (one row per metric: n, diff, lo, hi, half_width, between_seeds),
which the claims ledger quotes in its header.

    python -m presto_lib.stages.noise_floor
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from presto_lib.atomic import atomic_path
from presto_lib.diffusion.pipeline import TextToMusic, read_prompts, write_samples
from presto_lib.eval.claims import noise_floor
from presto_lib.stages.base import sampling_config
from presto_lib.stages.common import start
from presto_lib.stages.evaluation import load_evaluation, make_evaluator

__all__ = ["SEED_OFFSET", "OUT", "TABLE", "floor_table", "main"]

SEED_OFFSET = 100_000                 # second-run seeds: seed + index + SEED_OFFSET (never a first-run seed)
OUT = Path("data/noise_floor/base")
TABLE = "noise_floor.csv"
N_BOOT = 300


def floor_table(run_1: dict, run_2: dict, ref: np.ndarray, mmd_sigma: float | None = None,
                n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Noise floor of FAD, MMD (set metrics against `ref`) and per-clip CLAP from two runs' per-clip data."""
    rows = [{"metric": m, **noise_floor(run_1["audio"], run_2["audio"], ref, metric=m, n_boot=n_boot, seed=seed,
                                        mmd_sigma=mmd_sigma)} for m in ("FAD", "MMD")]
    if np.isfinite(run_1["clap"]).all() and np.isfinite(run_2["clap"]).all():
        rows.append({"metric": "CLAP", **noise_floor(run_1["clap"], run_2["clap"], n_boot=max(n_boot, 2000),
                                                     seed=seed)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: second base run, both runs' per-clip data, the noise-floor table."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.noise_floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("noise_floor", a.params)
    P, B = S.P, S.P["base"]
    prompts = read_prompts(B["manifest"], "test", limit=B["eval_prompts"])
    pipe = TextToMusic.from_checkpoints(Path(B["out_dir"]) / "model", B["vae"], device=S.device,
                                        sampling=sampling_config(P))
    pipe.model.eval()
    write_samples(pipe.generate, prompts, OUT, pipe.sample_rate, batch_size=int(B["gen_batch_size"]),
                  seed=S.seed + SEED_OFFSET)
    ev = make_evaluator(P, "base")
    ev.evaluate_dir(OUT, system="base_seed2")            # saves its per-clip data under data/evaluations/
    run_1, run_2 = load_evaluation(B["samples_dir"], ev), load_evaluation(OUT, ev)
    ref = ev.reference()
    table = floor_table(run_1, run_2, ref["audio"], float(ref["sigma"]), seed=S.seed)
    with atomic_path(S.tables / TABLE) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
