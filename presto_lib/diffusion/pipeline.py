"""Text + BPM -> latents -> audio: the inference pipeline shared by the base model and every distilled one.

    x_N ~ N(0, sigma_max^2 I)  ->  sampler(denoiser, x_N, sigmas)  ->  un-normalise  ->  VAE decoder  ->  wav

The denoiser is the score model wrapped for guidance: CFG++ with w = 0.8 for score models (paper A.1), plain
CFG, the conditional model alone ("cond") or the null-conditioned one ("uncond"). Sigmas come from eq. 9. Each
sample draws its noise from its own seed, so a prompt gives the same audio whatever batch it is generated in.
`write_samples` writes the evaluation layout of CONTRIBUTING.md: data/samples/<system>/NNNN.wav + samples.csv.
"""
from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from presto_lib.atomic import atomic_path
from presto_lib.data.latents import LatentCodec, LatentNorm, vae_latent_scale
from presto_lib.diffusion.edm import RHO, SIGMA_MAX, SIGMA_MIN, edm_sigmas
from presto_lib.diffusion.sampling import cfg_denoiser, cfgpp_denoiser, get_sampler

__all__ = ["SamplingConfig", "TextToMusic", "read_prompts", "write_samples", "copy_head", "GUIDANCE"]

GUIDANCE = ("cfgpp", "cfg", "cond", "uncond")


@dataclass
class SamplingConfig:
    """How to sample: sampler name, steps, guidance kind and weight, eq. 9 schedule."""

    sampler: str = "dpmpp_2s"        # the paper's DPM-2S (Table 2 "Base Model, DPM-2S")
    steps: int = 40
    guidance: str = "cfgpp"          # A.1: CFG++ for every score model
    w: float = 0.8                   # A.1: CFG++ weight
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    rho: float = RHO
    model_kwargs: dict[str, Any] = field(default_factory=dict)   # e.g. blocks=... for layer dropping

    def __post_init__(self):
        get_sampler(self.sampler)   # raises on an unknown name
        if self.guidance not in GUIDANCE:
            raise ValueError(f"unknown guidance {self.guidance!r}; choose one of {', '.join(GUIDANCE)}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def sigmas(self, device: str | torch.device = "cpu") -> Tensor:
        """The eq. 9 schedule sigma_max ... sigma_min, 0."""
        return edm_sigmas(int(self.steps), self.sigma_min, self.sigma_max, self.rho, device=device)


class TextToMusic:
    """Generates audio from captions and BPMs with a score model (or a distilled generator) and a VAE decoder."""

    def __init__(self, model: Callable, vae: Any, text_encoder: Any, *, latent_shape: tuple[int, int],
                 sample_rate: int, clip_samples: int, latent_scale: float = 1.0,
                 device: str | torch.device = "cpu", sampling: SamplingConfig | None = None):
        self.model, self.vae, self.text_encoder = model, vae, text_encoder
        self.latent_shape = (int(latent_shape[0]), int(latent_shape[1]))
        self.sample_rate, self.clip_samples = int(sample_rate), int(clip_samples)
        self.latent_scale, self.device = float(latent_scale), torch.device(device)
        self.sampling = sampling or SamplingConfig()
        self.nfe = 0                 # denoiser calls of the last `sample_latents` (the paper's NFE)

    @classmethod
    def from_checkpoints(cls, score_dir: str | os.PathLike, vae_dir: str | os.PathLike, *,
                         text_encoder: Any = None, device: str | torch.device = "cpu",
                         sampling: SamplingConfig | None = None) -> "TextToMusic":
        """Load a score model saved by `save_score_model` (config: latent/audio sizes, latent normalisation) + VAE."""
        from presto_lib.diffusion.score_model import load_score_model
        from presto_lib.models.text import get_text_encoder
        from presto_lib.models.vae import load_vae

        model, cfg = load_score_model(score_dir, device)
        te = text_encoder if text_encoder is not None else get_text_encoder(device=device)
        return cls.from_model(model, cfg, load_vae(vae_dir, device), te, device=device, sampling=sampling,
                              where=f"{score_dir}/config.json")

    @classmethod
    def from_model(cls, model: Any, cfg: dict[str, Any], vae: Any, text_encoder: Any, *,
                   device: str | torch.device = "cpu", sampling: SamplingConfig | None = None,
                   where: str = "the model config") -> "TextToMusic":
        """A loaded model + its checkpoint config (latent/audio sizes, latent normalisation) + a loaded VAE."""
        missing = {"dit", "latent_frames", "sample_rate", "clip_samples"} - set(cfg)
        if missing:
            raise ValueError(f"{where} lacks {sorted(missing)} (save it with those extras)")
        if "latent_norm" in cfg:    # the cache's per-channel normalisation: decode through it (latent_scale 1)
            vae = LatentCodec(vae, LatentNorm.from_dict(cfg["latent_norm"]))
        return cls(model, vae, text_encoder, latent_shape=(cfg["dit"]["in_channels"], cfg["latent_frames"]),
                   sample_rate=cfg["sample_rate"], clip_samples=cfg["clip_samples"],
                   latent_scale=vae_latent_scale(vae) if "latent_norm" in cfg else cfg.get("latent_scale", 1.0),
                   device=device, sampling=sampling)

    @property
    def seconds(self) -> float:
        """Seconds of audio per generated sample (T_theta of the RTF, paper A.6)."""
        return self.clip_samples / self.sample_rate

    # ---- conditions ----

    def conditions(self, captions: Sequence[str], bpms: Sequence[float] | Tensor) -> tuple[dict, dict]:
        """(cond, uncond) dicts for the denoiser: encoded captions + BPMs, and the null condition."""
        bpm = torch.as_tensor(bpms, dtype=torch.float32).reshape(-1).to(self.device)
        if len(captions) != bpm.shape[0]:
            raise ValueError(f"{len(captions)} captions but {bpm.shape[0]} BPMs")
        with torch.no_grad():
            text, mask = self.text_encoder.encode(list(captions))
        text, mask = text.float().to(self.device), mask.bool().to(self.device)
        cond = {"text": text, "text_mask": mask, "bpm": bpm}
        uncond = {"text": torch.zeros_like(text), "text_mask": torch.zeros_like(mask), "bpm": torch.zeros_like(bpm)}
        return cond, uncond

    def denoiser(self, cond: dict, uncond: dict, cfg: SamplingConfig) -> Callable[[Tensor, Tensor], Any]:
        """The guided denoiser(x, sigma) for the sampler (CFG++, CFG, conditional or unconditional)."""
        kw = cfg.model_kwargs
        if cfg.guidance == "cfgpp":
            return cfgpp_denoiser(self.model, cond, uncond, cfg.w, **kw)
        if cfg.guidance == "cfg":
            return cfg_denoiser(self.model, cond, uncond, cfg.w, **kw)
        c = cond if cfg.guidance == "cond" else uncond
        return lambda x, sigma: self.model(x, sigma, c, **kw)

    # ---- sampling and decoding ----

    def initial_noise(self, seeds: Sequence[int], sigma_max: float) -> Tensor:
        """x_N = sigma_max * eps, eps drawn per sample from its own seed: [B, C, T']."""
        eps = [torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(eps).to(self.device) * sigma_max

    @torch.no_grad()
    def sample_latents(self, captions: Sequence[str], bpms: Sequence[float] | Tensor, seeds: Sequence[int],
                       **overrides: Any) -> Tensor:
        """Latents [B, C, T'] (cache units) for the prompts; keyword overrides replace SamplingConfig fields."""
        if len(seeds) != len(captions):
            raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
        cfg = replace(self.sampling, **overrides) if overrides else self.sampling
        cond, uncond = self.conditions(captions, bpms)
        den = self.denoiser(cond, uncond, cfg)
        calls = [0]

        def counted(x: Tensor, sigma: Tensor):
            calls[0] += 1
            return den(x, sigma)
        sigmas = cfg.sigmas(self.device)
        x = self.initial_noise(seeds, float(sigmas[0]))
        opts = {}
        if cfg.sampler == "pingpong":     # re-noising draws per sample too (batch-independent outputs)
            gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
            opts["noise_sampler"] = lambda s, s_next: torch.stack(
                [torch.randn(self.latent_shape, generator=g) for g in gens]).to(self.device)
        out = get_sampler(cfg.sampler)(counted, x, sigmas, disable=True, **opts)
        self.nfe = calls[0]
        return out

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latents (cache units) -> waves [B, 1, clip_samples] with the VAE decoder."""
        wav = self.vae.decode(z / self.latent_scale)
        if wav.ndim == 2:
            wav = wav[:, None]
        n = wav.shape[-1]
        if n < self.clip_samples:
            wav = torch.nn.functional.pad(wav, (0, self.clip_samples - n))
        return wav[..., :self.clip_samples].float()

    def generate(self, captions: Sequence[str], bpms: Sequence[float] | Tensor,
                 seeds: Sequence[int] | None = None, **overrides: Any) -> Tensor:
        """Captions + BPMs -> audio [B, 1, clip_samples] at `sample_rate`."""
        seeds = list(range(len(captions))) if seeds is None else list(seeds)
        return self.decode(self.sample_latents(captions, bpms, seeds, **overrides))


# ---- evaluation layout: data/samples/<system>/ -------------------------------------------------

def read_prompts(manifest: str | os.PathLike, split: str = "test", limit: int | None = None) -> list[dict]:
    """The evaluation prompts: (caption, bpm) of a manifest split, in manifest order (the first `limit`)."""
    from presto_lib.data.datasets import read_manifest

    rows = read_manifest(manifest, split)
    if rows.empty:
        raise ValueError(f"split {split!r} of {manifest} is empty")
    rows = rows.head(limit) if limit else rows
    return [{"caption": str(c), "bpm": float(b)} for c, b in zip(rows["caption"], rows["bpm"])]


def write_samples(generate: Callable[[list[str], list[float], list[int]], Tensor], prompts: Sequence[dict],
                  out_dir: str | os.PathLike, sample_rate: int, *, batch_size: int = 4, seed: int = 0) -> Path:
    """Generate every prompt (seed = seed + index) into out_dir/NNNN.wav + samples.csv; returns the CSV path."""
    from presto_lib.audio import save_audio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9][0-9][0-9].wav"):   # a previous, longer run must not leave extra files
        old.unlink()
    rows = []
    for i in tqdm(range(0, len(prompts), batch_size), desc=f"samples -> {out.name}", unit="batch"):
        chunk = prompts[i:i + batch_size]
        seeds = [seed + i + j for j in range(len(chunk))]
        wav = generate([p["caption"] for p in chunk], [float(p["bpm"]) for p in chunk], seeds)
        for j, (p, s) in enumerate(zip(chunk, seeds)):
            name = f"{i + j:04d}.wav"
            save_audio(out / name, wav[j].detach().cpu().numpy(), sample_rate)
            rows.append({"path": name, "caption": p["caption"], "bpm": float(p["bpm"]), "seed": s})
    return _write_index(out, rows)


def _write_index(out: Path, rows: list[dict]) -> Path:
    """out/samples.csv (path, caption, bpm, seed), written atomically; returns its path."""
    with atomic_path(out / "samples.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "caption", "bpm", "seed"])
        w.writeheader()
        w.writerows(rows)
    return out / "samples.csv"


def copy_head(src: str | os.PathLike, dst: str | os.PathLike, n: int) -> Path:
    """The first n samples of a `write_samples` folder as a folder of their own (same prompts, seeds and audio).

    Each sample's noise comes from its own seed, so this equals generating the first n prompts again (when the
    batches line up: n a multiple of the batch size); returns the new samples.csv."""
    src, dst = Path(src), Path(dst)
    with open(src / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:int(n)]
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for r in rows:
        shutil.copy2(src / r["path"], dst / r["path"])
    return _write_index(dst, rows)
