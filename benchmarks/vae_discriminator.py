#!/usr/bin/env python
"""Does a cheaper VAE discriminator cost reconstruction quality? A VAE retrained with other MPD periods / MRD FFT sizes.

    python benchmarks/vae_discriminator.py --name p235_f512 --periods 2 3 5 --fft-sizes 512   # after `make repro`

The `vae` stage is the pipeline's longest, and the discriminators (5 MPD periods + 3 MRD resolutions) take a large
share of each GAN step. This trains the `vae` params group with the given discriminator into
data/bench/vae_<name>/ (resumable; skipped when already trained), then compares its reconstructions of every test
clip (posterior mean, as notebook 02) with the committed VAE's (data/vae) by the ledger's rule (`eval.claims`):
per-clip multi-scale mel distance and SI-SDR (paired bootstrap), and FAD / MMD of the reconstructions against the
original clips (paired set-metric bootstrap; the shared evaluator's embeddings). Step times from different days
differ by up to ~25% on this machine, so it also times the stage's own loop (`train_vae`) with both
discriminators in alternation, under the same conditions. Writes
vae_discriminator_<name>.csv and .md to --out, with both runs' training time and validation curve.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OUT = Path("data/bench")


def variant_params(P: dict[str, Any], periods: list[int] | None, fft_sizes: list[int] | None,
                   name: str) -> dict[str, Any]:
    """A copy of the params with the `vae` group's discriminator replaced and results kept out of results/."""
    Q = {**P, "vae": dict(P["vae"]), "common": dict(P["common"])}
    if periods:
        Q["vae"]["periods"] = [int(p) for p in periods]
    if fft_sizes:
        Q["vae"]["fft_sizes"] = [int(f) for f in fft_sizes]
    Q["common"]["results"] = str(OUT / f"results_vae_{name}")
    return Q


def per_clip(vae: Any, waves: list[np.ndarray], sr: int, V: dict[str, Any]) -> tuple[pd.DataFrame, list]:
    """Per-clip mel distance and SI-SDR of a VAE's reconstructions, and the reconstructions themselves."""
    import torch

    from presto_lib.models.vae_losses import multiscale_mel_loss, reconstruct, si_sdr

    mel_kw = dict(sample_rate=sr, windows=V["mel_windows"], n_mels=V["mel_bins"])
    rows, recons = [], []
    for w in waves:
        x = torch.from_numpy(np.asarray(w, np.float32))[None, None]
        y = reconstruct(vae, x)
        rows.append({"mel": multiscale_mel_loss(y, x, **mel_kw).item(), "si_sdr": si_sdr(y[0, 0], x[0, 0]).item()})
        recons.append(y[0, 0].numpy())
    return pd.DataFrame(rows), recons


def curve_summary(run_dir: Path) -> dict[str, float]:
    """Last and best validation mel distance of a VAE run (validation.csv of the shared loop)."""
    f = run_dir / "validation.csv"
    if not f.is_file():
        return {}
    v = pd.read_csv(f)
    return {"val_mel_last": float(v["val_mel"].iloc[-1]), "val_mel_best": float(v["val_mel"].min())}


def train_seconds(run_dir: Path) -> float | None:
    """Training wall time of a run: the shared loop's cumulative `wall_s` at its last log row (kept across resumes)."""
    f = run_dir / "log.csv"
    return float(pd.read_csv(f)["wall_s"].iloc[-1]) if f.is_file() else None


def loop_seconds(P: dict[str, Any], manifest: str, steps: int, out: Path) -> float:
    """Seconds per GAN step of the `vae` stage's own loop (`train_vae`), GAN from step 0, no curve, steps 20..end."""
    import shutil

    from presto_lib.stages.vae import train_vae

    Q = {**P, "vae": {**P["vae"], "steps": int(steps), "gan_start": 0, "ckpt_every": 10 ** 6},
         "curves": {"points": 0, "clips": 0}}
    shutil.rmtree(out, ignore_errors=True)
    train_vae(Q, manifest, out)
    w = pd.read_csv(out / "log.csv").set_index("step")["wall_s"]
    shutil.rmtree(out, ignore_errors=True)
    return float((w[int(steps)] - w[20]) / (int(steps) - 20))


def main(argv: list[str] | None = None) -> int:
    import torch

    from presto_lib.config import load_params
    from presto_lib.eval.claims import beats, paired_diff_ci, set_metric_diff_ci
    from presto_lib.eval.evaluate import read_split
    from presto_lib.models.vae import load_vae
    from presto_lib.stages.evaluation import make_evaluator
    from presto_lib.stages.vae import train_vae

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--periods", type=int, nargs="*", default=None)
    ap.add_argument("--fft-sizes", type=int, nargs="*", default=None)
    ap.add_argument("--reference", default="data/vae", help="the VAE to compare with")
    ap.add_argument("--clips", type=int, default=None, help="test clips (default: all)")
    ap.add_argument("--time-steps", type=int, default=60, help="GAN steps per timing of each discriminator")
    ap.add_argument("--time-repeats", type=int, default=2, help="alternating timings of each discriminator")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)
    P = load_params(a.params)
    Q = variant_params(P, a.periods, a.fft_sizes, a.name)
    run = OUT / f"vae_{a.name}"
    if not (run / "model.safetensors").is_file():
        train_vae(Q, P["base"]["manifest"], run)

    timing = []                                     # same-conditions step time: both discriminators, alternating
    for r in range(a.time_repeats):
        for s, params in (("reference", P), (a.name, Q)):
            timing.append({"run": s, "repeat": r,
                           "s_per_gan_step": loop_seconds(params, P["base"]["manifest"], a.time_steps,
                                                          OUT / "vae_timing")})
    timing = pd.DataFrame(timing).groupby("run", sort=False)["s_per_gan_step"].agg(["mean", "min", "max"])

    waves, sr, _ = read_split(P["base"]["manifest"], "test", a.clips)
    ev = make_evaluator(P, "base", save=False)
    real = ev.embed(waves, sr)
    systems = {"reference": load_vae(a.reference).eval(), a.name: load_vae(run).eval()}
    clips, emb = {}, {}
    with torch.no_grad():
        for s, vae in systems.items():
            clips[s], recons = per_clip(vae, waves, sr, P["vae"])
            emb[s] = ev.embed(recons, sr)
    A, B = a.name, "reference"
    cells = [paired_diff_ci(clips[A]["mel"], clips[B]["mel"], direction=-1, name="mel distance"),
             paired_diff_ci(clips[A]["si_sdr"], clips[B]["si_sdr"], direction=1, name="SI-SDR (dB)")]
    sigma = float(ev.reference()["sigma"])
    for m in ("FAD", "MMD"):
        cells.append(set_metric_diff_ci(emb[A]["audio"], emb[B]["audio"], real["audio"], direction=beats(m),
                                        metric=m, name=f"{m} of reconstructions vs originals",
                                        mmd_sigma=sigma if m == "MMD" else None))
    rows = [{"cell": c.name, a.name: c.values[0], "reference": c.values[1], "A - B": c.estimate, "lo": c.lo,
             "hi": c.hi, "n": c.n, "variant beats reference": c.verdict} for c in cells]
    table = pd.DataFrame(rows)
    runs = {a.name: run, "reference": Path(a.reference)}
    info = pd.DataFrame([{"run": s, "periods": Q["vae"]["periods"] if s == a.name else P["vae"]["periods"],
                          "fft_sizes": Q["vae"]["fft_sizes"] if s == a.name else P["vae"]["fft_sizes"],
                          "train_s": train_seconds(d), "s_per_gan_step": timing.loc[s, "mean"],
                          **curve_summary(d)} for s, d in runs.items()])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"vae_discriminator_{a.name}.csv", index=False)
    (out / f"vae_discriminator_{a.name}.md").write_text(
        f"VAE with discriminator `{a.name}` vs the committed VAE, {len(waves)} test clips (posterior-mean "
        f"reconstructions; A - B = {a.name} - reference, 95% paired bootstrap; verdict by `eval.claims`).\n\n"
        + table.to_markdown(index=False, floatfmt=".4g") + "\n\nRuns (train_s: wall time of the training run "
        "logged by the shared loop, this machine, at different times; s_per_gan_step: the same loop timed here, both "
        f"discriminators alternating, {a.time_repeats} x {a.time_steps} steps each, mean; val_mel: the learning curve's multi-scale mel distance on "
        "16 validation clips):\n\n" + info.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(table.to_string(index=False))
    print(info.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
