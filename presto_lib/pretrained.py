"""Pretrained folders: the pipeline's final models exported compact (half precision), with a manifest that
ties every file to the `dvc.lock` output it came from.

    <dir>/manifest.json                          format, dtype, and per model: files + sha256, default steps,
                                                 source folder, its DVC stage and the dvc.lock md5 of that output
    <dir>/<model>/{model.safetensors, config.json}   the `presto_lib.checkpoint` layout, floats cast to `dtype`

Models: `vae` (always), `base` (DPM-2S + CFG++), `presto_l` (layer-dropped score model), `presto_s` and
`presto_ls` (few-step ping-pong generators). A folder holds any subset with the VAE. `check_pretrained` lists every
way a folder has drifted from its files or from `dvc.lock` (a test keeps committed weights in sync).

    python -m presto_lib export --out pretrained/cpu          # from the DVC outputs under data/
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from presto_lib.checkpoint import CONFIG, WEIGHTS, load_checkpoint, save_checkpoint, write_json

__all__ = ["MODELS", "GENERATORS", "Source", "default_sources", "ModelNotFoundError", "export_pretrained",
           "check_pretrained", "read_manifest", "lock_entry", "file_digest", "MANIFEST", "PRETRAINED_DIR"]

MANIFEST, PRETRAINED_DIR, FORMAT = "manifest.json", "pretrained", 1
MODELS = ("base", "presto_l", "presto_s", "presto_ls")       # what `PrestoPipeline` generates with
GENERATORS = ("presto_s", "presto_ls")                        # distilled: ping-pong, no CFG (sec. 3.1)
DEFAULT_STEPS = {"base": 40, "presto_l": 40, "presto_s": 4, "presto_ls": 4}   # Table 2 rows


# ---- where each model comes from in the pipeline -----------------------------------------------

@dataclass(frozen=True)
class Source:
    """A model's checkpoint folder among the DVC outputs, and the stage that writes it."""

    path: str
    stage: str

    def hint(self) -> str:
        """How to make it: the `dvc repro` command."""
        return f"`dvc repro {self.stage}`"


def default_sources(params: Mapping[str, Any] | None = None) -> dict[str, Source]:
    """Each model's folder and stage (the Presto-S run is `presto_s.presto_s_run` of params, default ls_ittt)."""
    run = ((params or {}).get("presto_s") or {}).get("presto_s_run", "ls_ittt")
    return {"vae": Source("data/vae", "vae"),
            "base": Source("data/base/model", "base"),
            "presto_l": Source("data/presto_l/presto_l/model", "presto_l_finetune@presto_l"),
            "presto_s": Source(f"data/presto_s/{run}/generator", f"presto_s_run@{run}"),
            "presto_ls": Source("data/presto_ls/presto_ls/generator", "presto_ls_distill")}


class ModelNotFoundError(FileNotFoundError):
    """A model is neither in the pretrained folder nor among the pipeline outputs; the message says how to make it."""


# ---- hashes and dvc.lock -------------------------------------------------------------------------

def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file (sha256 for the manifest; md5 is what DVC records for a file)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lock_entry(lock: str | os.PathLike, path: str) -> dict[str, str] | None:
    """{stage, out, md5} of the dvc.lock output holding `path` (the output itself or a folder above it)."""
    import yaml

    lock = Path(lock)
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    p = Path(path).as_posix().rstrip("/")
    best = None
    for stage, spec in stages.items():
        for out in spec.get("outs", []):
            o = str(out["path"]).rstrip("/")
            if (p == o or p.startswith(o + "/")) and (best is None or len(o) > len(best["out"])):
                best = {"stage": stage, "out": o, "md5": str(out.get("md5", ""))}
    return best


# ---- export --------------------------------------------------------------------------------------

def _kind(config: dict[str, Any]) -> str:
    """What a checkpoint holds: vae, score (EDMPrecond(DiT)) or layer_drop (LayerDropModel)."""
    if config.get("kind") == "presto_vae":
        return "vae"
    if "dit" not in config:
        raise ValueError("config.json is neither a Presto VAE nor a score model (no 'dit')")
    return "layer_drop" if "presto_l" in config else "score"


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors to `dtype` (integer / bool buffers unchanged)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def export_pretrained(src_dirs: Mapping[str, str | os.PathLike] | None, out_dir: str | os.PathLike,
                      dtype: torch.dtype = torch.float16, *, root: str | os.PathLike = ".",
                      lock: str | os.PathLike | None = "dvc.lock", steps: Mapping[str, int] | None = None,
                      sampling: Mapping[str, Any] | None = None) -> Path:
    """Write a pretrained folder from checkpoint folders {model: dir} (None: every `default_sources` that exists).

    Relative source dirs and `lock` are read under `root`. `steps` overrides each model's default step count,
    `sampling` the base / Presto-L sampler settings (`SamplingConfig` fields). Returns the manifest path.
    """
    root, out = Path(root), Path(out_dir)
    sources = default_sources()
    if src_dirs is None:
        src_dirs = {k: s.path for k, s in sources.items() if (root / s.path / WEIGHTS).is_file()}
    unknown = set(src_dirs) - {"vae", *MODELS}
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; choose among vae, {', '.join(MODELS)}")
    if "vae" not in src_dirs or not set(src_dirs) & set(MODELS):
        raise ValueError(f"a pretrained folder needs the VAE and one of {', '.join(MODELS)}; got {sorted(src_dirs)}"
                         f" (make them with {sources['vae'].hint()} and {sources['presto_ls'].hint()})")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    lock_path = None if lock is None else (Path(lock) if Path(lock).is_absolute() else root / lock)
    models: dict[str, Any] = {}
    for name, src in src_dirs.items():
        src = Path(src) if Path(src).is_absolute() else root / src
        if not (src / WEIGHTS).is_file():
            raise ModelNotFoundError(f"{name}: {src} holds no {WEIGHTS}; make it with {sources[name].hint()}")
        tensors, config = load_checkpoint(src)
        kind = _kind(config)
        if (kind == "vae") != (name == "vae"):
            raise ValueError(f"{src} holds a {kind} checkpoint, not a {name}")
        save_checkpoint(out / name, _cast(tensors, dtype), config)
        rel = _relative(src, root)
        entry: dict[str, Any] = {
            "kind": kind, "files": {f: file_digest(out / name / f) for f in (WEIGHTS, CONFIG)},
            "source": {"path": rel, "md5": {f: file_digest(src / f, "md5") for f in (WEIGHTS, CONFIG)},
                       "stage": sources[name].stage, "dvc": lock_entry(lock_path, rel) if lock_path else None}}
        if entry["source"]["dvc"]:
            entry["source"]["stage"] = entry["source"]["dvc"]["stage"]
        if name != "vae":
            entry["default_steps"] = int((steps or {}).get(name, DEFAULT_STEPS[name]))
        models[name] = entry
    manifest = {"format": FORMAT, "dtype": str(dtype).removeprefix("torch."), "models": models,
                "sampling": dict(sampling or {})}
    write_json(out / MANIFEST, manifest)
    return out / MANIFEST


# ---- reading and checking ------------------------------------------------------------------------

def read_manifest(path_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a pretrained folder (clear error when it is not one)."""
    path = Path(path_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path_dir} is not a pretrained folder (no {MANIFEST}); write one with "
                                "`python -m presto_lib export --out DIR`")
    m = json.loads(path.read_text())
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, this library reads format {FORMAT}")
    return m


def check_pretrained(path_dir: str | os.PathLike, lock: str | os.PathLike | None = None) -> list[str]:
    """Every mismatch of a pretrained folder: files vs their sha256, and (with `lock`) sources vs dvc.lock md5."""
    path_dir = Path(path_dir)
    problems = []
    m = read_manifest(path_dir)
    for name, entry in m["models"].items():
        for f, sha in entry["files"].items():
            p = path_dir / name / f
            if not p.is_file():
                problems.append(f"{name}/{f}: missing")
            elif file_digest(p) != sha:
                problems.append(f"{name}/{f}: sha256 differs from the manifest")
        if lock is not None:
            rec, now = entry["source"].get("dvc"), lock_entry(lock, entry["source"]["path"])
            if rec is None:
                problems.append(f"{name}: exported without a dvc.lock entry for {entry['source']['path']}")
            elif now is None:
                problems.append(f"{name}: {lock} has no output holding {entry['source']['path']}")
            elif now["md5"] != rec["md5"]:
                problems.append(f"{name}: {now['out']} changed in {lock} (stage {now['stage']}): "
                                f"re-export with `python -m presto_lib export`")
    return problems
