"""Stage `fig09_rho` (paper A.5, Fig. 9): Presto-LS from one prompt and one latent code, only rho changed.

    python -m presto_lib.stages.fig09_rho

The latent code (start noise and every re-noise of the ping-pong sampler) is drawn once per seed
(`eval.rho_sweep.NoiseBank`) and reused for every rho in `artefacts.rho_values`, so the outputs differ only in
where eq. 9 puts the steps. Writes

    data/fig09_rho/rho_<rho>_seed_<s>.wav             the decoded outputs (players in notebook 10)
    <results>/figures/fig09_rho.png                    mel spectrograms: one row per rho, one column per seed
    <results>/tables/fig09_rho.{csv,md}                distance_to_reference (rho = first value) in latent and
                                                       log-mel space; relative = 1 is as far as another seed
    <results>/tables/fig09_claim_cells.csv             C12's cells (`stages.claims.write_cells`): per seed, the
                                                       distance between the outputs at the largest rho and at
                                                       rho = 7 (same latent code), paired over seeds against 0 (two
                                                       runs with identical settings reuse the noise, so their
                                                       distance is 0 by construction); n = seeds
    <results>/metrics/fig09_rho.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from presto_lib.stages.common import start, write_text

__all__ = ["OUT", "rho_label", "main"]

OUT = Path("data/fig09_rho")


def rho_label(rho: float) -> str:
    """The system id of one rho (`plotting.display_name` reads it as 'Presto-LS (rho = ...)')."""
    return f"presto_ls_rho{rho:g}".replace(".", "_")


def main(argv: list[str] | None = None) -> int:
    """Sample the sweep, write the figure, the distance table and the audio."""
    import matplotlib
    matplotlib.use("Agg")

    from presto_lib.audio import mel_spectrogram, save_audio
    from presto_lib.diffusion.pipeline import read_prompts
    from presto_lib.distill.generator import schedule
    from presto_lib.eval.plotting import save_figure, set_theme, spectrogram_grid
    from presto_lib.eval.claims import paired_diff_ci
    from presto_lib.eval.rho_sweep import distance_to_reference, generator_rho_sweep, per_seed_distance
    from presto_lib.stages.artefacts import presto_ls_generator
    from presto_lib.stages.claims import write_cells

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.fig09_rho", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("fig09_rho", a.params)
    A = S.P["artefacts"]
    t2m, G, cfg, steps = presto_ls_generator(S.P, S.device)
    steps = int(A["rho_steps"] or steps)
    prompt = read_prompts(S.P["presto_s"]["manifest"], "test")[int(A["rho_prompt"])]
    seeds = [int(s) for s in A["rho_seeds"]]
    rhos = [float(r) for r in A["rho_values"]]
    if 7.0 not in rhos or max(rhos) <= 7.0:
        raise ValueError(f"C12 compares rho = 7 with a larger rho; artefacts.rho_values = {rhos}")
    lat = generator_rho_sweep(t2m, G, [prompt["caption"]] * len(seeds), [prompt["bpm"]] * len(seeds), seeds, rhos,
                              lambda r: schedule(cfg, steps, r))
    wavs = {r: t2m.decode(z).cpu() for r, z in lat.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    for r, w in wavs.items():
        for s, x in zip(seeds, w):
            save_audio(OUT / f"rho_{r:g}_seed_{s}.wav", x.numpy(), t2m.sample_rate)
    set_theme()
    fig = spectrogram_grid({rho_label(r): [x[0].numpy() for x in w] for r, w in wavs.items()}, t2m.sample_rate,
                           captions=[f"seed {s}" for s in seeds])
    fig.suptitle(f"Presto-LS, {steps} steps, one latent code per column: {prompt['caption'][:80]}")
    save_figure(fig, "fig09_rho", S.figures)
    logmel = lambda w: mel_spectrogram(w[:, 0], t2m.sample_rate, 1024, 256, 64).flatten(1).numpy()  # noqa: E731
    table = pd.concat([distance_to_reference(lat, rhos[0]).assign(space="latent"),
                       distance_to_reference(wavs, rhos[0], embed=logmel).assign(space="log-mel")])
    table.insert(0, "steps", steps)
    table.to_csv(S.tables / "fig09_rho.csv", index=False)
    write_text(S.tables / "fig09_rho.md", f"Prompt: {prompt['caption']} ({prompt['bpm']:g} BPM); seeds {seeds}\n\n"
               + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    d = {"latent": per_seed_distance(lat, max(rhos), 7.0),                # C12 (A.5): rho changes the output
         "log-mel": per_seed_distance(wavs, max(rhos), 7.0, logmel)}
    write_cells([paired_diff_ci(v, np.zeros_like(v), direction=1,
                                name=f"{space} distance, rho {max(rhos):g} vs 7, same latent code (n = seeds)")
                 for space, v in d.items()], S.tables / "fig09_claim_cells.csv")
    far = table[(table.space == "log-mel") & (table.rho == max(rhos))]["relative"]
    S.write_metrics("fig09_rho", {"steps": steps, "rhos": rhos, "seeds": len(seeds),
                                  "relative_logmel_distance_at_max_rho": float(far.iloc[0])})
    print(table.to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
