"""Stage `fig13_clap_rejection` (paper sec. 4.6, A.10, Fig. 13): CLAP rejection sampling on Presto-LS.

    python -m presto_lib.stages.fig13_clap_rejection

For each of the first `artefacts.rejection_prompts` test prompts, Presto-LS generates `artefacts.rejection_k`
candidates (seeds seed + index, as `write_samples` numbers them); for each r in `artefacts.rejection_ratios` the
fraction r of each prompt's candidates least similar to the prompt (CLAP cosine) is rejected and the rest scored
with the shared evaluator (`eval.rejection.evaluator_sweep`). Writes

    data/fig13_rejection/                              the candidates (eval layout + column `prompt`)
    <results>/figures/fig13_clap_rejection.png          each metric against r, r = 0 (plain Presto-LS) marked
    <results>/tables/fig13_clap_rejection.{csv,md}      one row per r
    <results>/tables/fig13_claims.csv                   A.10's claims in numbers (`check_rejection_claims`)
    <results>/tables/fig13_claim_cells.csv              C11's cells paired over prompts (`rejection_cells`, written
                                                        by `stages.claims.write_cells`): per-clip CLAP of the kept
                                                        minus all candidates at the largest r (+1), their embedding
                                                        spread (mean pairwise distance) kept minus all (-1)
    <results>/metrics/fig13_clap_rejection.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from presto_lib.stages.common import atomic_path, start, write_text

__all__ = ["OUT", "METRICS", "plot_sweep", "main"]

OUT = Path("data/fig13_rejection")
METRICS = ("FAD", "MMD", "CLAP", "Density", "Recall", "Coverage")     # Fig. 13's panels ("CLAP" = the CLAP score)


def plot_sweep(sweep: pd.DataFrame, clap_name: str):
    """Fig. 13: one panel per metric against the rejection ratio r, the r = 0 point (no rejection) marked."""
    import matplotlib.pyplot as plt

    from presto_lib.eval.plotting import PALETTE, PANEL

    cols = [clap_name if m == "CLAP" else m for m in METRICS if (clap_name if m == "CLAP" else m) in sweep]
    fig, axes = plt.subplots(1, len(cols), figsize=(PANEL[0] * len(cols) * 0.8, PANEL[1]), layout="constrained")
    for ax, c in zip(axes, cols):
        ax.plot(sweep["r"], sweep[c], "o-", color=PALETTE[0], ms=4)
        r0 = sweep[sweep["r"] == 0.0]
        ax.plot(r0["r"], r0[c], "*", color=PALETTE[3], ms=12, label="Presto-LS (r = 0)")
        ax.set_xlabel("rejection ratio r")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(c + (" (lower is better)" if c in ("FAD", "MMD") else ""), fontsize=9)
    axes[0].legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> int:
    """Generate the candidates, sweep r, write the figure, the table and the claim check."""
    import matplotlib
    matplotlib.use("Agg")

    from presto_lib.diffusion.pipeline import read_prompts, write_samples
    from presto_lib.distill.generator import generator_sampler
    from presto_lib.eval.evaluate import read_samples
    from presto_lib.eval.plotting import save_figure, set_theme
    from presto_lib.eval.claims_cells import per_clip_clap
    from presto_lib.eval.rejection import check_rejection_claims, evaluator_sweep, rejection_cells
    from presto_lib.stages.artefacts import presto_ls_generator
    from presto_lib.stages.claims import write_cells
    from presto_lib.stages.evaluation import make_evaluator

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.fig13_clap_rejection", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("fig13_clap_rejection", a.params)
    A, PS = S.P["artefacts"], S.P["presto_s"]
    k = int(A["rejection_k"])
    t2m, G, cfg, steps = presto_ls_generator(S.P, S.device)
    prompts = read_prompts(PS["manifest"], "test", limit=A["rejection_prompts"] or S.P["base"]["eval_prompts"])
    cands = [p for p in prompts for _ in range(k)]
    csv = write_samples(generator_sampler(t2m, G, cfg, steps), cands, OUT, t2m.sample_rate,
                        batch_size=int(PS["gen_batch_size"]), seed=S.seed)
    df = pd.read_csv(csv)
    df["prompt"] = [i // k for i in range(len(df))]
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    waves, sr, df = read_samples(OUT)
    ev = make_evaluator(S.P, "presto_s")
    ratios, groups, captions = [float(r) for r in A["rejection_ratios"]], df["prompt"].tolist(), \
        list(df["caption"].astype(str))
    gen = ev.embed(waves, sr)                                     # embedded once: the sweep and C11's cells
    sweep = evaluator_sweep(ev, waves, sr, captions, ratios, groups=groups, gen=gen)
    sweep.insert(1, "k", k)
    sweep.to_csv(S.tables / "fig13_clap_rejection.csv", index=False)
    claims = check_rejection_claims(sweep, ev.clap_name, float(A["rejection_tolerance"]))
    claims.to_csv(S.tables / "fig13_claims.csv", index=False)
    clip_clap = per_clip_clap(gen["clap_audio"], ev.text_embeddings(captions))      # memoised text embeddings
    write_cells(rejection_cells(clip_clap, gen["audio"], groups, ratios),
                S.tables / "fig13_claim_cells.csv")
    write_text(S.tables / "fig13_clap_rejection.md",
               f"Presto-LS ({steps} steps), {len(prompts)} test prompts x {k} candidates; CLAP rejection per "
               "prompt.\n\n"
               + sweep.to_markdown(index=False, floatfmt=".4g") + "\n\nClaims (largest r vs r = 0):\n\n"
               + claims.to_markdown(index=False, floatfmt=".4g") + "\n")
    set_theme()
    save_figure(plot_sweep(sweep, ev.clap_name), "fig13_clap_rejection", S.figures)
    S.write_metrics("fig13_clap_rejection", {"prompts": len(prompts), "k": k, "steps": steps,
                                             **{f"holds_{m}": bool(h) for m, h in zip(claims.metric, claims.holds)}})
    print(sweep.to_markdown(index=False, floatfmt=".4g"))
    print(claims.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
