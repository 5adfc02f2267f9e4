#!/usr/bin/env python
"""What does notebook 03's BPM check give on audio that follows BPM exactly? Real renders at the two target tempi.

    python benchmarks/bpm_reference.py --out results/benchmarks                 # after `make repro`, ~30 s
    python benchmarks/bpm_reference.py --pieces 2 --seeds 1 --out /tmp/bpmref   # a quick look

The base model's BPM check (`base` stage) generates the same tempo-free caption and seed at 80 and 130 BPM and
counts the pairs whose faster target librosa estimates faster (#15 asks for >= 14 of 16). This script asks what
that check can read at all on this corpus: it takes the same test pieces (one per piece, in manifest order),
arranges one excerpt of each exactly as the corpus builder does, and renders that one arrangement twice, at each
target tempo (the same notes and instruments; only the MIDI tempo differs), then cuts the first clip, normalises
its loudness as the corpus does and runs the check's estimators (`eval.tempo`: tempo estimate, onset rate) and
pairing (`bpm_pairs`) on it. Seeds pick other excerpts and arrangements of the same piece.

So the win count here is the ceiling of the check's win count for a model that follows BPM perfectly, and the
median ratios are what such a model's clips would show. Writes bpm_reference.csv (one row per pair) and .md
(the check's pairs, all pairs, and the committed base model's table beside them) to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from presto_lib.data.select import PieceTask, stable_hash


def task_from_row(row: Mapping) -> PieceTask:
    """The corpus task of a manifest row: `source` is 'music21:<corpus path>[#<number>]' (the bundled corpus)."""
    kind, _, rest = str(row["source"]).partition(":")
    if kind != "music21":
        raise ValueError(f"only music21 sources can be re-rendered here, got {row['source']!r}")
    path, _, number = rest.partition("#")
    return PieceTask(piece_id=str(row["piece_id"]), style=str(row["style"]), kind="music21", path=path,
                     number=int(number) if number else None, title=str(row.get("title", "") or ""),
                     composer=str(row.get("composer", "") or ""))


def tempo_renders(task: PieceTask, cfg: dict, bpms: Sequence[float], seed: int) -> list[np.ndarray] | None:
    """One excerpt of the piece, arranged once (style, instruments, accompaniment, drums as the corpus draws them),
    rendered at each BPM: clips [T] of `clip_seconds` from the excerpt's start, loudness-normalised; None when the
    piece is too short or a clip is silent. The excerpt is planned at the fastest BPM, so every clip is full."""
    from presto_lib.data.arrange import plan_performance
    from presto_lib.data.corpus import prepare_clip
    from presto_lib.data.midi import beat_ql, load_music21_piece, tile
    from presto_lib.data.render import render_performances
    from presto_lib.data.styles import STYLES, USER_STYLE

    piece = load_music21_piece(task.path, task.number, task.style, task.piece_id)
    style = STYLES.get(task.style, USER_STYLE)
    sr, clip_s, fast = int(cfg["sample_rate"]), float(cfg["clip_seconds"]), float(max(bpms))
    need_ql = clip_s * fast * beat_ql(piece.meter) / 60.0 * 1.3     # as the corpus builder tiles short pieces
    if piece.length_ql < need_ql:
        piece = tile(piece, int(np.ceil(need_ql / max(piece.length_ql, 1e-6))))
    rng = np.random.default_rng([int(seed), stable_hash("bpm_reference", task.piece_id)])
    perf = plan_performance(piece, style, rng, fast, 1, clip_s)
    if perf is None:
        return None
    perfs = [dataclasses.replace(perf, bpm=float(b), tempo_factor=float(b) / fast) for b in bpms]   # same notes
    audio = render_performances(perfs, sr, cfg.get("soundfont"), float(cfg.get("gain", 0.5)))
    n, clips = int(round(clip_s * sr)), []
    for x, _ in audio:
        clip, _why = prepare_clip(x[..., :n], sr, cfg) if x.shape[-1] >= n else (None, "short")
        if clip is None:
            return None
        clips.append(np.asarray(clip, np.float32).reshape(-1))
    return clips


def reference_rows(rows: pd.DataFrame, cfg: dict, bpms: Sequence[float], seeds: Sequence[int]) -> pd.DataFrame:
    """Rows (caption, seed, target, estimated, onset_rate, piece_id) of real renders, as `eval.tempo.bpm_following`
    gives for a model; the caption is the manifest's (each piece once)."""
    from presto_lib.eval.tempo import estimate_tempo, onset_rate

    sr, out = int(cfg["sample_rate"]), []
    for _, r in rows.iterrows():
        for s in seeds:
            clips = tempo_renders(task_from_row(r), cfg, bpms, int(s))
            if clips is None:
                continue
            out += [{"caption": r["caption"], "seed": int(s), "target": float(b), "piece_id": r["piece_id"],
                     "estimated": estimate_tempo(c, sr), "onset_rate": onset_rate(c, sr)} for b, c in zip(bpms, clips)]
    return pd.DataFrame(out, columns=["caption", "seed", "target", "piece_id", "estimated", "onset_rate"])


def summarise(pairs: pd.DataFrame, label: str) -> dict:
    """Win count, median tempo-estimate ratio and onset-rate read of a `bpm_pairs` table."""
    onsets = "onset_ratio" in pairs.columns      # tables written before the onset columns have none
    return {"audio": label, "pairs": len(pairs), "tempo wins": int(pairs.win.sum()),
            "median est ratio": float(pairs.ratio.median()),
            "onset wins": int((pairs.onset_ratio > 1).sum()) if onsets else None,
            "median onset ratio": float(pairs.onset_ratio.median()) if onsets else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--pieces", type=int, default=32, help="first N distinct test pieces (the check uses the first "
                                                            "base.bpm_check.prompts of them)")
    ap.add_argument("--seeds", type=int, default=None, help="default: base.bpm_check.seeds")
    ap.add_argument("--base-table", default="results/tables/base_bpm_following.csv")
    ap.add_argument("--out", default="results/benchmarks")
    a = ap.parse_args(argv)

    from presto_lib.config import load_params
    from presto_lib.data.corpus import corpus_config
    from presto_lib.eval.tempo import bpm_pairs
    from presto_lib.data.datasets import read_manifest

    P = load_params(a.params)
    bc, cfg = P["base"]["bpm_check"], corpus_config(P)
    bpms, check_n = [float(b) for b in bc["bpms"]], int(bc["prompts"])
    seeds = range(int(a.seeds if a.seeds is not None else bc["seeds"]))
    pieces = read_manifest(P["base"]["manifest"], "test").drop_duplicates("piece_id").head(a.pieces)
    rows = reference_rows(pieces, cfg, bpms, seeds)
    lo, hi = min(bpms), max(bpms)
    pairs = bpm_pairs(rows, lo, hi).merge(rows[["caption", "piece_id"]].drop_duplicates(), on="caption")
    check_ids = list(pieces.piece_id[:check_n])
    table = [summarise(pairs[pairs.piece_id.isin(check_ids)], f"real renders, the check's {check_n} pieces"),
             summarise(pairs, f"real renders, {pairs.piece_id.nunique()} pieces")]
    if Path(a.base_table).is_file():
        table.append(summarise(pd.read_csv(a.base_table), f"base model ({a.base_table})"))
    table = pd.DataFrame(table)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out / "bpm_reference.csv", index=False)
    (out / "bpm_reference.md").write_text(
        f"BPM check on real renders (profile `{P['profile']}`, `benchmarks/bpm_reference.py`): one excerpt per "
        f"test piece and seed, arranged once and rendered at {lo:.0f} and {hi:.0f} BPM (same notes, only the "
        f"tempo differs), estimated as notebook 03 estimates generated clips. A model that follows BPM exactly "
        f"scores what these renders score. Target ratio {hi / lo:.3f}.\n\n"
        + table.round(3).to_markdown(index=False) + "\n\nPer pair:\n\n"
        + pairs.drop(columns=["caption"]).round(3).to_markdown(index=False) + "\n")
    print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
