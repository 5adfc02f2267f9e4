"""Choosing pieces cheaply from music21's metadata cache (no score is parsed here), balancing styles, and
assigning leak-free splits by piece group.

Folk melodies are 87% of music21's bundled corpus by count; capping pieces and clips per style keeps them
from swamping chorales, polyphony, quartets and piano music.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .midi import slugify
from .styles import STYLES, USER_STYLE, style_of_corpus_path

__all__ = ["PieceTask", "select_music21", "available_works", "select_midi_folder", "assign_splits", "plan_renders", "stable_hash"]

_EXT_PREF = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".krn": 3, ".abc": 4}
_REGIONS = {"han": "Chinese", "natmin": "Chinese", "irl": "Irish", "lux": "Luxembourgish", "lot": "Lorraine"}


def stable_hash(*parts) -> int:
    """A process-independent 63-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1("|".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


@dataclass
class PieceTask:
    """A piece to render: where it comes from, its style and split group, and how much to render."""
    piece_id: str
    style: str
    kind: str                 # "music21" | "midi"
    path: str                 # corpus-relative path or absolute MIDI path
    number: int | None = None
    group: str = ""           # pieces in one group share a split (variants/duplicates of one tune)
    title: str = ""
    composer: str = ""
    region: str = ""
    license: str = ""
    root: str = ""            # MIDI folder (for a relative source name)
    split: str = "train"
    renders: int = 1
    clips_per_render: int = 1


def _composer(name: str | None) -> str:
    """'Palestrina, Giovanni Perluigi da' -> 'Giovanni Perluigi da Palestrina'."""
    if not name:
        return ""
    name = str(name).strip()
    paren = re.search(r"\(([^)]+)\)", name)          # 'No. 4 Mrs. H.H.A. Beach (Amy Beach) Op. 75' -> 'Amy Beach'
    if paren:
        return paren.group(1).strip()
    if "," in name:
        last, first = [x.strip() for x in name.split(",", 1)]
        name = f"{first} {last}"
    return name


def _norm_title(t: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(t).lower()).strip()


def _eligible(styles: list[str] | None, max_notes: int, min_notes: int) -> dict[str, dict[str, tuple]]:
    """Works per style from music21's metadata bundle: {style: {work key: (ext rank, path, number, metadata)}}."""
    from music21.metadata.bundles import MetadataBundle

    bundle = MetadataBundle("core").read()   # the cached metadata of every bundled work (~2 s, no parsing)
    by_style: dict[str, dict[str, tuple]] = {}
    for entry in bundle[:]:                  # one slice: MetadataBundle indexing is O(n) per item
        md, path = entry.metadata, str(entry.sourcePath)
        style = style_of_corpus_path(path)
        if md is None or style is None or (styles and style.name not in styles):
            continue
        notes = int(md.noteCount or 0)
        if not (min_notes <= notes <= max_notes):
            continue
        number = int(entry.number) if entry.number not in (None, "") else None
        stem, ext = path.rsplit(".", 1)[0], "." + path.rsplit(".", 1)[-1]
        key = f"{stem}#{number}"                      # the same work in two encodings (.krn/.mxl) once
        cand = (_EXT_PREF.get(ext, 9), path, number, md)
        cur = by_style.setdefault(style.name, {}).get(key)
        if cur is None or cand[0] < cur[0]:
            by_style[style.name][key] = cand
    return by_style


def available_works(max_notes: int = 10**9, min_notes: int = 0) -> dict[str, int]:
    """How many bundled music21 works each style could draw on (before the per-style cap)."""
    return {k: len(v) for k, v in sorted(_eligible(None, max_notes, min_notes).items())}


def select_music21(styles: list[str] | None, max_pieces_per_style: int, max_notes: int, min_notes: int,
                   seed: int) -> list[PieceTask]:
    """Up to `max_pieces_per_style` works per style from music21's metadata bundle, chosen at random (seeded)."""
    by_style = _eligible(styles, max_notes, min_notes)
    tasks = []
    for name in sorted(by_style):
        style = STYLES[name]
        items = sorted(by_style[name].items())
        rng = np.random.default_rng([seed, stable_hash("select", name)])
        pick = rng.permutation(len(items))[:max_pieces_per_style]
        for i in sorted(pick):
            key, (_, path, number, md) = items[i]
            title = str(md.title or md.movementName or "")
            folk = path.endswith(".abc")
            stem = path.rsplit(".", 1)[0]
            fname = Path(stem).name
            region = next((v for k, v in _REGIONS.items() if fname.startswith(k)), "")
            tasks.append(PieceTask(
                piece_id=slugify(f"{stem}_{number}" if number is not None else stem), style=name,
                kind="music21", path=path, number=number, title=title, composer=_composer(md.composer),
                group=f"{name}:{_norm_title(title)}" if folk and _norm_title(title) else stem,
                region=region, license=style.license))
    return tasks


def select_midi_folder(folder: str | Path, max_pieces: int | None = None) -> list[PieceTask]:
    """Every .mid/.midi file under `folder` (sorted), as user_midi tasks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MIDI folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
    tasks = []
    for p in files[:max_pieces]:
        rel = p.relative_to(folder).with_suffix("").as_posix()
        tasks.append(PieceTask(piece_id=slugify(f"midi_{rel}"), style=USER_STYLE.name, kind="midi", path=str(p),
                               group=f"midi:{rel}", title=p.stem.replace("_", " "), license="user-supplied",
                               root=str(folder)))
    return tasks


def assign_splits(tasks: list[PieceTask], fractions: dict[str, float], seed: int) -> None:
    """Set `task.split` by group: groups are dealt round-robin over styles (seeded order), so every split
    samples every style as far as counts allow, and no group (piece + its variants) spans two splits."""
    f_valid, f_test = float(fractions.get("valid", 0.1)), float(fractions.get("test", 0.1))
    if f_valid < 0 or f_test < 0 or f_valid + f_test >= 1:
        raise ValueError(f"split fractions must be >= 0 with valid + test < 1, got {fractions}")
    groups: dict[str, list[str]] = {}
    style_of: dict[str, str] = {}
    for t in tasks:
        style_of.setdefault(t.group, t.style)
    for g, s in style_of.items():
        groups.setdefault(s, []).append(g)
    ranked = {s: sorted(gs, key=lambda g: stable_hash(seed, "split", g)) for s, gs in groups.items()}
    order = []
    for r in range(max((len(v) for v in ranked.values()), default=0)):
        for s in sorted(ranked):
            if r < len(ranked[s]):
                order.append(ranked[s][r])
    split_of, acc_v, acc_t = {}, 0.5, 0.5
    for g in order:
        acc_v += f_valid
        acc_t += f_test
        if acc_t >= 1:
            split_of[g], acc_t = "test", acc_t - 1
        elif acc_v >= 1:
            split_of[g], acc_v = "valid", acc_v - 1
        else:
            split_of[g] = "train"
    for t in tasks:
        t.split = split_of[t.group]


def plan_renders(tasks: list[PieceTask], max_clips_per_style: int, max_clips_per_render: int,
                 augmentations: int, max_renders_per_piece: int, augment_splits: list[str]) -> None:
    """Set renders and clips per render so each style gets about `max_clips_per_style` clips.

    Pieces in `augment_splits` get 1 + `augmentations` renders (more, up to `max_renders_per_piece`, when a
    style has few pieces); others are rendered once, unaugmented.
    """
    by_style: dict[str, list[PieceTask]] = {}
    for t in tasks:
        by_style.setdefault(t.style, []).append(t)
    for style, ts in by_style.items():
        n = len(ts)
        base = 1 + augmentations
        if n * base > max_clips_per_style:               # plenty of pieces: fewer augmented performances
            base = max(1, max_clips_per_style // n)
        scarce = math.ceil(max_clips_per_style / max(1, n * max_clips_per_render))
        for t in ts:
            t.renders = max(base, min(max_renders_per_piece, scarce)) if t.split in augment_splits else 1
        total = sum(t.renders for t in ts)
        k = int(np.clip(int(max_clips_per_style / max(total, 1) + 0.5), 1, max_clips_per_render))
        for t in ts:
            t.clips_per_render = k
