"""MIDI -> audio with FluidSynth and a General MIDI soundfont.

Several performances of one piece are written into one MIDI file as consecutive segments (each with its
own exact tempo and programs, separated by a silent gap) and rendered by one FluidSynth call: the
soundfont loads once per piece instead of once per performance. Segment start times are known exactly, so
the audio is cut back into performances afterwards.

FluidSynth always renders in stereo; by default the two channels are averaged (mono corpus). `stereo=True`
keeps both ([2, T]) for the mono-to-stereo model; `pan_spread` > 0 places each melodic part of a performance at
its own pan position (MIDI CC 10, spread evenly over [-pan_spread, pan_spread]; drums stay centred), since a
General MIDI file that sets no pan leaves every channel centred.

Timing: FluidSynth starts notes on 64-sample blocks, so a single onset may be late by up to one block
(1.5 ms at 44.1 kHz, 8 ms at 8 kHz) but never drifts: the tempo, hence the BPM label, is exact.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .arrange import Performance

__all__ = ["find_soundfont", "find_fluidsynth", "part_pans", "write_midi", "render_midi", "render_performances"]

DEBIAN_SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TICKS_PER_BEAT = 960
DRUM_CHANNEL = 9


def find_soundfont(preferred: str | os.PathLike | None = None) -> Path:
    """The soundfont to use: `preferred` if given, else Debian's FluidR3_GM, else pretty_midi's TimGM6mb."""
    if preferred and str(preferred) not in ("auto", ""):
        p = Path(preferred)
        if not p.is_file():
            raise FileNotFoundError(f"soundfont {p} not found")
        return p
    if DEBIAN_SF2.is_file():
        return DEBIAN_SF2
    import pretty_midi
    p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if p.is_file():
        return p
    raise FileNotFoundError("no General MIDI soundfont: install fluid-soundfont-gm (scripts/install_system_deps.sh)")


def find_fluidsynth() -> str:
    """Path of the fluidsynth executable, or a clear error saying how to install it."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("fluidsynth not found on PATH: run scripts/install_system_deps.sh (Debian package fluidsynth)")
    return exe


# ---- MIDI writing ----


def part_pans(n_parts: int, spread: float) -> list[float]:
    """Pan positions in [-spread, spread] for n melodic parts, evenly spread (one part: centre)."""
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"pan_spread must lie in [0, 1], got {spread}")
    return [0.0] if n_parts == 1 else [float(p) for p in np.linspace(-spread, spread, n_parts)]


def write_midi(performances: list[Performance], path: str | os.PathLike, gap_s: float = 2.0,
               pan_spread: float = 0.0) -> list[float]:
    """Write performances as consecutive segments of one type-0 MIDI file; return each segment's start (s).

    MIDI tempo per segment is `round(60e6 / qpm)` microseconds per quarter note (relative error < 1e-6).
    `pan_spread` > 0 adds a pan (CC 10) per melodic part; 0 writes no pan message (every channel centred).
    """
    import mido

    events: list[tuple[int, int, mido.Message]] = []    # (tick, order, message)
    starts, t_tick, t_sec = [], 0, 0.0
    for perf in performances:
        us = int(round(60e6 / perf.qpm))
        starts.append(t_sec)
        events.append((t_tick, 0, mido.MetaMessage("set_tempo", tempo=us)))
        melodic = [c for c in range(16) if c != DRUM_CHANNEL]
        chan_of, end_ql = {}, 0.0
        pans = part_pans(sum(not p.is_drum for p in perf.parts), pan_spread) if pan_spread > 0 else []
        k_mel = 0
        for i, part in enumerate(perf.parts):
            if part.is_drum:
                ch = DRUM_CHANNEL
            else:
                # one channel per part; past 15 parts, parts share the channel of their program
                ch = melodic[i] if i < len(melodic) else chan_of.get(part.program, melodic[-1])
                chan_of.setdefault(part.program, ch)
                events.append((t_tick, 1, mido.Message("program_change", channel=ch, program=int(part.program or 0))))
                if pans:
                    cc = int(np.clip(round(64 + 63 * pans[k_mel]), 1, 127))
                    events.append((t_tick, 1, mido.Message("control_change", channel=ch, control=10, value=cc)))
                k_mel += 1
            for on, dur, pitch, vel in part.notes:
                a = t_tick + int(round(on * TICKS_PER_BEAT))
                b = max(a + 1, t_tick + int(round((on + dur) * TICKS_PER_BEAT)))
                p, v = int(np.clip(pitch, 0, 127)), int(np.clip(vel, 1, 127))
                events.append((a, 3, mido.Message("note_on", channel=ch, note=p, velocity=v)))
                events.append((b, 2, mido.Message("note_off", channel=ch, note=p, velocity=0)))
                end_ql = max(end_ql, on + dur)
        seg_ticks = int(round(end_ql * TICKS_PER_BEAT)) + 1
        gap_ticks = int(round(gap_s * 1e6 / us * TICKS_PER_BEAT))
        t_tick += seg_ticks + gap_ticks
        t_sec += (seg_ticks + gap_ticks) * us / 1e6 / TICKS_PER_BEAT
        for ch in range(16):   # all notes off before the next segment
            events.append((t_tick - 1, 4, mido.Message("control_change", channel=ch, control=123, value=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    last = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=1))
    mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    mid.tracks.append(track)
    mid.save(str(path))
    return starts


# ---- FluidSynth ----


def render_midi(midi_path: str | os.PathLike, sample_rate: int, soundfont: str | os.PathLike | None = None,
                gain: float = 0.5, timeout: float = 600.0, stereo: bool = False) -> np.ndarray:
    """Render a MIDI file with the fluidsynth CLI (float WAV, no clipping) -> mono float32 [T] (stereo: [2, T])."""
    from ..audio import load_audio

    sf2 = find_soundfont(soundfont)
    with tempfile.TemporaryDirectory(prefix="presto_fs_") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [find_fluidsynth(), "-ni", "-q", "-g", str(gain), "-r", str(int(sample_rate)),
               "-o", "synth.dynamic-sample-loading=1", "-o", "audio.file.format=float",
               "-o", "synth.cpu-cores=1", "-F", str(wav), str(sf2), str(midi_path)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed on {midi_path} (rc={r.returncode}): {r.stderr.strip()[-300:]}")
        x, sr = load_audio(wav, mono=not stereo)
    if sr != int(sample_rate):
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, asked for {sample_rate} Hz")
    if not stereo:
        return x[0]
    return np.concatenate([x, x]) if x.shape[0] == 1 else x[:2]


def render_performances(performances: list[Performance], sample_rate: int, soundfont=None, gain: float = 0.5,
                        gap_s: float = 2.0, stereo: bool = False,
                        pan_spread: float = 0.0) -> list[tuple[np.ndarray, float]]:
    """Render performances in one FluidSynth call -> [(audio [T] (stereo: [2, T]) from the segment start, start s)]."""
    with tempfile.TemporaryDirectory(prefix="presto_mid_") as tmp:
        mid = Path(tmp) / "piece.mid"
        starts = write_midi(performances, mid, gap_s=gap_s, pan_spread=pan_spread)
        audio = render_midi(mid, sample_rate, soundfont, gain, stereo=stereo)
    out = []
    for k, s in enumerate(starts):
        a = int(round(s * sample_rate))
        b = int(round(starts[k + 1] * sample_rate)) if k + 1 < len(starts) else audio.shape[-1]
        out.append((audio[..., a:b], s))
    return out
