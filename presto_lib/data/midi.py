"""Symbolic music for the corpus: a light score record (`PieceScore`) loaded from music21 or a MIDI file, and
the symbolic operations the builder needs (meter beats, key estimation, transposition, excerpts).

Augmentation is symbolic (paper 4.1 uses pitch shift and time stretch on audio): transposing notes and
rendering at a scaled tempo changes the key and BPM labels exactly, with no DSP artefacts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = ["Part", "PieceScore", "beat_ql", "bar_ql", "load_music21_piece", "load_midi_file", "estimate_key",
           "transpose", "excerpt", "tile", "key_candidates_from_sharps", "slugify"]

NOTE_COLS = 4  # onset_ql, duration_ql, pitch, velocity


@dataclass
class Part:
    """One voice/instrument: notes [N, 4] = (onset, duration) in quarter notes, MIDI pitch, velocity."""
    name: str
    notes: np.ndarray
    program: int | None = None   # GM program when the source says (MIDI files); None = let the style choose
    is_drum: bool = False


@dataclass
class PieceScore:
    """Everything the builder needs about one piece, independent of where it came from."""
    piece_id: str
    source: str
    style: str
    parts: list[Part]
    meter: tuple[int, int] = (4, 4)
    key_sharps: int | None = None           # key signature (None = unknown)
    tempo_bpm: float | None = None          # usable tempo mark, in beats per minute (beat = `beat_ql`)
    anchor_ql: float = 0.0                  # offset of the first full bar (after a pickup)
    length_ql: float = 0.0
    chords: list[tuple[float, int, tuple[int, ...]]] = field(default_factory=list)  # (onset, root pc, pcs)
    title: str = ""
    composer: str = ""
    region: str = ""
    license: str = ""


# ---- meter ----


def beat_ql(meter: tuple[int, int]) -> float:
    """Beat length in quarter notes: the denominator's note, or a dotted one in compound meters (6/8, 9/8, 12/8)."""
    num, den = meter
    compound = num in (6, 9, 12) and den >= 4
    return (4.0 / den) * (3.0 if compound else 1.0)


def bar_ql(meter: tuple[int, int]) -> float:
    """Bar length in quarter notes."""
    return meter[0] * 4.0 / meter[1]


def slugify(text: str) -> str:
    """A file-system-safe id fragment."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


# ---- keys (Krumhansl-Kessler profiles) ----

_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_candidates_from_sharps(sharps: int) -> list[tuple[int, str]]:
    """The major key and its relative minor for a key signature (+sharps / -flats)."""
    major = (7 * sharps) % 12
    return [(major, "major"), ((major + 9) % 12, "minor")]


def estimate_key(parts: list[Part], candidates: list[tuple[int, str]] | None = None) -> tuple[int, str]:
    """Duration-weighted Krumhansl-Kessler key estimate -> (tonic pitch class, 'major'|'minor')."""
    hist = np.zeros(12)
    for p in parts:
        if p.is_drum or len(p.notes) == 0:
            continue
        np.add.at(hist, p.notes[:, 2].astype(int) % 12, p.notes[:, 1])
    if hist.sum() <= 0:
        return (candidates or [(0, "major")])[0]
    cands = candidates or [(t, m) for t in range(12) for m in ("major", "minor")]
    score = lambda t, m: np.corrcoef(hist, np.roll(_KK_MAJOR if m == "major" else _KK_MINOR, t))[0, 1]
    return max(cands, key=lambda c: score(*c))


# ---- symbolic operations ----


def transpose(parts: list[Part], semitones: int, low: int = 21, high: int = 108) -> list[Part]:
    """Shift every pitched note by `semitones` (drums untouched), folding by octaves into [low, high]."""
    out = []
    for p in parts:
        n = p.notes.copy()
        if not p.is_drum and semitones:
            pitch = n[:, 2] + semitones
            pitch = np.where(pitch < low, pitch + 12 * np.ceil((low - pitch) / 12), pitch)
            pitch = np.where(pitch > high, pitch - 12 * np.ceil((pitch - high) / 12), pitch)
            n[:, 2] = pitch
        out.append(replace(p, notes=n))
    return out


def excerpt(parts: list[Part], start_ql: float, end_ql: float) -> list[Part]:
    """Notes starting in [start, end), shifted to start at 0 and cut at `end`."""
    out = []
    for p in parts:
        n = p.notes
        keep = (n[:, 0] >= start_ql - 1e-9) & (n[:, 0] < end_ql - 1e-9)
        m = n[keep].copy()
        m[:, 0] -= start_ql
        m[:, 1] = np.minimum(m[:, 1], end_ql - start_ql - m[:, 0])
        out.append(replace(p, notes=m))
    return out


def tile(piece: PieceScore, times: int) -> PieceScore:
    """Repeat a short piece `times` times end to end (folk tunes are sung/played with repeats)."""
    if times <= 1:
        return piece
    span = math.ceil(piece.length_ql / bar_ql(piece.meter) - 1e-9) * bar_ql(piece.meter) if piece.length_ql else 0
    span = max(span, piece.length_ql)
    parts = [replace(p, notes=np.concatenate([p.notes + np.array([k * span, 0, 0, 0]) for k in range(times)]))
             for p in piece.parts]
    chords = [(o + k * span, r, pcs) for k in range(times) for (o, r, pcs) in piece.chords]
    return replace(piece, parts=parts, chords=chords, length_ql=span * (times - 1) + piece.length_ql)


# ---- loaders ----


def _notes_array(rows: list[tuple[float, float, int, int]]) -> np.ndarray:
    arr = np.array(rows, dtype=np.float64).reshape(-1, NOTE_COLS)
    return arr[np.lexsort((arr[:, 2], arr[:, 0]))] if len(arr) else arr


def load_music21_piece(path: str, number: int | None, style: str, piece_id: str, **meta) -> PieceScore:
    """Parse one work of the music21 corpus into a PieceScore (ties merged; repeats not expanded)."""
    from music21 import common, converter, harmony, key, meter, stream, tempo

    file = Path(common.getCorpusFilePath()) / path
    try:   # parse the file directly (corpus.parse searches the work list first); never use music21's pickles
        s = converter.parse(file, number=number, forceSource=True) if number is not None else \
            converter.parse(file, forceSource=True)
    except Exception as e:
        raise ValueError(f"music21 could not parse {path}#{number}: {type(e).__name__}: {e}") from e
    if isinstance(s, stream.Opus):
        s = s.scores[0]
    part_streams = list(s.parts) if len(s.parts) else [s]
    parts = []
    for i, ps in enumerate(part_streams):
        rows, open_ties = [], {}
        for el in ps.flatten().notes:
            if isinstance(el, harmony.Harmony) or el.quarterLength <= 0:
                continue
            vel = el.volume.velocity if el.volume.velocity is not None else 80
            for sub in (el.notes if el.isChord else [el]):
                tie = sub.tie or el.tie
                kind = tie.type if tie is not None else None
                m = int(sub.pitch.midi)
                if kind in ("continue", "stop") and m in open_ties:   # merge tied notes into one
                    k = open_ties[m]
                    rows[k] = (rows[k][0], float(el.offset) + float(el.quarterLength) - rows[k][0], m, rows[k][3])
                    if kind == "stop":
                        del open_ties[m]
                    continue
                if kind == "start":
                    open_ties[m] = len(rows)
                rows.append((float(el.offset), float(el.quarterLength), m, int(vel)))
        parts.append(Part(name=str(ps.partName or f"part{i + 1}"), notes=_notes_array(rows)))
    parts = [p for p in parts if len(p.notes)]
    if not parts:
        raise ValueError(f"{path}#{number} has no pitched notes")
    ts = s.recurse().getElementsByClass(meter.TimeSignature).first()
    met = (int(ts.numerator), int(ts.denominator)) if ts is not None else (4, 4)
    ks = s.recurse().getElementsByClass(key.KeySignature).first()
    bpm = None
    mm = s.recurse().getElementsByClass(tempo.MetronomeMark).first()
    if mm is not None and mm.number is not None and not getattr(mm, "numberImplicit", False):
        bpm = float(mm.getQuarterBPM()) / beat_ql(met)
    anchor = 0.0
    ms = part_streams[0].getElementsByClass(stream.Measure)
    if len(ms) > 1 and (ms[0].paddingLeft or 0) > 0:
        anchor = float(ms[1].offset)
    chords = []
    for cs in s.recurse().getElementsByClass(harmony.ChordSymbol):
        if isinstance(cs, harmony.NoChord) or not cs.pitches:
            continue
        chords.append((float(cs.getOffsetInHierarchy(s)), cs.root().pitchClass,
                       tuple(sorted({p.pitchClass for p in cs.pitches}))))
    md = s.metadata
    return PieceScore(
        piece_id=piece_id, source=f"music21:{path}" + (f"#{number}" if number is not None else ""), style=style,
        parts=parts, meter=met, key_sharps=int(ks.sharps) if ks is not None else None, tempo_bpm=bpm,
        anchor_ql=anchor, length_ql=float(max((p.notes[:, 0] + p.notes[:, 1]).max() for p in parts)),
        chords=sorted(chords), title=meta.get("title") or (md.title if md and md.title else "") or "",
        composer=meta.get("composer") or (md.composer if md and md.composer else "") or "",
        region=meta.get("region", ""), license=meta.get("license", ""))


def load_midi_file(path: str | Path, piece_id: str, style: str = "user_midi", license: str = "user-supplied",
                   root: str | Path | None = None) -> PieceScore:
    """Read a .mid file (pretty_midi) into a PieceScore, keeping its programs and drums.

    Note positions are kept in beats (ticks / resolution); the piece is later rendered at one constant tempo
    (its first tempo mark), so tempo changes inside the file are flattened and the BPM label stays exact.
    """
    import pretty_midi

    path = Path(path)
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:
        raise ValueError(f"cannot parse MIDI file {path}: {type(e).__name__}: {e}") from e
    res = float(pm.resolution)
    tick = lambda t: pm.time_to_tick(t) / res
    parts = []
    for i, inst in enumerate(pm.instruments):
        rows = [(tick(n.start), tick(n.end) - tick(n.start), n.pitch, n.velocity) for n in inst.notes]
        rows = [r for r in rows if r[1] > 0]
        if rows:
            parts.append(Part(name=inst.name or f"track{i + 1}", notes=_notes_array(rows),
                              program=int(inst.program), is_drum=bool(inst.is_drum)))
    if not parts or all(p.is_drum for p in parts):
        raise ValueError(f"MIDI file {path} has no pitched notes")
    tsc = pm.time_signature_changes
    met = (int(tsc[0].numerator), int(tsc[0].denominator)) if tsc else (4, 4)
    _, tempi = pm.get_tempo_changes()
    bpm = float(tempi[0]) / beat_ql(met) if len(tempi) else None
    sharps = None
    if pm.key_signature_changes:
        k = pm.key_signature_changes[0].key_number  # 0-11 major tonic, 12-23 minor tonic
        major = k % 12 if k < 12 else (k - 12 + 3) % 12
        sharps = next(s for s in range(-6, 7) if (7 * s) % 12 == major)
    src = path.relative_to(root).as_posix() if root else path.name
    return PieceScore(piece_id=piece_id, source=f"midi:{src}", style=style, parts=parts, meter=met,
                      key_sharps=sharps, tempo_bpm=bpm,
                      length_ql=float(max((p.notes[:, 0] + p.notes[:, 1]).max() for p in parts)),
                      title=path.stem.replace("_", " "), license=license)
