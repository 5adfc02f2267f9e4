"""Audio embedding backbones behind one interface: `embed_audio(waveforms, sample_rate) -> [N, D]`.

Windowing rules (each clip -> windows -> one embedding per window -> clip embedding = mean over windows):
  musicnn       16 kHz; 3 s log-mel patches (187 frames, the length MSD-musicnn was trained on) at most
                `hop_s` apart (default 3 s: musicnn's extractor default of non-overlapping patches), spread
                evenly so the first starts at 0 and the last ends at the clip's end (a 4 s clip -> 0-3 s and
                1-4 s; 32 s -> 11 patches); clips under 3 s are repeat-padded (musicnn's "repeat-pad").
  clap          48 kHz; 10 s windows, 1 s hop (fadtk's LAION-CLAP rule); shorter clips are one window that
                the CLAP feature extractor repeat-pads. See `presto_lib.eval.clap`.
  corpus_clap   the musicnn windows above, through a small audio tower trained on our corpus.
fadtk pools every window into the FAD Gaussian; we average windows per clip, so FAD, MMD, PRDC and the CLAP
score all see one vector per clip (PRDC and the CLAP score need that pairing anyway).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from presto_lib.audio import resample



# ---- input handling and windowing ----

def as_clips(waveforms, sample_rate: int, target_rate: int) -> list[np.ndarray]:
    """Waveforms ([N, T], [N, C, T] or a list of [T] / [C, T]) -> mono float32 1-D clips at `target_rate`."""
    if isinstance(waveforms, (np.ndarray, torch.Tensor)):
        arr = waveforms.detach().cpu().numpy() if isinstance(waveforms, torch.Tensor) else waveforms
        if arr.ndim not in (2, 3):
            raise ValueError(f"waveforms must be [N, T] or [N, C, T] (or a list of clips), got shape {arr.shape}")
        waveforms = list(arr)
    if len(waveforms) == 0:
        raise ValueError("no waveforms to embed")
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate}")
    clips = []
    for i, w in enumerate(waveforms):
        w = np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float32)
        if w.ndim == 2:
            w = w.mean(0)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"clip {i}: expected a non-empty [T] or [C, T] waveform, got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError(f"clip {i}: waveform contains NaN or inf")
        clips.append(resample(w, int(sample_rate), int(target_rate)) if sample_rate != target_rate else w)
    return clips


def window_starts(n: int, win: int, hop: int) -> list[int]:
    """Starts of windows of length `win` covering [0, n): evenly spaced at most `hop` apart, first at 0, last at n-win."""
    if win <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {win}, {hop}")
    if n <= win:
        return [0]
    k = math.ceil((n - win) / hop) + 1
    return [int(round(s)) for s in np.linspace(0, n - win, k)]


def repeat_pad(x: np.ndarray, n: int) -> np.ndarray:
    """Tile a 1-D clip until it is at least `n` samples long (unchanged when already long enough)."""
    return x if len(x) >= n else np.tile(x, math.ceil(n / len(x)))[:n]


# ---- the interface ----

class AudioEmbedder(ABC):
    """A backbone: `embed_audio(waveforms, sample_rate) -> np.ndarray [N, dim]` (one row per clip)."""

    name: str = "?"
    sample_rate: int = 16000
    dim: int = 0

    @abstractmethod
    def embed_clip_windows(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Per-window embeddings [W_i, dim] of clips already at `self.sample_rate`."""

    def embed_audio(self, waveforms, sample_rate: int) -> np.ndarray:
        """One embedding per clip: the mean of its window embeddings (float32 [N, dim])."""
        clips = as_clips(waveforms, sample_rate, self.sample_rate)
        return np.stack([w.mean(0) for w in self.embed_clip_windows(clips)]).astype(np.float32)


# ---- MSD-musicnn ----

class MusicnnEmbedder(AudioEmbedder):
    """MSD-musicnn features (PyTorch port); `layer` picks 'penultimate' (200-d, default) or the pooled mid-end."""

    sample_rate = 16000
    DIMS = {"penultimate": 200, "max_pool": 753, "mean_pool": 753, "pooled": 1506, "taggram": 50}

    def __init__(self, layer: str = "penultimate", hop_s: float = 3.0, batch_size: int = 32,
                 progress: bool = False):
        from presto_lib.eval.musicnn import HOP, PATCH_FRAMES
        if layer not in self.DIMS:
            raise ValueError(f"unknown musicnn layer {layer!r}; choose one of {sorted(self.DIMS)}")
        if hop_s <= 0:
            raise ValueError(f"hop_s must be > 0, got {hop_s}")
        self.layer, self.dim, self.batch_size, self.progress = layer, self.DIMS[layer], batch_size, progress
        self.name = "musicnn" if layer == "penultimate" else f"musicnn-{layer}"
        self.patch = PATCH_FRAMES
        self.hop_frames = max(1, int(round(hop_s * self.sample_rate / HOP)))
        self.min_samples = (PATCH_FRAMES - 1) * HOP                    # centred frames: 1 + T // hop >= 187

    def patches(self, clip: np.ndarray) -> torch.Tensor:
        """The log-mel patches [W, 187, 96] of one 16 kHz clip (repeat-padded when under 3 s)."""
        from presto_lib.eval.musicnn import log_mel
        mel = log_mel(repeat_pad(clip, self.min_samples))
        return torch.stack([mel[s:s + self.patch] for s in window_starts(len(mel), self.patch, self.hop_frames)])

    @torch.no_grad()
    def window_layers(self, clips: list[np.ndarray], layers: Sequence[str]) -> dict[str, list[np.ndarray]]:
        """Per-window features [W_i, D] of 16 kHz clips for several layers at once (one forward pass)."""
        from presto_lib.eval.musicnn import load_musicnn
        bad = set(layers) - set(self.DIMS)
        if bad:
            raise ValueError(f"unknown musicnn layers {sorted(bad)}; choose from {sorted(self.DIMS)}")
        net = load_musicnn()
        pats = [self.patches(c) for c in clips]
        counts = [len(p) for p in pats]
        flat = torch.cat(pats)
        out: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        for i in tqdm(range(0, len(flat), self.batch_size), desc="musicnn", disable=not self.progress,
                      leave=False):
            feats = net(flat[i:i + self.batch_size])
            for k in layers:
                out[k].append(feats[k])
        return {k: [e.numpy() for e in torch.cat(v).split(counts)] for k, v in out.items()}

    def embed_clip_windows(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Per-window features of this embedder's layer."""
        return self.window_layers(clips, [self.layer])[self.layer]
