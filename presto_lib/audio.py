"""The one place for audio I/O: load/save (atomic), resample, mel spectrogram, loudness and small helpers.

Waveforms are numpy float32 arrays shaped [C, T] (channels first) unless a function says it takes a Tensor.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

from presto_lib.atomic import atomic_path

if TYPE_CHECKING:
    import torch

__all__ = [
    "load_audio", "save_audio", "resample", "mel_spectrogram", "mel_filterbank", "loudness_normalize",
    "loudness", "rms_db", "is_silent", "crop_or_pad", "to_channels_first",
]

# ---- shapes ----


def to_channels_first(wav: np.ndarray) -> np.ndarray:
    """Return `wav` as float32 [C, T]; a 1-D input becomes [1, T]."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav[None, :]
    if wav.ndim != 2:
        raise ValueError(f"expected a waveform shaped [T] or [C, T], got shape {wav.shape}")
    return wav


# ---- load / save ----


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               mono: bool = True) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 [C, T]; optionally resample (soxr) and downmix to mono."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ValueError(f"cannot read audio file {path}: {e}") from e
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty (0 samples)")
    wav = np.ascontiguousarray(data.T)
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"audio file {path} contains NaN or Inf samples")
    if mono and wav.shape[0] > 1:
        wav = wav.mean(axis=0, keepdims=True)
    if sample_rate is not None and int(sample_rate) != sr:
        wav, sr = resample(wav, sr, int(sample_rate)), int(sample_rate)
    return wav.astype(np.float32, copy=False), int(sr)


def save_audio(path: str | os.PathLike, wav: "np.ndarray | torch.Tensor", sample_rate: int,
               subtype: str = "PCM_16") -> Path:
    """Write [C, T] (or [T]) audio as WAV atomically: temp file in the same folder, then rename."""
    if hasattr(wav, "detach"):  # a torch Tensor (torch is imported lazily: the corpus workers never need it)
        wav = wav.detach().cpu().numpy()
    wav = to_channels_first(wav)
    if wav.shape[1] == 0:
        raise ValueError(f"refusing to write empty audio to {path}")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"refusing to write NaN/Inf audio to {path}")
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(wav, -1.0, 1.0).T, int(sample_rate), subtype=subtype, format="WAV")
    return Path(path)


# ---- resampling ----


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample [C, T] (or [T]) float audio with soxr (high quality); shape kind is preserved."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    wav = np.asarray(wav, dtype=np.float32)
    if sr_in == sr_out:
        return wav
    if wav.ndim == 1:
        return soxr.resample(wav, sr_in, sr_out, quality="HQ").astype(np.float32)
    out = soxr.resample(np.ascontiguousarray(to_channels_first(wav).T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1).T)


# ---- mel spectrogram (differentiable) ----


@lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> "torch.Tensor":
    import librosa
    import torch
    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels,
                                                fmin=fmin, fmax=fmax)).float()


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> "torch.Tensor":
    """The librosa (Slaney) mel filterbank as a Tensor [n_mels, n_fft // 2 + 1]."""
    return _mel_basis(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax).clone()


def mel_spectrogram(wav: "torch.Tensor | np.ndarray", sample_rate: int, n_fft: int = 1024,
                    hop_length: int = 256, n_mels: int = 80, log: bool = True, fmin: float = 0.0,
                    fmax: float | None = None, power: float = 2.0, clamp: float = 1e-5,
                    center: bool = True, pad_mode: str = "constant") -> "torch.Tensor":
    """Mel spectrogram of [..., T] audio -> [..., n_mels, frames]; differentiable (torch.stft).

    Matches `librosa.feature.melspectrogram` (Hann window, zero padding when centred, librosa >= 0.10's
    default); with `log=True` returns `log(clamp(mel, min=clamp))`.
    """
    import torch

    x = torch.as_tensor(wav)
    if not x.is_floating_point():
        x = x.float()
    if x.shape[-1] < 1:
        raise ValueError(f"mel_spectrogram needs a non-empty last (time) axis, got shape {tuple(x.shape)}")
    batch = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if center and pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
        raise ValueError(f"signal of {x.shape[-1]} samples too short for n_fft={n_fft} with reflect padding")
    if not center and x.shape[-1] < n_fft:
        raise ValueError(f"signal of {x.shape[-1]} samples shorter than n_fft={n_fft} (center=False)")
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop_length, window=window, center=center,
                      pad_mode=pad_mode, return_complex=True)
    mag = spec.abs().pow(power) if power != 1.0 else spec.abs()
    basis = _mel_basis(int(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax).to(x.device, x.dtype)
    mel = torch.matmul(basis, mag)  # [B, n_mels, frames]
    if log:
        mel = torch.log(torch.clamp(mel, min=clamp))
    return mel.reshape(*batch, n_mels, mel.shape[-1])


# ---- loudness and level helpers ----


def rms_db(wav: np.ndarray) -> float:
    """RMS level in dBFS (floor -200 dB for digital silence)."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.size == 0:
        return -200.0
    rms = float(np.sqrt(np.mean(wav ** 2)))
    return 20.0 * np.log10(max(rms, 1e-10))


def is_silent(wav: np.ndarray, threshold_db: float = -50.0) -> bool:
    """True when the RMS level is below `threshold_db` dBFS."""
    return rms_db(wav) < threshold_db


def loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770, LUFS) of [C, T] audio; -inf for silence or too-short input."""
    import pyloudnorm as pyln
    wav = to_channels_first(wav)
    if wav.shape[1] < int(0.4 * sample_rate) + 1 or is_silent(wav, -120.0):
        return float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pyln.Meter(sample_rate).integrated_loudness(wav.T.astype(np.float64)))


def loudness_normalize(wav: np.ndarray, sample_rate: int, target_lufs: float = -23.0,
                       peak: float = 0.99) -> np.ndarray:
    """Scale [C, T] audio to `target_lufs` integrated loudness, then limit the peak to `peak`.

    Silent input is returned unchanged; input shorter than one 400 ms gating block falls back to RMS level.
    """
    wav = to_channels_first(wav)
    if is_silent(wav, -120.0):
        return wav.copy()
    lufs = loudness(wav, sample_rate)
    if not np.isfinite(lufs):  # too short (or fully gated): approximate LUFS by RMS dBFS
        lufs = rms_db(wav)
    out = wav * np.float32(10.0 ** ((target_lufs - lufs) / 20.0))
    m = float(np.max(np.abs(out)))
    if m > peak:
        out = out * np.float32(peak / m)
    return out.astype(np.float32, copy=False)


def crop_or_pad(wav: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Fixed length along the last axis: take `length` samples from `offset`, zero-pad at the end if short."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    wav = np.asarray(wav)
    seg = wav[..., max(offset, 0): max(offset, 0) + length]
    if seg.shape[-1] < length:
        pad = [(0, 0)] * (seg.ndim - 1) + [(0, length - seg.shape[-1])]
        seg = np.pad(seg, pad)
    return seg
