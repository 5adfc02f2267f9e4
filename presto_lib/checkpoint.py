"""Checkpoints without pickle: safetensors for tensors, JSON for everything else, atomic writes.

Two kinds of checkpoint live here:

* **Model checkpoints** (what a later stage loads): a folder holding `model.safetensors` + `config.json`.

      save_checkpoint("data/vae", vae.state_dict(), {"sample_rate": 16000, ...})
      tensors, config = load_checkpoint("data/vae")

* **Training states** (what `presto_lib.train` resumes from): several modules, their EMA copies, optimiser
  states, per-rank RNG states, the step and any JSON extras, in `<dir>/step_XXXXXXXX/`, with `<dir>/latest.json`
  naming the newest *complete* one. A state is written into a temporary folder, each file fsynced, a
  `manifest.json` with the sha256 of every file added, the folder renamed into place, and only then does
  `latest.json` (itself replaced atomically) point at it: a run killed at any moment leaves the last good state
  loadable ("last-good" semantics). Older states are pruned after the pointer moves, so the previous complete
  state stays on disk until the new one is complete. Loading verifies the checksums; a corrupt or incomplete
  newest state falls back to the newest complete one, with a warning naming the bad file.

Every file is written to a temporary name, fsynced and `os.replace`d, so a reader never sees a half-written
file, and every read error names the file.
Nothing is ever unpickled: optimiser state tensors go to safetensors, their scalars and param groups to JSON,
and RNG states (python, numpy, torch CPU/CUDA) to JSON.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

WEIGHTS, CONFIG, LATEST, MANIFEST = "model.safetensors", "config.json", "latest.json", "manifest.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing, truncated, unparsable or fails its checksum (the message names it)."""


# ---------------------------------------------------------------------------------------------
# Atomic file writes
# ---------------------------------------------------------------------------------------------

def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make renames inside folder `path` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or unparsable file raises CorruptCheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"checkpoint file {path} is not valid JSON ({e})") from e


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + os.replace)."""
    path = Path(path)
    tmp = _tmp_name(path)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically; tensors are copied to contiguous CPU memory (no shared storage)."""
    path = Path(path)
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path.name}: values of {bad[:5]} are not tensors")
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    tmp = _tmp_name(path)
    try:
        save_file(flat, str(tmp), metadata=metadata)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; missing -> FileNotFoundError, unreadable -> CorruptCheckpointError (naming it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} not found")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError on bad bytes
        raise CorruptCheckpointError(f"checkpoint file {path} is corrupt or truncated ({type(e).__name__}: {e})") \
            from e


# ---------------------------------------------------------------------------------------------
# Model checkpoints: model.safetensors + config.json
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path_dir: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Save weights + a JSON-serialisable config into `path_dir` (each file atomically; config last)."""
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    json.dumps(config)  # fail early (before touching the weights) on a config JSON cannot hold
    write_tensors(path_dir / WEIGHTS, tensors)
    write_json(path_dir / CONFIG, config)
    return path_dir


def load_checkpoint(path_dir: str | os.PathLike,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, config) saved by `save_checkpoint`."""
    path_dir = Path(path_dir)
    for f in (WEIGHTS, CONFIG):
        if not (path_dir / f).is_file():
            raise FileNotFoundError(f"{path_dir} holds no {f}: not a checkpoint written by save_checkpoint")
    return read_tensors(path_dir / WEIGHTS, device), read_json(path_dir / CONFIG)


# ---------------------------------------------------------------------------------------------
# Optimiser and RNG states as (tensors, JSON)
# ---------------------------------------------------------------------------------------------

def optimizer_to_flat(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into safetensors-able tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of `optimizer_to_flat`: an `optimizer.load_state_dict`-ready dict."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    # JSON turns tuples into lists; hyperparameters such as Adam's betas are tuples in torch
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def get_rng_state() -> dict:
    """Python, numpy and torch (CPU + every CUDA device) RNG states as JSON-able data."""
    v, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": [v, list(mt), gauss], "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
           "torch": _b64(torch.get_rng_state())}
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` returned."""
    v, mt, gauss = state["python"]
    random.setstate((v, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------
# Training states: <dir>/step_XXXXXXXX/{modules,ema,optim}.safetensors + state.json + rng_rankN.json
# ---------------------------------------------------------------------------------------------

def _prefixed(groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{name}/{k}": v for name, sd in groups.items() for k, v in sd.items()}


def _unprefixed(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        name, k = key.split("/", 1)
        out.setdefault(name, {})[k] = v
    return out


def state_dir(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """The folder of the training state at `step`."""
    return Path(ckpt_dir) / f"step_{step:08d}"


def begin_training_state(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """Create (empty) the temporary folder a training state is written into; returns it."""
    tmp = Path(ckpt_dir) / f".step_{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(tmp: Path, rank: int) -> None:
    """Each rank writes its own RNG state into the state being written."""
    write_json(tmp / f"rng_rank{rank}.json", get_rng_state())


def write_training_state(tmp: Path, *, step: int, modules: dict[str, dict[str, torch.Tensor]],
                         ema: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, dict],
                         meta: dict) -> None:
    """Write modules / EMA / optimisers (tensors) and step + meta (JSON) into the temporary folder `tmp`."""
    write_tensors(tmp / "modules.safetensors", _prefixed(modules))
    write_tensors(tmp / "ema.safetensors", _prefixed(ema))
    opt_tensors, opt_meta = {}, {}
    for name, sd in optimizers.items():
        t, m = optimizer_to_flat(sd)
        opt_tensors[name], opt_meta[name] = t, m
    write_tensors(tmp / "optim.safetensors", _prefixed(opt_tensors))
    write_json(tmp / "state.json", {"step": step, "optimizers": opt_meta, "meta": meta})


def commit_training_state(ckpt_dir: str | os.PathLike, tmp: Path, step: int, keep: int = 2) -> Path:
    """Publish a fully written state: checksum manifest, rename into place, move latest.json, prune older states."""
    ckpt_dir = Path(ckpt_dir)
    files = sorted(p for p in tmp.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.name == "state.json" for p in files):
        raise CorruptCheckpointError(f"{tmp} holds no state.json: refusing to publish an incomplete state")
    write_json(tmp / MANIFEST, {"step": step, "sha256": {p.name: sha256_file(p) for p in files}})
    _fsync_dir(tmp)
    final = state_dir(ckpt_dir, step)
    if final.exists():   # a state of this step that was rejected on load (latest.json never points here now)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    write_json(ckpt_dir / LATEST, {"step": step, "dir": final.name})
    _fsync_dir(ckpt_dir)
    states = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    # states past this step belong to an abandoned future (a corrupt state the run fell back from, or a fresh
    # start over an old run): drop them so they never outrank this one; keep the `keep` newest up to this step
    newer = [p for p in states if p.name > final.name]
    older = [p for p in states if p.name <= final.name]
    for old in newer + older[:-max(keep, 1)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def verify_training_state(path: str | os.PathLike) -> None:
    """Check a state folder against its manifest (every file present, sha256 equal); raise naming the bad file.

    A state written before checksums existed (no manifest.json) only has its state.json checked, with a warning.
    """
    path = Path(path)
    if not path.is_dir():
        raise CorruptCheckpointError(f"training state {path} is missing")
    if not (path / MANIFEST).is_file():
        warnings.warn(f"{path} has no {MANIFEST} (written before checksums): loading it unverified")
        read_json(path / "state.json")
        return
    manifest = read_json(path / MANIFEST)
    sums = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(sums, dict) or "state.json" not in sums:
        raise CorruptCheckpointError(f"checkpoint file {path / MANIFEST} is malformed")
    for name, want in sorted(sums.items()):
        f = path / name
        if Path(name).name != name or not f.is_file():
            raise CorruptCheckpointError(f"checkpoint file {f} is missing (listed in {path / MANIFEST})")
        got = sha256_file(f)
        if got != want:
            raise CorruptCheckpointError(f"checkpoint file {f} is corrupt: sha256 {got[:12]}... differs from "
                                         f"{want[:12]}... recorded in {MANIFEST}")


def _candidates(ckpt_dir: Path) -> list[Path]:
    """State folders newest first: the one latest.json names, then every other step_* by step."""
    ptr = ckpt_dir / LATEST
    first: list[Path] = []
    if ptr.is_file():
        try:
            name = read_json(ptr)["dir"]
            if not isinstance(name, str) or Path(name).name != name or not name.startswith("step_"):
                raise CorruptCheckpointError(f"{ptr} names {name!r}, not a state folder")
            first = [ckpt_dir / name]
        except (CorruptCheckpointError, KeyError, TypeError) as e:
            warnings.warn(f"ignoring {ptr}: {e}; looking for the newest complete state instead")
    others = sorted((p for p in ckpt_dir.glob("step_*") if p.is_dir() and p not in first), reverse=True)
    return first + others


def load_training_state(ckpt_dir: str | os.PathLike,
                        device: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """(folder, state) of the newest complete, verified training state under `ckpt_dir`; None when none exists.

    A corrupt or incomplete newer state is skipped with a warning naming the bad file; when states exist but none
    is usable, CorruptCheckpointError lists what was wrong with each.
    """
    ckpt_dir = Path(ckpt_dir)
    errors = []
    for d in _candidates(ckpt_dir):
        try:
            st = read_training_state(d, device)
        except (CorruptCheckpointError, FileNotFoundError) as e:
            errors.append(str(e))
            warnings.warn(f"skipping training state {d.name}: {e}")
            continue
        if errors:
            warnings.warn(f"resuming from the older complete state {d} because the newer one is unusable "
                          f"({errors[0]})")
        return d, st
    if errors:
        raise CorruptCheckpointError(f"no usable training state in {ckpt_dir}: " + "; ".join(errors))
    return None


def latest_training_state(ckpt_dir: str | os.PathLike) -> Path | None:
    """The newest complete, verified training state under `ckpt_dir` (None when there is none)."""
    for d in _candidates(Path(ckpt_dir)):
        try:
            verify_training_state(d)
            return d
        except CorruptCheckpointError as e:
            warnings.warn(f"skipping training state {d.name}: {e}")
    return None


def read_training_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a training state folder: {step, modules, ema, optimizers, meta, rng: {rank: state}}."""
    path = Path(path)
    verify_training_state(path)
    st = read_json(path / "state.json")
    try:
        opt_t = _unprefixed(read_tensors(path / "optim.safetensors", device))
        optimizers = {name: optimizer_from_flat(opt_t.get(name, {}), m) for name, m in st["optimizers"].items()}
        step, meta = int(st["step"]), st["meta"]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, CorruptCheckpointError):
            raise
        raise CorruptCheckpointError(f"checkpoint file {path / 'state.json'} is malformed ({e!r})") from e
    rng = {int(p.stem.removeprefix("rng_rank")): read_json(p) for p in path.glob("rng_rank*.json")}
    return {"step": step, "meta": meta, "optimizers": optimizers, "rng": rng,
            "modules": _unprefixed(read_tensors(path / "modules.safetensors", device)),
            "ema": _unprefixed(read_tensors(path / "ema.safetensors", device))}
