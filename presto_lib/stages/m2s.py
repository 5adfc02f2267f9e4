"""Stage `m2s` (paper sec. 4.1, A.6: MusicHiFi's mono-to-stereo): stereo renders of the corpus, then M2S training.

    python -m presto_lib.stages.m2s [--restart]

The corpus builder re-renders the `m2s.styles` pieces in stereo (General MIDI pans the parts over
[-pan_spread, pan_spread]; clips [2, T], loudness set on the mid), then `models.m2s.MonoToStereo` learns the side
signal from the mid with the shared loop (`presto_lib.train`, EMA). Quality on the valid split: `side_snr_db`
(0 dB = no better than dual mono). Writes

    data/m2s/corpus/            stereo clips + manifest.csv (the corpus layout)
    data/m2s/run/               checkpoints + log.csv;   data/m2s/model/   EMA weights + config (`artefacts.load_m2s`)
    <results>/tables/m2s.{csv,md}, <results>/metrics/m2s.json
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from presto_lib.stages.common import resume_or_restart, start, write_text

__all__ = ["build_stereo_corpus", "train_m2s", "evaluate_m2s", "main"]

CORPUS_KEYS = ("styles", "max_pieces_per_style", "max_clips_per_style", "pan_spread")


def build_stereo_corpus(P: dict, out_dir: Path) -> Path:
    """Stereo renders of the `m2s.styles` pieces with the corpus group's settings -> manifest.csv."""
    from presto_lib.data.corpus import build_corpus

    M = P["m2s"]
    corpus = {**P["corpus"], "styles": list(M["styles"]), "max_pieces_per_style": int(M["max_pieces_per_style"]),
              "max_clips_per_style": int(M["max_clips_per_style"]), "stereo": True,
              "pan_spread": float(M["pan_spread"]), "midi_dirs": []}
    return build_corpus(out_dir, {"common": P["common"], "corpus": corpus}, progress=False)


def train_m2s(P: dict, manifest: Path, out_dir: Path, restart: bool | None = None):
    """Train (or resume) the M2S model on the stereo train split with `presto_lib.train`; returns the EMA model."""
    import torch

    from presto_lib.checkpoint import save_checkpoint
    from presto_lib.data import ClipDataset
    from presto_lib.models.m2s import M2SConfig, M2SStep, MonoToStereo
    from presto_lib.train import TrainConfig, train

    M, C = P["m2s"], P["common"]
    sr = int(C["sample_rate"])
    resume_or_restart(out_dir / "run", {"m2s": M, "common": C}, restart=restart)
    ds = ClipDataset(manifest, "train", sample_rate=sr, clip_samples=int(round(C["clip_seconds"] * sr)),
                     random_crop=True, seed=int(C["seed"]), mono=False)
    torch.manual_seed(int(C["seed"]))
    cfg = M2SConfig(n_fft=int(M["n_fft"]), hop_length=int(M["hop_length"]), channels=int(M["channels"]),
                    layers=int(M["layers"]))
    model = MonoToStereo(cfg)
    tc = TrainConfig(run_dir=str(out_dir / "run"), max_steps=int(M["steps"]), batch_size=int(M["batch_size"]),
                     ckpt_every=int(M["ckpt_every"]), log_every=int(M["log_every"]), ema_decay=float(M["ema_decay"]),
                     grad_clip=float(M["grad_clip"]), seed=int(C["seed"]), amp="none", desc="m2s")
    step = M2SStep(sr, float(M["side_weight"]), float(M["stft_weight"]), segment=int(round(M["segment_s"] * sr)))
    ctx = train(step, modules={"m2s": model}, optimizers={"m2s": torch.optim.AdamW(model.parameters(), lr=M["lr"])},
                dataset=ds, cfg=tc, ema=["m2s"])
    final = ctx.ema["m2s"].cpu().eval()
    if ctx.is_main:
        save_checkpoint(out_dir / "model", final.state_dict(), {"m2s": asdict(cfg), "sample_rate": sr,
                                                                "steps": int(ctx.step)})
    return final


def evaluate_m2s(model, manifest: Path, sample_rate: int) -> pd.DataFrame:
    """Per-clip side SNR (dB) of the model and of dual mono (0 dB) on the valid split (test when valid is empty)."""
    import torch

    from presto_lib.data import ClipDataset
    from presto_lib.models.m2s import mid_side, side_snr_db

    try:
        ds, split = ClipDataset(manifest, "valid", sample_rate=sample_rate, mono=False), "valid"
    except ValueError:            # no valid clips (a tiny smoke render)
        ds, split = ClipDataset(manifest, "test", sample_rate=sample_rate, mono=False), "test"
    rows = []
    with torch.no_grad():
        for i in range(len(ds)):
            x = ds[i]["wave"][None].float()
            mid, side = mid_side(x)
            pred = model(mid)
            rows.append({"split": split, "clip": i, "piece_id": ds[i]["piece_id"],
                         "side_snr_db": float(side_snr_db(pred, x)[0]),
                         "side_to_mid_db": float(10 * torch.log10(side.pow(2).sum().clamp_min(1e-12)
                                                                  / mid.pow(2).sum().clamp_min(1e-12)))})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Render, train, evaluate."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.m2s", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--restart", action="store_true", help="restart a run whose params changed")
    a = ap.parse_args(argv)
    S = start("m2s", a.params)
    out = Path(S.P["m2s"]["out_dir"])
    shutil.rmtree(out / "corpus", ignore_errors=True)
    manifest = build_stereo_corpus(S.P, out / "corpus")
    model = train_m2s(S.P, manifest, out, restart=a.restart or None)
    per_clip = evaluate_m2s(model, manifest, int(S.P["common"]["sample_rate"]))
    summary = {"clips": int(len(pd.read_csv(manifest))), "eval_split": str(per_clip["split"].iloc[0]),
               "eval_clips": int(len(per_clip)), "side_snr_db_mean": float(per_clip["side_snr_db"].mean()),
               "side_snr_db_median": float(per_clip["side_snr_db"].median()),
               "side_to_mid_db_mean": float(per_clip["side_to_mid_db"].mean()),
               "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    per_clip.to_csv(S.tables / "m2s.csv", index=False)
    write_text(S.tables / "m2s.md", "Side-signal SNR of the M2S model (0 dB = dual mono), per clip:\n\n"
               + per_clip.to_markdown(index=False, floatfmt=".3g") + "\n\n"
               + pd.DataFrame([summary]).to_markdown(index=False, floatfmt=".3g") + "\n")
    S.write_metrics("m2s", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
