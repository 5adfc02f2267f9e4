"""LAION-CLAP (the paper's metric backbone, Wu et al. 2023) through transformers' ClapModel, from a local folder.

The paper's FAD / MMD / CLAP score use the LAION-CLAP *music* checkpoint. Its weights ship in no package and
this project never touches the network, so this backbone runs only when the user provides a local folder in
transformers' `save_pretrained` layout (config.json + weights + tokenizer + preprocessor_config.json), e.g.
`laion/larger_clap_music` downloaded elsewhere. Without one, tables use the offline backbones (musicnn for
FAD/MMD/PRDC, corpus CLAP for the CLAP score) and say so.

Windowing (fadtk's rule for LAION-CLAP): 48 kHz audio, int16-quantised as LAION-CLAP's examples do, cut into
10 s windows with a 1 s hop (evenly spread, last window ending at the clip's end); a clip under 10 s is one
window that the CLAP feature extractor repeat-pads. The clip embedding is the mean of the window embeddings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from presto_lib.eval.embeddings import AudioEmbedder, window_starts

NOT_AVAILABLE = ("LAION-CLAP is not available offline: no local checkpoint folder at {path!r}. Download "
                 "`laion/larger_clap_music` (transformers format) on a machine with network access, copy the "
                 "folder here and pass its path; until then use the offline backbones ('musicnn', 'corpus_clap').")


def check_clap_dir(path: str | Path | None) -> Path:
    """A usable local CLAP folder (config.json + weights), or a clear FileNotFoundError saying it is absent."""
    if path is None or not Path(path).expanduser().is_dir():
        raise FileNotFoundError(NOT_AVAILABLE.format(path=None if path is None else str(path)))
    p = Path(path).expanduser()
    if not (p / "config.json").is_file() or not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise FileNotFoundError(NOT_AVAILABLE.format(path=str(p)) + " (the folder lacks config.json or weights)")
    return p


def _features(out) -> torch.Tensor:
    """Projected embeddings from get_*_features (a Tensor in transformers 4, an output object in 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def quantize_int16(x: np.ndarray) -> np.ndarray:
    """Round-trip through int16, as LAION-CLAP's reference code does before embedding."""
    return (np.round(np.clip(x, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


class ClapEmbedder(AudioEmbedder):
    """LAION-CLAP audio + text towers from a local folder; `embed_audio` / `embed_text` give unit vectors."""

    def __init__(self, path: str | Path | None = None, win_s: float = 10.0, hop_s: float = 1.0,
                 batch_size: int = 8, device: str = "cpu"):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        self.path = check_clap_dir(path)
        self.model = ClapModel.from_pretrained(self.path, local_files_only=True).to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.extractor = ClapFeatureExtractor.from_pretrained(self.path, local_files_only=True)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.dim = int(self.model.config.projection_dim)
        self.win, self.hop = int(win_s * self.sample_rate), int(hop_s * self.sample_rate)
        self.batch_size, self.device, self.name = batch_size, torch.device(device), "clap"
        # a non-fusion model takes one mel channel: ask the extractor for plain (non-"fusion") features; windows
        # are never longer than 10 s, so its truncation mode never cuts anything
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"

    @torch.no_grad()
    def _embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """CLAP audio embeddings of a list of <= 10 s windows, batched."""
        out = []
        for i in range(0, len(windows), self.batch_size):
            feats = self.extractor(windows[i:i + self.batch_size], sampling_rate=self.sample_rate,
                                   truncation=self.truncation, padding="repeatpad", return_tensors="pt")
            feats = {k: v.to(self.device) for k, v in feats.items() if k in ("input_features", "is_longer")}
            out.append(_features(self.model.get_audio_features(**feats)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()

    def embed_clip_windows(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Per-window embeddings of 48 kHz clips (10 s windows, 1 s hop)."""
        wins, counts = [], []
        for c in clips:
            c = quantize_int16(c)
            starts = window_starts(len(c), self.win, self.hop)
            wins += [c[s:s + self.win] for s in starts]
            counts.append(len(starts))
        return np.split(self._embed_windows(wins), np.cumsum(counts)[:-1])

    @torch.no_grad()
    def embed_text(self, captions: list[str]) -> np.ndarray:
        """Unit-norm CLAP text embeddings [N, dim]."""
        if isinstance(captions, str) or len(captions) == 0:
            raise ValueError("captions must be a non-empty list of strings")
        out = []
        for i in range(0, len(captions), 64):
            tok = self.tokenizer(list(captions[i:i + 64]), padding=True, truncation=True, max_length=77,
                                 return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            out.append(_features(self.model.get_text_features(**tok)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()
