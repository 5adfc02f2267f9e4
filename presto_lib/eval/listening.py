"""Listening test kit (paper sec. 4.5, Fig. 12): blinded, loudness-matched excerpts + a rating page + a key.

The paper's protocol: n=16 raters, 20 sets (one text prompt each, one clip per system), clips randomly cut to
10 s, each rated 0-100 for musical quality (fidelity and text match). `build_kit` writes

    <kit>/public/        the only folder the rating server serves: index.html, app.js, style.css,
                         kit.json (sets: caption + blinded clip ids, no system names), audio/<clip>.wav
    <kit>/key.csv        the private key: blinded clip id -> system, prompt, source file, excerpt offset
    <kit>/build.json     how the kit was built (settings, systems, seed)

Systems are `data/samples/<system>/` folders (samples.csv + NNNN.wav for the test-split prompts, in order),
plus a hidden `reference` (the real test clip, as in MUSHRA, ITU-R BS.1534) and anchors derived from it.

CLI:  python -m presto_lib.stages.listening build|serve|analyse ...  (see --help)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import signal

from presto_lib.audio import load_audio, loudness_normalize, save_audio

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).parent / "listening_page"
PEAK = 0.99
INSTRUCTIONS = ("Rate the musical quality of each clip from 0 (bad) to 100 (excellent), taking into account "
                "both the audio fidelity and how well the music matches the text description. "
                "Listen to every clip, then move every slider.")


# ---- sources: which clip plays for (prompt, system) ----


def _resolve(path: str, folder: Path) -> Path:
    """A samples/manifest path: relative to its CSV's folder (the contract), else as given."""
    p = Path(path)
    if p.is_absolute():
        return p
    return folder / p if (folder / p).exists() or not p.exists() else p


def gather_sources(manifest: str | os.PathLike | None, systems: Mapping[str, str | os.PathLike],
                   reference: bool = True) -> pd.DataFrame:
    """Rows (prompt, caption, system, path) for the test-split prompts; missing system folders are skipped."""
    frames = []
    captions: pd.Series | None = None
    if reference:
        if manifest is None or not Path(manifest).is_file():
            raise ValueError(f"corpus manifest {manifest} not found (needed for the hidden reference)")
        m = pd.read_csv(manifest)
        test = m[m["split"] == "test"].reset_index(drop=True)
        if test.empty:
            raise ValueError(f"{manifest} has no test-split rows")
        folder = Path(manifest).parent
        captions = test["caption"].astype(str)
        frames.append(pd.DataFrame({"prompt": test.index, "caption": captions, "system": "reference",
                                    "path": [str(_resolve(p, folder)) for p in test["path"]]}))
    for name, folder in systems.items():
        csv_path = Path(folder) / "samples.csv"
        if name == "reference":
            raise ValueError("system name 'reference' is reserved for the hidden reference")
        if not csv_path.is_file():
            log.warning("listening test: skipping system %r: %s not found", name, csv_path)
            continue
        s = pd.read_csv(csv_path)
        if captions is not None:
            n = min(len(s), len(captions))
            if not (s["caption"].astype(str)[:n] == captions[:n]).all():
                raise ValueError(f"{csv_path}: captions differ from the manifest's test split (not the same prompts in order)")
        frames.append(pd.DataFrame({"prompt": s.index, "caption": s["caption"].astype(str), "system": name,
                                    "path": [str(_resolve(p, Path(folder))) for p in s["path"]]}))
    if not frames:
        raise ValueError("no systems to test: no reference and no samples folder found")
    return pd.concat(frames, ignore_index=True)


# ---- anchors (MUSHRA-style, derived from the reference excerpt) ----


def make_anchor(wav: np.ndarray, sample_rate: int, spec: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of `wav` [C, T]: kind 'lowpass' (cutoff_hz, 8th-order Butterworth) or 'noise' (snr_db)."""
    kind = spec.get("kind")
    if kind == "lowpass":
        cutoff = float(spec["cutoff_hz"])
        if not 0 < cutoff < sample_rate / 2:
            raise ValueError(f"lowpass anchor cutoff {cutoff} Hz must lie in (0, {sample_rate / 2}) Hz")
        sos = signal.butter(8, cutoff, btype="low", fs=sample_rate, output="sos")
        return signal.sosfiltfilt(sos, wav, axis=-1).astype(np.float32)
    if kind == "noise":
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) or 1e-4
        noise = rng.standard_normal(wav.shape) * rms * 10 ** (-float(spec["snr_db"]) / 20)
        return (wav + noise).astype(np.float32)
    raise ValueError(f"unknown anchor kind {kind!r}; use 'lowpass' or 'noise'")


# ---- the kit ----


def _blind_ids(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct random clip ids, "c" + 8 hex digits (they say nothing about the system)."""
    ids: list[str] = []
    while len(ids) < n:
        c = f"c{int(rng.integers(0, 2**32)):08x}"
        if c not in ids:
            ids.append(c)
    return ids


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished kit into place, removing an older kit (never a folder that is not a kit)."""
    if out.exists():
        if any(out.iterdir()) and not (out / "key.csv").exists():
            raise ValueError(f"{out} exists and is not a listening-test kit; refusing to replace it")
        shutil.rmtree(out)
    tmp.rename(out)


def build_kit(sources: pd.DataFrame, out_dir: str | os.PathLike, n_sets: int, sample_rate: int,
              excerpt_seconds: float | None = 10.0, target_lufs: float = -23.0,
              anchors: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
              title: str = "Presto listening test") -> Path:
    """Write a blinded kit for `n_sets` random prompts that every system has; returns the kit folder."""
    anchors = dict(anchors or {})
    if anchors and "reference" not in set(sources["system"]):
        raise ValueError("anchors are derived from the reference clip: include the reference or drop the anchors")
    systems = sorted(sources["system"].unique())
    if len(systems) + len(anchors) < 2:
        raise ValueError(f"a listening test compares at least two systems, got {systems}")
    counts = sources.groupby("prompt")["system"].nunique()
    prompts = counts.index[counts == len(systems)].to_numpy()
    if n_sets < 1 or len(prompts) == 0:
        raise ValueError(f"need n_sets >= 1 and prompts shared by all systems (n_sets={n_sets}, shared={len(prompts)})")
    if n_sets > len(prompts):
        log.warning("listening test: only %d prompts available, using all of them (asked for %d)", len(prompts), n_sets)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(prompts, size=min(n_sets, len(prompts)), replace=False)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "public" / "audio").mkdir(parents=True)
    width = max(2, len(str(len(chosen))))
    sets, key = [], []
    for k, prompt in enumerate(chosen):
        rows = sources[sources["prompt"] == prompt].sort_values("system")
        wavs = {r.system: load_audio(r.path, sample_rate=sample_rate)[0] for r in rows.itertuples()}
        # one excerpt offset per prompt, shared by every system (paper: "randomly cut to 10s")
        length = min(w.shape[-1] for w in wavs.values())
        n = length if not excerpt_seconds else min(length, int(round(excerpt_seconds * sample_rate)))
        offset = int(rng.integers(0, length - n + 1))
        clips = {s: w[..., offset:offset + n] for s, w in wavs.items()}
        for name, spec in anchors.items():
            clips[name] = make_anchor(clips["reference"], sample_rate, spec, rng)
        # loudness-match every clip of a set, then one shared gain keeps the loudest peak below PEAK
        clips = {s: loudness_normalize(w, sample_rate, target_lufs, peak=np.inf) for s, w in clips.items()}
        gain = min(1.0, PEAK / max(float(np.max(np.abs(w))) for w in clips.values()))
        set_id = f"set{k + 1:0{width}d}"
        ids = _blind_ids(len(clips), rng)
        for cid, (system, wav) in zip(ids, clips.items()):
            save_audio(tmp / "public" / "audio" / f"{cid}.wav", wav * gain, sample_rate)
            src = rows[rows["system"] == system]["path"]
            key.append({"clip": cid, "set": set_id, "system": system, "prompt": int(prompt),
                        "caption": rows["caption"].iloc[0], "source": src.iloc[0] if len(src) else "(anchor)",
                        "offset_s": offset / sample_rate, "seconds": n / sample_rate})
        order = list(rng.permutation(ids))  # systems shuffled per set (the server reshuffles per rater)
        sets.append({"set": set_id, "caption": rows["caption"].iloc[0], "clips": [str(c) for c in order]})
    kit_id = hashlib.sha256(json.dumps([seed, sets]).encode()).hexdigest()[:16]
    (tmp / "public" / "kit.json").write_text(json.dumps(
        {"kit_id": kit_id, "title": title, "instructions": INSTRUCTIONS, "sample_rate": sample_rate, "sets": sets},
        indent=1))
    for f in PAGE_DIR.iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / "public" / f.name)
    pd.DataFrame(key).to_csv(tmp / "key.csv", index=False)
    (tmp / "build.json").write_text(json.dumps(
        {"kit_id": kit_id, "seed": seed, "n_sets": len(sets), "sample_rate": sample_rate,
         "excerpt_seconds": excerpt_seconds, "target_lufs": target_lufs, "anchors": anchors,
         "systems": systems + list(anchors)}, indent=1))
    _replace_dir(tmp, out)
    return out


def build_kit_from_params(P: Mapping[str, Any], out_dir: str | os.PathLike | None = None,
                          systems: Mapping[str, str] | None = None) -> Path:
    """Build the kit described by params.yaml's `listening` group (and `common` sample rate / seed)."""
    L, C = P["listening"], P["common"]
    systems = dict(L.get("systems") or {}) if systems is None else dict(systems)
    ref = bool(L.get("reference", True))  # anchors are made from the reference: no reference, no anchors
    sources = gather_sources(L["manifest"] if ref else None, systems, ref)
    return build_kit(sources, out_dir or L["kit_dir"], n_sets=int(L["n_sets"]), sample_rate=int(C["sample_rate"]),
                     excerpt_seconds=L.get("excerpt_seconds"), target_lufs=float(L["target_lufs"]),
                     anchors=(L.get("anchors") or {}) if ref else {}, seed=int(C["seed"]))
