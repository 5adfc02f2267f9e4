"""MSD-musicnn (Pons & Serra 2019) ported to PyTorch, weights read from the `musicnn` wheel's TF checkpoint.

The network (musicnn `models.build_musicnn`, MSD variant: 64 mid-end filters, 200 back-end units):
  input  [B, 187, 96] log-mel patch (3 s at 16 kHz, hop 256, n_fft 512; log10(10000 mel + 1))
  front  BN -> timbral convs (7x38, 7x67; 204 maps) + temporal convs (128/64/32x1, 'same'; 51 maps), each
         ReLU -> BN -> max over frequency, concatenated to 561 channels per frame
  mid    three 1-D convs over time (k=7, 64 maps, ReLU -> BN), the last two residual; dense-connected: 753 ch.
  back   max + mean over time (interleaved, 1506) -> BN -> dense 200 ReLU -> BN ('penultimate') -> dense 50 tags
TF layouts: conv kernels are [kh, kw, in, out] over NHWC with H = time, W = mel; BN eps is 1e-3.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from presto_lib.audio import mel_spectrogram
from presto_lib.eval.tf_checkpoint import load_tf_checkpoint

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH_FRAMES = 187               # librosa.time_to_frames(3 s) + 1, as in musicnn's extractor
FEATURES = ("penultimate", "max_pool", "mean_pool", "pooled", "taggram")
BN_EPS = 1e-3                    # tf.compat.v1.layers.batch_normalization default


# ---- weights ----

def checkpoint_prefix() -> str:
    """The MSD_musicnn checkpoint prefix inside the installed `musicnn` wheel (files `.index`, `.data-*`)."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("musicnn")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `musicnn` package is not installed (pip install --no-deps musicnn==0.1.0)")
    prefix = str(Path(list(spec.submodule_search_locations)[0]) / "MSD_musicnn") + "/"
    if not Path(prefix + ".index").is_file():
        raise FileNotFoundError(f"MSD_musicnn checkpoint not found at {prefix}")
    return prefix


def _bn(n: int) -> nn.BatchNorm1d:
    """Inference BatchNorm with TF's epsilon (running stats only; BatchNorm1d/2d share parameter names)."""
    return nn.BatchNorm1d(n, eps=BN_EPS)


# ---- network ----

class MusiCNN(nn.Module):
    """MSD-musicnn in PyTorch; `forward(mel [B, 187, 96]) -> dict` of the extractor's named features."""

    def __init__(self, n_mid: int = 64, n_back: int = 200, n_classes: int = 50, n_mels: int = N_MELS):
        super().__init__()
        self.bn_in = _bn(1)
        self.timbral = nn.ModuleList([nn.Conv2d(1, 204, (7, int(f * n_mels))) for f in (0.4, 0.7)])
        self.temporal = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32)])
        self.front_bn = nn.ModuleList([_bn(204), _bn(204), _bn(51), _bn(51), _bn(51)])
        front = 2 * 204 + 3 * 51
        self.mid = nn.ModuleList([nn.Conv1d(c, n_mid, 7, padding=3) for c in (front, n_mid, n_mid)])
        self.mid_bn = nn.ModuleList([_bn(n_mid) for _ in range(3)])
        self.pool_bn = _bn(2 * (front + 3 * n_mid))
        self.dense = nn.Linear(2 * (front + 3 * n_mid), n_back)
        self.dense_bn = _bn(n_back)
        self.out = nn.Linear(n_back, n_classes)

    def _bn2d(self, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """Apply a channel BatchNorm to [B, C, H, W]."""
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def frontend(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, T, 96] -> [B, 561, T]: timbral + temporal maps, each max-pooled over frequency."""
        x = self._bn2d(self.bn_in, mel[:, None])                       # [B, 1, T, F]
        maps = []
        xt = F.pad(x, (0, 0, 3, 3))                                    # time-only zero pad ('same' in time)
        for conv in self.timbral:
            maps.append(F.relu(conv(xt)))
        for conv in self.temporal:
            k = conv.kernel_size[0]                                    # TF 'same': extra pad goes after
            maps.append(F.relu(conv(F.pad(x, (0, 0, (k - 1) // 2, k // 2)))))
        return torch.cat([self._bn2d(bn, m).amax(dim=3) for bn, m in zip(self.front_bn, maps)], dim=1)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of a batch of log-mel patches [B, T, 96] (T = 187 for the trained input length)."""
        if mel.ndim != 3 or mel.shape[-1] != N_MELS:
            raise ValueError(f"musicnn expects log-mel patches [B, T, {N_MELS}], got {tuple(mel.shape)}")
        front = self.frontend(mel)                                     # [B, 561, T]
        h1 = self.mid_bn[0](F.relu(self.mid[0](front)))
        h2 = self.mid_bn[1](F.relu(self.mid[1](h1))) + h1              # residual
        h3 = self.mid_bn[2](F.relu(self.mid[2](h2))) + h2
        feats = torch.cat([front, h1, h2, h3], dim=1)                  # dense connection: [B, 753, T]
        max_pool, mean_pool = feats.amax(dim=2), feats.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF concat on last axis, then flatten
        pen = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        logits = self.out(pen)
        return {"penultimate": pen, "max_pool": max_pool, "mean_pool": mean_pool, "pooled": pooled,
                "taggram": torch.sigmoid(logits), "logits": logits}


# ---- TF checkpoint -> state dict ----

def _conv2d_w(k: np.ndarray) -> torch.Tensor:
    """TF [kh, kw, in, out] -> torch Conv2d [out, in, kh, kw]."""
    return torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()


def _conv1d_w(k: np.ndarray) -> torch.Tensor:
    """TF mid-end kernel [7, C, 1, out] (a conv spanning all channels) -> torch Conv1d [out, C, 7]."""
    return torch.from_numpy(k[:, :, 0, :]).permute(2, 1, 0).contiguous()


def state_dict_from_tf(tf: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map TF variable names (creation order: conv2d, conv2d_1, ... / batch_normalization_N) to our modules."""
    sd: dict[str, torch.Tensor] = {}

    def bn(dst: str, i: int) -> None:
        src = "batch_normalization" + (f"_{i}" if i else "")
        for a, b in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                     ("running_var", "moving_variance")):
            sd[f"{dst}.{a}"] = torch.from_numpy(tf[f"{src}/{b}"])

    def conv(dst: str, i: int, conv1d: bool = False) -> None:
        src = "conv2d" + (f"_{i}" if i else "")
        sd[f"{dst}.weight"] = (_conv1d_w if conv1d else _conv2d_w)(tf[f"{src}/kernel"])
        sd[f"{dst}.bias"] = torch.from_numpy(tf[f"{src}/bias"])

    bn("bn_in", 0)
    for j in range(5):                                   # f74, f77, s1, s2, s3
        conv(f"timbral.{j}" if j < 2 else f"temporal.{j - 2}", j)
        bn(f"front_bn.{j}", j + 1)
    for j in range(3):
        conv(f"mid.{j}", 5 + j, conv1d=True)
        bn(f"mid_bn.{j}", 6 + j)
    bn("pool_bn", 9)
    bn("dense_bn", 10)
    for dst, src in (("dense", "dense"), ("out", "dense_1")):
        sd[f"{dst}.weight"] = torch.from_numpy(tf[f"{src}/kernel"].T.copy())
        sd[f"{dst}.bias"] = torch.from_numpy(tf[f"{src}/bias"])
    return sd


@lru_cache(maxsize=1)
def load_musicnn() -> MusiCNN:
    """MSD-musicnn with the wheel's trained weights, in eval mode (cached)."""
    model = MusiCNN()
    sd = state_dict_from_tf(load_tf_checkpoint(checkpoint_prefix()))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"musicnn weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval().requires_grad_(False)


# ---- preprocessing ----

def log_mel(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """musicnn's input representation of 16 kHz audio [..., T] -> [..., frames, 96].

    librosa power mel (hop 256, n_fft 512, 96 Slaney bands), cast to float16 as musicnn's extractor does,
    then log10(10000 x + 1).
    """
    mel = mel_spectrogram(torch.as_tensor(wav, dtype=torch.float32), SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                          n_mels=N_MELS, log=False)
    mel = mel.to(torch.float16).to(torch.float32)
    return torch.log10(10000.0 * mel + 1.0).transpose(-1, -2)
