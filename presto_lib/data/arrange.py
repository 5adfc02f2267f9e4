"""Arranging a piece for rendering: GM instruments per part, an optional drum/bass/chord accompaniment for
rhythmic styles, and the `Performance` record (excerpt + transposition + exact tempo) that render.py plays.

Accompaniment layer (documented choice): for single-melody styles, with the style's probability, we add
  - a chord instrument (guitar/piano/accordion/harp) playing the triad on every beat,
  - a bass playing the chord root on each half bar (and the fifth on the next beat when there is one),
  - optionally drums: kick on the downbeat (and bar middle in 4/4), snare on the other beats, closed hi-hat
    on every subdivision (eighths, or triplet eighths in compound meters).
Chords come from the score's chord symbols when it has them, else from the diatonic triad (I, ii, IV, V, vi
or i, III, iv, V, VI) that best covers the melody notes of each half bar.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .midi import Part, PieceScore, bar_ql, beat_ql
from .styles import Style, program_name

__all__ = ["Performance", "assign_programs", "accompaniment", "diatonic_chords"]

# GM percussion keys (channel 10)
KICK, SNARE, HAT = 36, 38, 42
_CHORD_PROGRAMS = (25, 24, 0, 21, 46)
_BASS_PROGRAMS = (32, 33)


@dataclass
class Performance:
    """One rendering of a piece: arranged parts (onsets from 0, in quarter notes) at an exact tempo."""
    parts: list[Part]
    bpm: float            # beats per minute (the label)
    beat_ql: float        # beat length in quarter notes, so MIDI tempo = bpm * beat_ql quarter notes/min
    tonic: int
    mode: str
    transpose: int
    tempo_factor: float
    n_clips: int
    start_ql: float
    accompanied: bool

    @property
    def qpm(self) -> float:
        """Quarter notes per minute (the MIDI tempo)."""
        return self.bpm * self.beat_ql

    @property
    def instruments(self) -> list[str]:
        """Distinct instrument names in score order."""
        names = [program_name(p.program or 0, p.is_drum) for p in self.parts if len(p.notes)]
        return list(dict.fromkeys(names))


# ---- orchestration ----


def assign_programs(parts: list[Part], style: Style, rng: np.random.Generator) -> list[Part]:
    """Give each part a GM program from one of the style's ensembles (parts in score order = high to low).

    Parts that already carry a program (MIDI files) keep it: ensembles are kept as ensembles.
    """
    if all(p.program is not None or p.is_drum for p in parts):
        return list(parts)
    if style.keep_first and rng.random() < style.keep_first:
        ens = style.ensembles[0]
    else:
        ens = style.ensembles[int(rng.integers(len(style.ensembles)))]
    n = len(parts)
    out = []
    for i, p in enumerate(parts):
        j = 0 if n == 1 else int(round(i * (len(ens) - 1) / (n - 1)))
        out.append(p if p.program is not None else replace(p, program=int(ens[min(j, len(ens) - 1)])))
    return out


# ---- harmony for the accompaniment ----


def diatonic_chords(tonic: int, mode: str) -> list[tuple[int, tuple[int, ...]]]:
    """(root pc, chord pcs) for I ii IV V vi (major) or i III iv V VI (minor)."""
    if mode == "major":
        spec = [(0, (0, 4, 7)), (2, (0, 3, 7)), (5, (0, 4, 7)), (7, (0, 4, 7)), (9, (0, 3, 7))]
    else:
        spec = [(0, (0, 3, 7)), (3, (0, 4, 7)), (5, (0, 3, 7)), (7, (0, 4, 7)), (8, (0, 4, 7))]
    return [((tonic + r) % 12, tuple(sorted((tonic + r + i) % 12 for i in iv))) for r, iv in spec]


def _choose_chord(notes: np.ndarray, t0: float, t1: float, cands, prev) -> tuple[int, tuple[int, ...]]:
    """The candidate triad covering most melody duration in [t0, t1) (ties: tonic, then previous chord)."""
    w = np.zeros(12)
    if len(notes):
        a = np.maximum(notes[:, 0], t0)
        b = np.minimum(notes[:, 0] + notes[:, 1], t1)
        dur = np.clip(b - a, 0, None)
        np.add.at(w, notes[:, 2].astype(int) % 12, dur)
    bonus = lambda k, c: (0.05 if k == 0 else 0) + (0.02 if c == prev else 0) + (0.03 if k == 3 else 0)
    scores = [w[list(c[1])].sum() - 0.5 * (w.sum() - w[list(c[1])].sum()) + bonus(k, c) for k, c in enumerate(cands)]
    return cands[int(np.argmax(scores))]


def accompaniment(melody: list[Part], meter: tuple[int, int], length_ql: float, tonic: int, mode: str,
                  rng: np.random.Generator, drums: bool,
                  chords: list[tuple[float, int, tuple[int, ...]]] | None = None,
                  anchor_ql: float = 0.0) -> list[Part]:
    """Chord, bass and (optional) drum parts over [0, length) for an excerpt starting on a downbeat."""
    bar, beat = bar_ql(meter), beat_ql(meter)
    beats_per_bar = max(1, int(round(bar / beat)))
    seg = bar / 2 if beats_per_bar % 2 == 0 else bar      # harmonic rhythm: half bar (duple) or bar (triple)
    seg_beats = max(1, int(round(seg / beat)))
    sub = beat / 3 if abs(beat % 1.5) < 1e-9 and beat >= 1.5 else beat / 2
    notes = np.concatenate([p.notes for p in melody if not p.is_drum]) if melody else np.zeros((0, 4))
    cands = diatonic_chords(tonic, mode)
    chord_rows, bass_rows, drum_rows = [], [], []
    prev = None
    t = anchor_ql
    while t < length_ql - 1e-9:
        t1 = min(t + seg, length_ql)
        if chords:
            active = [c for c in chords if c[0] <= t + 1e-9]
            root, pcs = (active[-1][1], active[-1][2]) if active else _choose_chord(notes, t, t1, cands, prev)
        else:
            root, pcs = _choose_chord(notes, t, t1, cands, prev)
        prev = (root, pcs)
        voicing = sorted(55 + ((pc - 55) % 12) for pc in pcs)          # close position from G3
        for b in range(seg_beats):
            tb = t + b * beat
            if tb >= t1 - 1e-9:
                break
            for pitch in voicing:
                chord_rows.append((tb, beat * 0.8, pitch, 58 if b else 66))
            if b < 2:                                                   # root, then the fifth
                bass_rows.append((tb, beat * 0.9, 36 + (root - 36) % 12 + 7 * b, 84 - 12 * b))
            if drums:   # kick on the downbeat (and mid-bar in 4), snare on the off beats, hats on subdivisions
                bib = int(round((tb - anchor_ql) / beat)) % beats_per_bar
                kick = bib == 0 or (beats_per_bar == 4 and bib == 2)
                drum_rows.append((tb, 0.1, KICK if kick else SNARE, 96 if kick else (60 if beats_per_bar == 3 else 78)))
                k = 0
                while tb + k * sub < min(tb + beat, t1) - 1e-9:
                    drum_rows.append((tb + k * sub, 0.1, HAT, 58 if k == 0 else 42))
                    k += 1
        t = t1
    arr = lambda rows: np.array(sorted(rows), dtype=np.float64).reshape(-1, 4)
    out = [Part("chords", arr(chord_rows), program=int(rng.choice(_CHORD_PROGRAMS))),
           Part("bass", arr(bass_rows), program=int(rng.choice(_BASS_PROGRAMS)))]
    if drums:
        out.append(Part("drums", arr(drum_rows), program=0, is_drum=True))
    return out


def plan_performance(piece: PieceScore, style: Style, rng: np.random.Generator, bpm: float, n_clips: int,
                     clip_seconds: float, transpose_by: int = 0, tempo_factor: float = 1.0,
                     tonic_mode: tuple[int, str] | None = None) -> Performance | None:
    """Pick an excerpt (on a bar line) long enough for `n_clips` clips at `bpm`, arrange it, or None if too short."""
    from .midi import estimate_key, excerpt, key_candidates_from_sharps, transpose

    b = beat_ql(piece.meter)
    ql_per_s = bpm * b / 60.0
    need = n_clips * clip_seconds * ql_per_s
    bar = bar_ql(piece.meter)
    starts = np.arange(piece.anchor_ql, max(piece.length_ql - need, piece.anchor_ql) + 1e-9, bar)
    fits = starts[starts + need <= piece.length_ql + 1e-9]
    if len(fits) == 0:
        starts0 = [0.0]
        n_fit = int(np.floor(piece.length_ql / (clip_seconds * ql_per_s) + 1e-9))
        if n_fit < 1:
            return None
        n_clips, need, fits = n_fit, n_fit * clip_seconds * ql_per_s, np.array(starts0)
    start = float(fits[int(rng.integers(len(fits)))])
    end = start + need + 0.5 * ql_per_s                     # half a second of notes beyond the last clip
    parts = excerpt(piece.parts, start, end)
    cands = key_candidates_from_sharps(piece.key_sharps) if piece.key_sharps is not None else None
    tonic, mode = tonic_mode or estimate_key(parts, cands)
    parts = transpose(parts, transpose_by)
    tonic = (tonic + transpose_by) % 12
    parts = assign_programs(parts, style, rng)
    accompanied = len(parts) == 1 and rng.random() < style.accompany
    if accompanied:
        chords = [((o - start), (r + transpose_by) % 12, tuple(sorted((x + transpose_by) % 12 for x in pcs)))
                  for (o, r, pcs) in piece.chords]
        anchor = (piece.anchor_ql - start) % bar
        parts = parts + accompaniment(parts, piece.meter, end - start, tonic, mode, rng,
                                      drums=rng.random() < style.drums, chords=chords, anchor_ql=anchor)
    return Performance(parts=parts, bpm=float(bpm), beat_ql=b, tonic=tonic, mode=mode, transpose=transpose_by,
                       tempo_factor=tempo_factor, n_clips=n_clips, start_ql=start, accompanied=accompanied)
