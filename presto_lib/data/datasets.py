"""Reading a corpus manifest, and `ClipDataset`: fixed-length clips with caption, BPM and piece id."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..audio import crop_or_pad, load_audio

__all__ = ["REQUIRED_COLUMNS", "SPLITS", "read_manifest", "ClipDataset"]

REQUIRED_COLUMNS = ["path", "piece_id", "split", "caption", "bpm", "key", "instruments", "duration_s",
                    "sample_rate", "source", "license"]
SPLITS = ("train", "valid", "test")


def read_manifest(manifest: str | os.PathLike, split: str | None = None):
    """Load manifest.csv as a DataFrame (checked columns; `split=None` keeps every split)."""
    import pandas as pd

    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} not found (build it with `python -m presto_lib.stages.corpus build`)")
    df = pd.read_csv(manifest, keep_default_na=False, dtype={"piece_id": str, "caption": str, "key": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest {manifest} lacks columns {missing}")
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        df = df[df["split"] == split].reset_index(drop=True)
    return df


class ClipDataset:
    """Clips of one split: item = {"wave": Tensor[1, T], "caption": str, "bpm": float, "piece_id": str}.

    `sample_rate` resamples on load (default: the file's rate); `mono=False` keeps the file's channels ([C, T], the
    stereo renders the mono-to-stereo model trains on); `clip_samples` crops/pads to a fixed length,
    from a random offset when `random_crop` (seeded per item and epoch via `set_epoch`), else from the start.
    """

    def __init__(self, manifest: str | os.PathLike, split: str | None = "train", sample_rate: int | None = None,
                 clip_samples: int | None = None, random_crop: bool = False, seed: int = 0, mono: bool = True):
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        self.df = read_manifest(self.manifest, split)
        if len(self.df) == 0:
            raise ValueError(f"manifest {self.manifest} has no clips in split {split!r}")
        self.split, self.sample_rate, self.clip_samples = split, sample_rate, clip_samples
        self.random_crop, self.seed, self.epoch, self.mono = random_crop, seed, 0, bool(mono)

    def __len__(self) -> int:
        return len(self.df)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops (when `random_crop`) for a new epoch."""
        self.epoch = int(epoch)

    @property
    def captions(self) -> list[str]:
        """Every caption, in order."""
        return self.df["caption"].tolist()

    def __getitem__(self, i: int) -> dict:
        import torch

        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        row = self.df.iloc[i]
        wav, _ = load_audio(self.root / row["path"], sample_rate=self.sample_rate, mono=self.mono)
        if self.clip_samples:
            offset = 0
            if self.random_crop and wav.shape[1] > self.clip_samples:
                rng = np.random.default_rng([self.seed, self.epoch, i])
                offset = int(rng.integers(0, wav.shape[1] - self.clip_samples + 1))
            wav = crop_or_pad(wav, self.clip_samples, offset)
        return {"wave": torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)),
                "caption": str(row["caption"]), "bpm": float(row["bpm"]), "piece_id": str(row["piece_id"])}
