"""Import any folder of audio + a CSV of captions (e.g. Song Describer) into the corpus manifest format.

    python -m presto_lib.stages.corpus folder AUDIO_DIR captions.csv --out data/corpus_user [--profile cpu]

The CSV needs `path` (relative to AUDIO_DIR; `file`/`filename` also accepted) and `caption`; optional
columns `bpm` (estimated with librosa's tempo estimator when missing or empty), `piece_id`, `split`, `key`,
`instruments`, `license`, `source`. Files are cut into fixed-length clips (`common.clip_seconds`),
loudness-normalised, and near-silent clips dropped. An unreadable audio file raises a ValueError naming it.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..audio import crop_or_pad, load_audio, save_audio
from .corpus import MANIFEST_COLUMNS, prepare_clip, write_csv_atomic
from .midi import slugify
from .select import stable_hash

__all__ = ["import_audio_folder", "estimate_bpm"]

log = logging.getLogger(__name__)


def estimate_bpm(wav: np.ndarray, sample_rate: int) -> float:
    """Global tempo (BPM) of mono audio: librosa's onset-strength autocorrelation tempo estimate."""
    import librosa
    tempo = librosa.feature.tempo(y=np.asarray(wav, np.float32).reshape(-1), sr=sample_rate, aggregate=np.median)
    return float(np.round(np.atleast_1d(tempo)[0], 1))


def _split_for(piece_id: str, fractions: dict, seed: int) -> str:
    u = stable_hash(seed, "folder-split", piece_id) / 2.0 ** 63
    f_test, f_valid = float(fractions.get("test", 0.1)), float(fractions.get("valid", 0.1))
    return "test" if u < f_test else "valid" if u < f_test + f_valid else "train"


def import_audio_folder(audio_dir: str | os.PathLike, captions_csv: str | os.PathLike, out_dir: str | os.PathLike,
                        params: dict, max_clips_per_file: int | None = None, on_error: str = "raise",
                        progress: bool = True) -> Path:
    """Clips + manifest.csv in `out_dir` from `audio_dir` and its captions CSV -> Path of manifest.csv."""
    import pandas as pd
    from tqdm import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder {audio_dir} not found")
    table = pd.read_csv(captions_csv, keep_default_na=False, dtype=str)
    col = next((c for c in ("path", "file", "filename") if c in table.columns), None)
    if col is None or "caption" not in table.columns:
        raise ValueError(f"{captions_csv} needs a 'path' (or 'file'/'filename') column and a 'caption' column; "
                         f"it has {list(table.columns)}")
    common, cfg = params["common"], params.get("corpus", {})
    sr, clip_s, seed = int(common["sample_rate"]), float(common["clip_seconds"]), int(common["seed"])
    n = int(round(clip_s * sr))
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / "audio.partial"
    shutil.rmtree(partial, ignore_errors=True)
    rows, skipped = [], []
    try:
        for _, rec in tqdm(table.iterrows(), total=len(table), desc="importing audio", disable=not progress,
                           mininterval=3):
            file = audio_dir / rec[col]
            try:
                wav, _ = load_audio(file, sample_rate=sr, mono=True)
            except ValueError as e:
                if on_error == "raise":
                    raise
                log.warning("skipped %s: %s", file, e)
                skipped.append({"piece_id": rec[col], "source": str(file), "reason": str(e)})
                continue
            piece_id = rec.get("piece_id") or slugify(Path(rec[col]).with_suffix("").as_posix())
            bpm = float(rec["bpm"]) if str(rec.get("bpm", "")).strip() else estimate_bpm(wav[0], sr)
            split = rec.get("split") or _split_for(piece_id, cfg.get("splits", {}), seed)
            if split not in ("train", "valid", "test"):
                raise ValueError(f"{captions_csv}: row for {rec[col]} has unknown split {split!r}")
            n_clips = max(1, wav.shape[1] // n) if wav.shape[1] >= n // 4 else 0
            for j in range(min(n_clips, max_clips_per_file or n_clips)):
                clip, _ = prepare_clip(crop_or_pad(wav, n, j * n)[0], sr, cfg)
                if clip is None:
                    continue
                rel = Path("audio") / piece_id / f"c{j}.wav"
                save_audio(partial / piece_id / rel.name, clip, sr)
                rows.append(dict(path=rel.as_posix(), piece_id=piece_id, split=split, caption=rec["caption"], bpm=bpm,
                                 key=rec.get("key", ""), instruments=rec.get("instruments", ""), duration_s=n / sr,
                                 sample_rate=sr, source=rec.get("source") or f"audio:{rec[col]}",
                                 license=rec.get("license", "user-supplied"), style="user_audio", title="", composer="",
                                 meter="", semitones=0, tempo_factor=1.0, accompanied=False, render=0, clip=j,
                                 group=piece_id))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not rows:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"no usable clips in {audio_dir}")
    shutil.rmtree(out_dir / "audio", ignore_errors=True)
    os.replace(partial, out_dir / "audio")
    write_csv_atomic(out_dir / "skipped.csv", skipped, ["piece_id", "source", "reason"])
    return write_csv_atomic(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
