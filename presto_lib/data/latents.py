"""Latent cache: encode the corpus once so diffusion training never runs the VAE or the text encoder.

Latent diffusion (paper sec. 4.1, A.1) trains the DiT on VAE latents. Encoding a clip costs more than a small
DiT step, and its text embedding never changes, so both are computed once per clip and stored:

    data/latents/meta.json              shapes, the latent normalisation, text encoder, per-split counts
    data/latents/<split>.safetensors    latents [N, C, T'] (normalised posterior means), optionally their
                                        posterior std, text [N, L, D], text_mask [N, L] bool, bpm [N], and
                                        text_notempo / text_notempo_mask: the caption without its tempo words
                                        (`data.captions.strip_tempo`; the base model trains on a share of them)
    data/latents/<split>.json           captions, piece_ids (row order = the manifest's order)

Normalisation: the VAE's stored scale alone gives unit variance *overall*, but a KL-VAE's channels can carry
large constant offsets, and the zero-padded first/last frames of every clip are large outliers, which together
hold most of that variance (the music then lives in a small residual). As EDM2 (Karras et al. 2024) does for its
latents, every channel is standardised with the train split's statistics, x = (scale z - mean_c) / std_c, here
robust ones (median, MAD) so that the edge frames do not set the scale (`LatentNorm`); `LatentCodec` wraps the
VAE so that encode/decode speak these units. `LatentDataset` reads one split back.

Target scale: EDM2 scales its latents to std 0.5 = sigma_data (A.1: sigma_data = 0.5, following Karras et al.
2024), so that c_in, c_skip, P_mean and the quintile edges see data at the scale they were designed for. Each
channel's std therefore becomes `target_std` (default 0.5; caches built before it used 1.0, which put the data at
twice sigma_data). The spread is the plain std over every value, as in EDM2 (`spread="std"`, default), or the
robust 1.4826 MAD (`spread="mad"`), which ignores the edge frames but leaves the plain std ~20% above the target
on our VAE (median 0.596 per channel at `cpu`). The location is always the median. meta.json records
`target_std`, `spread` and the plain per-channel std of the train split.

The `latents` DVC stage (`python -m presto_lib.stages.latents`) builds the cache with `build_latent_cache`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from presto_lib.atomic import atomic_path, write_text

__all__ = ["SPLITS", "vae_latent_scale", "LatentNorm", "LatentCodec", "encode_waves", "pad_tokens", "encode_texts",
           "build_latent_cache", "load_latent_split", "LatentDataset", "collate_latents", "read_meta", "TEMPO_FREE_KEYS"]

SPLITS = ("train", "valid", "test")


# ---- VAE and text encoding ---------------------------------------------------------------------

def vae_latent_scale(vae: Any) -> float:
    """The VAE's stored latent scale (multiplies raw latents to ~unit variance); 1.0 if it stores none."""
    for name in ("latent_scale", "scale_factor", "scaling_factor"):
        v = getattr(vae, name, None)
        if v is not None:
            return float(v.item() if isinstance(v, Tensor) else v)
    cfg = getattr(vae, "config", None) or getattr(vae, "cfg", None)
    for name in ("latent_scale", "scale_factor"):
        v = cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)
        if v is not None:
            return float(v)
    return 1.0


def _posterior(out: Any) -> tuple[Tensor, Tensor]:
    """(mean, std) from a VAE encoder output: a (mean, logvar) pair or a posterior with .mean and .std/.logvar."""
    if isinstance(out, (tuple, list)):
        mean, logvar = out[0], out[1]
        return mean, (0.5 * logvar).exp()
    mean = getattr(out, "mean", None)
    if mean is None:
        raise ValueError(f"cannot read a posterior from a VAE output of type {type(out).__name__}")
    std = getattr(out, "std", None)
    if std is None:
        std = (0.5 * out.logvar).exp()
    return mean, std


# ---- per-channel normalisation (EDM2-style) ----------------------------------------------------

@dataclass
class LatentNorm:
    """x = (scale * z - mean_c) / std_c: raw VAE latents z -> centred, unit-scale channels (model units)."""

    scale: float = 1.0                  # the VAE's stored latent scale
    mean: list[float] | None = None     # per channel location (median), in scaled units (None = 0)
    std: list[float] | None = None      # per channel divisor: spread / target_std, in scaled units (None = 1)

    @classmethod
    def fit(cls, z_scaled: Tensor, scale: float, max_values: int = 2_000_000,
            target_std: float = 0.5, spread: str = "std") -> "LatentNorm":
        """Channel statistics of scaled latents [N, C, T]: the median, and a spread divided by `target_std`, so
        each normalised channel has that spread equal to `target_std` (0.5 = sigma_data, EDM2).

        spread="std": the plain std over every value (EDM2; the normalised channels have std exactly
        `target_std`). spread="mad": 1.4826 x the median absolute deviation, robust to the VAE's zero padding,
        which makes the first and last few frames of every clip an outlier shared by all clips (the plain std of
        the result then sits above `target_std`). At most `max_values` values per channel are used (every k-th clip).
        """
        if not target_std > 0:
            raise ValueError(f"target_std must be > 0, got {target_std}")
        if spread not in ("std", "mad"):
            raise ValueError(f"unknown spread {spread!r}: use 'std' (EDM2) or 'mad' (robust)")
        if z_scaled.ndim != 3:
            raise ValueError(f"expected latents [N, C, T], got {tuple(z_scaled.shape)}")
        N, C, T = z_scaled.shape
        z = z_scaled[:: max(1, N * T // max_values)].transpose(0, 1).reshape(C, -1).double()
        med = z.median(dim=1).values
        if spread == "std":
            sd = z.std(dim=1)
        else:
            sd = (z - med[:, None]).abs().median(dim=1).values * 1.4826     # = std for a Gaussian
        return cls(float(scale), med.tolist(), (sd.clamp_min(1e-6) / target_std).tolist())

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        C = x.shape[1]
        m = torch.tensor(self.mean if self.mean is not None else [0.0] * C, dtype=x.dtype, device=x.device)
        s = torch.tensor(self.std if self.std is not None else [1.0] * C, dtype=x.dtype, device=x.device)
        if m.numel() != C or s.numel() != C:
            raise ValueError(f"normalisation has {m.numel()} channels, latents have {C}")
        return m[None, :, None], s[None, :, None]

    def normalize(self, z: Tensor) -> Tensor:
        """Raw VAE latents [B, C, T] -> model units."""
        m, s = self._stats(z)
        return (self.scale * z - m) / s

    def normalize_std(self, std: Tensor) -> Tensor:
        """A posterior standard deviation in raw units -> model units."""
        return self.scale * std / self._stats(std)[1]

    def denormalize(self, x: Tensor) -> Tensor:
        """Model units [B, C, T] -> raw VAE latents (what the decoder takes)."""
        m, s = self._stats(x)
        return (x * s + m) / self.scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the cache's meta.json and the score model's config)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatentNorm":
        """Inverse of `to_dict`."""
        return cls(**d)


class LatentCodec(nn.Module):
    """A VAE that speaks model units: encode -> normalised posterior (mean, logvar), decode(x) -> audio."""

    def __init__(self, vae: nn.Module, norm: LatentNorm):
        super().__init__()
        self.vae, self.norm = vae, norm
        self.latent_scale = 1.0          # already applied by the normalisation

    @property
    def hop_length(self) -> int:
        return int(self.vae.hop_length)

    @property
    def latent_dim(self) -> int:
        return int(self.vae.latent_dim)

    @property
    def sample_rate(self) -> int:
        return int(self.vae.sample_rate)

    def encode(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """wav [B, 1, T] -> (mean, logvar) of the posterior in model units."""
        mean, std = _posterior(self.vae.encode(wav))
        return self.norm.normalize(mean), 2 * self.norm.normalize_std(std).log()

    def decode(self, x: Tensor) -> Tensor:
        """Latents in model units [B, C, T'] -> wav [B, 1, T' x hop]."""
        return self.vae.decode(self.norm.denormalize(x))


@torch.no_grad()
def encode_waves(vae: Any, wave: Tensor, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Scaled posterior (mean, std) of waves [B, 1, T], zero-padding T to a multiple of the VAE hop."""
    if wave.ndim != 3 or wave.shape[1] != 1:
        raise ValueError(f"expected waves shaped [B, 1, T], got {tuple(wave.shape)}")
    hop = int(vae.hop_length)
    pad = (-wave.shape[-1]) % hop
    if pad:
        wave = torch.nn.functional.pad(wave, (0, pad))
    scale = vae_latent_scale(vae) if scale is None else scale
    mean, std = _posterior(vae.encode(wave))
    return mean.float() * scale, std.float() * scale


def pad_tokens(emb: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Zero/False-pad text embeddings [N, L, D] and masks [N, L] along the token axis to `length`."""
    extra = length - emb.shape[1]
    if extra < 0:
        raise ValueError(f"text has {emb.shape[1]} tokens, more than length={length}")
    return (torch.cat([emb, emb.new_zeros(emb.shape[0], extra, emb.shape[2])], 1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1))


@torch.no_grad()
def encode_texts(text_encoder: Any, captions: list[str], length: int | None = None,
                 batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Text embeddings [N, L, D] and masks [N, L] of captions, padded to a common length L (default: the max)."""
    embs, masks = [], []
    for i in range(0, len(captions), batch_size):
        e, m = text_encoder.encode(list(captions[i:i + batch_size]))
        embs.append(e.float().cpu())
        masks.append(m.bool().cpu())
    L = length if length is not None else max(e.shape[1] for e in embs)
    padded = [pad_tokens(e, m, L) for e, m in zip(embs, masks)]
    return torch.cat([e for e, _ in padded]), torch.cat([m for _, m in padded])


# ---- building the cache ------------------------------------------------------------------------

def _atomic_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1))


def _atomic_safetensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


@torch.no_grad()
def _encode_split(manifest: Path, split: str, vae: Any, scale: float, batch_size: int,
                  device: torch.device) -> tuple[dict[str, Tensor], dict[str, list]]:
    """Latents and labels of one split, in the manifest's order."""
    from presto_lib.data import ClipDataset   # data layer, imported lazily to keep this module light

    ds = ClipDataset(manifest, split, sample_rate=getattr(vae, "sample_rate", None))
    if len(ds) == 0:
        raise ValueError(f"split {split!r} of {manifest} is empty")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0,
                        collate_fn=lambda items: items)
    lat, lstd, labels = [], [], {"captions": [], "bpm": [], "piece_ids": [], "clip_samples": set()}
    for items in tqdm(loader, desc=f"encode {split}", unit="batch"):
        wave = torch.stack([it["wave"] for it in items]).to(device)
        labels["clip_samples"].add(int(wave.shape[-1]))
        m, s = encode_waves(vae, wave, scale)
        lat.append(m.cpu())
        lstd.append(s.cpu())
        labels["captions"] += [it["caption"] for it in items]
        labels["bpm"] += [float(it["bpm"]) for it in items]
        labels["piece_ids"] += [str(it["piece_id"]) for it in items]
    return {"latents": torch.cat(lat), "latents_std": torch.cat(lstd)}, labels


def build_latent_cache(manifest: str | os.PathLike, vae: Any, text_encoder: Any, out_dir: str | os.PathLike, *,
                       splits: Iterable[str] = SPLITS, batch_size: int = 8, text_length: int | None = None,
                       store_std: bool = True, fit_norm: LatentNorm | None = None, target_std: float = 0.5,
                       spread: str = "std", tempo_free: bool = True, device: str | torch.device = "cpu") -> Path:
    """Encode every clip of `splits` once (normalised VAE posterior, text embeddings, masks, BPM); returns out_dir.

    The normalisation is fitted on the train split (the first split when there is none) unless `fit_norm` is
    given; it scales every channel's `spread` ("std" or "mad", `LatentNorm.fit`) to `target_std` (0.5 = sigma_data,
    A.1). `store_std=False` leaves
    out the posterior std (half the size; needed only to sample the posterior). `tempo_free` also stores the
    embeddings of the tempo-free captions (`strip_tempo`).
    """
    from presto_lib.data.captions import strip_tempo

    manifest, out = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise ValueError(f"manifest not found: {manifest}")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    vae = vae.to(device).eval()
    scale = vae_latent_scale(vae)
    enc = {sp: _encode_split(manifest, sp, vae, 1.0, batch_size, device) for sp in splits}    # raw posteriors
    clip = set().union(*(labels["clip_samples"] for _, labels in enc.values()))
    if len(clip) != 1:
        raise ValueError(f"clips of different lengths {sorted(clip)} in {manifest}; the cache needs one length")
    # per-channel statistics of the (scaled) train latents normalise every split (EDM2-style)
    scaled_train = scale * enc["train" if "train" in enc else next(iter(enc))][0]["latents"]
    norm = LatentNorm.fit(scaled_train, scale, target_std=target_std, spread=spread) if fit_norm is None else fit_norm
    for tensors, _ in enc.values():
        tensors["latents"] = norm.normalize(tensors["latents"])
        tensors["latents_std"] = norm.normalize_std(tensors["latents_std"])
    # one text length across splits, so every batch of every split stacks
    texts = {sp: encode_texts(text_encoder, labels["captions"]) for sp, (_, labels) in enc.items()}
    free = ({sp: encode_texts(text_encoder, [strip_tempo(c) for c in labels["captions"]])
             for sp, (_, labels) in enc.items()} if tempo_free else {})
    L = max(t.shape[1] for t, _ in [*texts.values(), *free.values()]) if text_length is None else int(text_length)
    counts = {}
    for sp, (tensors, labels) in enc.items():
        emb, mask = pad_tokens(*texts[sp], L)
        tensors.update(text=emb, text_mask=mask, bpm=torch.tensor(labels["bpm"], dtype=torch.float32))
        if tempo_free:
            tensors["text_notempo"], tensors["text_notempo_mask"] = pad_tokens(*free[sp], L)
        if not store_std:
            tensors.pop("latents_std")
        _atomic_safetensors(out / f"{sp}.safetensors", tensors)
        _atomic_json(out / f"{sp}.json", {k: labels[k] for k in ("captions", "piece_ids")})
        counts[sp] = len(labels["captions"])
    train = enc["train" if "train" in enc else next(iter(enc))][0]["latents"]
    meta = {"sample_rate": int(getattr(vae, "sample_rate", 0)), "clip_samples": clip.pop(),
            "hop_length": int(vae.hop_length), "latent_scale": scale, "latent_norm": norm.to_dict(),
            "latent_dim": int(train.shape[1]), "latent_frames": int(train.shape[2]), "text_dim": int(emb.shape[-1]),
            "text_length": int(L), "text_encoder": str(getattr(text_encoder, "name", type(text_encoder).__name__)),
            "splits": counts, "scaled_mean_train": float(scaled_train.mean()),
            "scaled_std_train": float(scaled_train.std()),
            "target_std": float(target_std) if fit_norm is None else None,
            "spread": spread if fit_norm is None else None,
            "channel_std_train": train.transpose(0, 1).reshape(train.shape[1], -1).std(1).tolist()}
    _atomic_json(out / "meta.json", meta)
    return out


# ---- reading it back ---------------------------------------------------------------------------

def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """The cache's meta.json."""
    p = Path(root) / "meta.json"
    if not p.is_file():
        raise ValueError(f"no latent cache at {root} (missing meta.json); run `python -m presto_lib.data.latents`")
    return json.loads(p.read_text())


def load_latent_split(root: str | os.PathLike, split: str) -> tuple[dict[str, Tensor], dict[str, list]]:
    """Tensors and labels (captions, piece_ids) of one cached split."""
    root = Path(root)
    f = root / f"{split}.safetensors"
    if not f.is_file():
        have = sorted(p.stem for p in root.glob("*.safetensors"))
        raise ValueError(f"split {split!r} not in latent cache {root} (have {have})")
    return load_file(str(f)), json.loads((root / f"{split}.json").read_text())


TEMPO_FREE_KEYS = ("text_notempo", "text_notempo_mask")     # optional: caches built with tempo_free=True
LAZY_BYTES = 2 * 1024**3    # splits larger than this are read item by item (memory-mapped), not loaded


class LatentDataset(Dataset):
    """One cached split as a map-style dataset of {latents, text, text_mask, bpm, caption, index}.

    Small splits are loaded into memory (`.tensors`); large ones (`lazy=None` and over 2 GiB, or `lazy=True`)
    are read one item at a time through safetensors' memory-mapped slices, so a paper-scale cache fits any RAM.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", sample_posterior: bool = False,
                 lazy: bool | None = None):
        self.root, self.split, self.sample_posterior = Path(root), split, sample_posterior
        self.meta = read_meta(root)
        self.file = self.root / f"{split}.safetensors"
        if not self.file.is_file():
            load_latent_split(root, split)          # raises the clear error
        labels = json.loads((self.root / f"{split}.json").read_text())
        self.captions: list[str] = labels["captions"]
        self.piece_ids: list[str] = labels["piece_ids"]
        self.lazy = self.file.stat().st_size > LAZY_BYTES if lazy is None else bool(lazy)
        self._tensors = None if self.lazy else load_file(str(self.file))
        self._handle = None                          # opened per process (DataLoader workers), when lazy
        with safe_open(str(self.file), "pt") as f:
            self.keys = set(f.keys())
        if sample_posterior and "latents_std" not in self.keys:
            raise ValueError(f"{self.file} stores no latents_std: rebuild the cache with store_std=True "
                             "to sample the posterior")

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of the split in memory (not available for a lazy split)."""
        if self._tensors is None:
            raise ValueError(f"{self.file} is read lazily; index the dataset instead of using .tensors")
        return self._tensors

    def __len__(self) -> int:
        return len(self.captions)

    def _get(self, key: str, i: int) -> Tensor:
        if self._tensors is not None:
            return self._tensors[key][i]
        if self._handle is None:
            self._handle = safe_open(str(self.file), "pt")
        return self._handle.get_slice(key)[i:i + 1][0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} cached clips")
        z = self._get("latents", i)
        if self.sample_posterior:   # reparameterised draw from the VAE posterior (a free augmentation)
            z = z + self._get("latents_std", i) * torch.randn_like(z)
        item = {"latents": z, "text": self._get("text", i), "text_mask": self._get("text_mask", i),
                "bpm": self._get("bpm", i), "caption": self.captions[i], "index": i}
        for k in TEMPO_FREE_KEYS:
            if k in self.keys:
                item[k] = self._get(k, i)
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}     # file handles do not pickle (DataLoader workers)


def collate_latents(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack LatentDataset items into a batch (captions stay a list)."""
    keys = ("latents", "text", "text_mask", "bpm") + tuple(k for k in TEMPO_FREE_KEYS if all(k in it for it in items))
    out = {k: torch.stack([it[k] for it in items]) for k in keys}
    out["caption"] = [it["caption"] for it in items]
    out["index"] = torch.tensor([it["index"] for it in items])
    return out
