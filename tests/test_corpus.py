"""The offline corpus: exact BPM labels, leak-free splits, captions from metadata, robustness to bad inputs."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pretty_midi
import pytest

from presto_lib.audio import load_audio, save_audio
from presto_lib.config import render_profile
from presto_lib.data import corpus as corpus_mod
from presto_lib.data.arrange import Performance, accompaniment, plan_performance
from presto_lib.data.captions import TEMPLATES, key_name, make_caption
from presto_lib.data.corpus import build_corpus
from presto_lib.data.datasets import ClipDataset
from presto_lib.data.folder import import_audio_folder
from presto_lib.data.midi import Part, PieceScore, estimate_key, load_music21_piece
from presto_lib.data.render import render_performances
from presto_lib.data.select import PieceTask, assign_splits, select_music21
from presto_lib.data.styles import STYLES

SR = 8000


def _onsets(x: np.ndarray, sr: int) -> np.ndarray:
    """Onset times (s): rising crossings of 30% of the peak RMS envelope after falling below 5%."""
    fr = max(1, sr // 500)
    env = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(fr) / fr, mode="same"))
    hi, lo, armed, out = 0.3 * env.max(), 0.05 * env.max(), True, []
    for i, v in enumerate(env):
        if armed and v >= hi:
            out.append(i)
            armed = False
        elif not armed and v < lo:
            armed = True
    return np.array(out) / sr


def _period(onsets: np.ndarray) -> float:
    """Least-squares beat period of evenly spaced onsets."""
    return float(np.polyfit(np.arange(len(onsets)), onsets, 1)[0])


def _beat_midi(path: Path, qpm: float = 120.0, n: int = 40, program: int = 115) -> Path:
    """A MIDI file with one short woodblock-like note on every quarter note, 4/4."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0))
    inst = pretty_midi.Instrument(program=program)
    for i in range(n):
        t = i * 60.0 / qpm
        inst.notes.append(pretty_midi.Note(velocity=110, pitch=72 + (i % 4 == 0) * 5, start=t, end=t + 0.08))
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


def _params(**corpus):
    p = render_profile("smoke")
    p["common"].update(sample_rate=SR, clip_seconds=3.0)
    p["corpus"].update(dict(music21=False, midi_dirs=[], augmentations=1, max_renders_per_piece=2, max_pieces_per_style=20,
                            max_clips_per_render=2, max_clips_per_style=100, workers=1,
                            splits={"valid": 0.25, "test": 0.25}), **corpus)
    return p


# ---- exact BPM ----


def test_render_two_tempos_exact_onset_spacing():
    notes = np.array([[i, 0.1, 76, 110] for i in range(12)], float)
    perf = lambda bpm: Performance([Part("w", notes, program=115)], bpm=bpm, beat_ql=1.0, tonic=0, mode="major",
                                   transpose=0, tempo_factor=1.0, n_clips=1, start_ql=0.0, accompanied=False)
    (a, _), (b, _) = render_performances([perf(90.0), perf(144.0)], SR)
    oa, ob = _onsets(a, SR), _onsets(b, SR)
    assert len(oa) == len(ob) == 12
    # FluidSynth starts notes on 64-sample blocks: each onset is exact to one block, the beat period exactly
    block = 64 / SR + 1e-3
    for on, bpm in [(oa, 90.0), (ob, 144.0)]:
        assert abs(_period(on) - 60 / bpm) < 5e-4
        assert np.abs(on - on[0] - np.arange(len(on)) * 60 / bpm).max() < block
    assert abs(_period(oa) / _period(ob) - 144 / 90) < 2e-3             # duration ratio = tempo ratio


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small corpus from a MIDI folder: 6 beat-track pieces at different tempi + one corrupt file."""
    root = tmp_path_factory.mktemp("corpus")
    midi = root / "midi"
    midi.mkdir()
    for k, qpm in enumerate([84, 96, 100, 112, 126, 140]):
        _beat_midi(midi / f"beats_{k}.mid", qpm=qpm)
    (midi / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage that is not a midi file")
    manifest = build_corpus(root / "out", _params(midi_dirs=[str(midi)]), progress=False)
    return manifest, pd.read_csv(manifest, keep_default_na=False)


def test_every_clip_plays_at_its_bpm_label(built):
    manifest, df = built
    assert (df.tempo_factor != 1.0).any(), "augmented (tempo-scaled) performances expected"
    for _, row in df.iterrows():
        x, sr = load_audio(manifest.parent / row.path)
        period = _period(_onsets(x[0], sr))
        assert abs(period / (60.0 / row.bpm) - 1) < 2e-3, (row.path, row.bpm, period)


def test_manifest_format_and_bad_midi_skipped(built):
    manifest, df = built
    for col in ["path", "piece_id", "split", "caption", "bpm", "key", "instruments", "duration_s",
                "sample_rate", "source", "license"]:
        assert col in df.columns
    assert (df.sample_rate == SR).all() and np.allclose(df.duration_s, 3.0)
    assert all((manifest.parent / p).is_file() for p in df.path)
    assert not (manifest.parent / "audio.partial").exists()
    skipped = pd.read_csv(manifest.parent / "skipped.csv")
    assert list(skipped.piece_id) == ["midi_broken"] and "cannot parse MIDI" in skipped.reason[0]
    summary = json.loads((manifest.parent / "summary.json").read_text())
    assert summary["pieces_skipped"] == 1 and summary["clips"] == len(df)
    assert summary["hours"] == pytest.approx(len(df) * 3.0 / 3600, abs=1e-4)


def test_build_is_deterministic(built, tmp_path):
    manifest, df = built
    again = build_corpus(tmp_path / "again", _params(midi_dirs=[str(manifest.parent.parent / "midi")]), progress=False)
    df2 = pd.read_csv(again, keep_default_na=False)
    pd.testing.assert_frame_equal(df, df2)
    a, _ = load_audio(manifest.parent / df.path[0])
    b, _ = load_audio(again.parent / df2.path[0])
    np.testing.assert_array_equal(a, b)


def test_splits_do_not_leak_and_augmentation_stays_with_piece(built):
    _, df = built
    assert df.groupby("piece_id").split.nunique().max() == 1
    assert set(df.split) == {"train", "valid", "test"}
    assert (df[df.split != "train"].semitones == 0).all()      # held-out pieces are rendered unaugmented


def test_assign_splits_keeps_groups_together():
    tasks = [PieceTask(piece_id=f"p{i}", style="s{}".format(i % 3), kind="midi", path="", group=f"g{i // 2}")
             for i in range(200)]
    assign_splits(tasks, {"valid": 0.1, "test": 0.1}, seed=0)
    by_group = {}
    for t in tasks:
        by_group.setdefault(t.group, set()).add(t.split)
    assert all(len(s) == 1 for s in by_group.values())
    counts = pd.Series([next(iter(s)) for s in by_group.values()]).value_counts()
    assert counts["test"] == 10 and counts["valid"] == 10
    with pytest.raises(ValueError):
        assign_splits(tasks, {"valid": 0.6, "test": 0.5}, seed=0)


# ---- captions and metadata ----


def test_captions_reflect_metadata(built):
    meta = dict(label="Irish dance tune", instruments=["fiddle", "acoustic guitar", "drums"], tonic=7, mode="minor",
                bpm=112, meter=(6, 8), style_words=["celtic"], composer="")
    for k in range(len(TEMPLATES)):
        c = make_caption(meta, np.random.default_rng(k), template=k)
        assert "112" in c and "G minor" in c and "irish dance tune" in c.lower(), c
        assert all(i in c.lower() for i in meta["instruments"]), c
    _, df = built
    for _, row in df.iterrows():
        assert str(int(row.bpm)) in row.caption and row.key in row.caption
        assert all(i.strip() in row.caption.lower() for i in row.instruments.split(","))


def test_strip_tempo_removes_every_tempo_cue_and_keeps_the_rest():
    from presto_lib.data.captions import _MOODS, _TEMPI, strip_tempo

    cues = [w for _, it, en in _TEMPI for w in (it, en)] + [w for pool in _MOODS.values() for w in pool]
    for k in range(len(TEMPLATES)):
        for bpm in (50, 72, 104, 115, 140, 170, 200):
            for mode, tonic, inst in (("minor", 9, ["harp", "accordion"]), ("major", 4, ["organ"])):
                meta = dict(label="Irish dance tune", instruments=inst, tonic=tonic, mode=mode, bpm=bpm,
                            meter=(6, 8), style_words=["celtic"], composer="Bach")
                c = strip_tempo(make_caption(meta, np.random.default_rng(bpm + k), template=k))
                low = c.lower()
                assert str(bpm) not in c and "bpm" not in low and "beats per minute" not in low, c
                assert not [w for w in cues if f" {w} " in f" {low.replace(',', ' ').replace('.', ' ')} "], c
                assert key_name(tonic, mode) in c and all(i in low for i in inst), c
                assert "irish dance tune" in low and c[:1].isupper(), c
                assert not any(s in c for s in (",,", " ,", " .", ", .", ";,", "..", "  ")), c
                assert not c.startswith((",", ";", ".")) and not c.rstrip(".").endswith((",", ";", "and")), c


def test_symbolic_transpose_updates_key_label():
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 7, 4, 0]                 # C major
    notes = np.array([[i, 1.0, 60 + p, 90] for i, p in enumerate(scale * 3)], float)
    piece = PieceScore("t", "test", "german_folk", [Part("m", notes)], meter=(4, 4), key_sharps=0,
                       length_ql=float(len(notes)))
    assert estimate_key(piece.parts) == (0, "major")
    perf = plan_performance(piece, STYLES["german_folk"], np.random.default_rng(0), bpm=120, n_clips=1,
                            clip_seconds=4.0, transpose_by=3, tonic_mode=None)
    assert (perf.tonic, perf.mode) == (3, "major") and key_name(perf.tonic, perf.mode) == "Eb major"
    mel = perf.parts[0].notes
    assert set((mel[:, 2] - 63).astype(int) % 12) <= {0, 2, 4, 5, 7, 9, 11}
    minor = np.array([[i, 1.0, 57 + p, 90] for i, p in enumerate([0, 2, 3, 5, 7, 8, 11, 12, 7, 3, 0] * 3)], float)
    assert estimate_key([Part("m", minor)]) == (9, "minor")


def test_accompaniment_follows_meter_and_key():
    # G major melody in 6/8: G-B-D then C-E, D-F#-A
    mel = [Part("m", np.array([[0, 1.5, 67, 80], [1.5, 1.5, 71, 80], [3, 1.5, 72, 80], [4.5, 1.5, 76, 80],
                               [6, 1.5, 74, 80], [7.5, 1.5, 78, 80]], float), program=73)]
    chords, bass, drums = accompaniment(mel, (6, 8), 9.0, 7, "major", np.random.default_rng(0), drums=True)
    kicks = drums.notes[drums.notes[:, 2] == 36, 0]
    snares = drums.notes[drums.notes[:, 2] == 38, 0]
    np.testing.assert_allclose(kicks, [0, 3, 6])
    np.testing.assert_allclose(snares, [1.5, 4.5, 7.5])
    hats = np.diff(drums.notes[drums.notes[:, 2] == 42, 0])
    np.testing.assert_allclose(hats, 0.5)                       # triplet eighths in compound meter
    g_major = {7, 9, 11, 0, 2, 4, 6}
    assert set(chords.notes[:, 2].astype(int) % 12) <= g_major
    for t0, roots in [(0, {7}), (3, {0, 9}), (7.5, {2})]:        # I, then IV or vi; F# only fits V
        assert int(bass.notes[bass.notes[:, 0] == t0, 2][0]) % 12 in roots


def test_music21_selection_balances_styles_and_parses():
    tasks = select_music21(None, max_pieces_per_style=5, max_notes=3000, min_notes=16, seed=0)
    styles = pd.Series([t.style for t in tasks]).value_counts()
    assert styles.max() <= 5 and len(styles) >= 9               # folk does not swamp the rest
    assert len({t.piece_id for t in tasks}) == len(tasks)
    piece = load_music21_piece("bach/bwv66.6.mxl", None, "chorale", "bach_bwv66_6")
    assert len(piece.parts) == 4 and piece.meter == (4, 4) and piece.key_sharps == 3
    perf = plan_performance(piece, STYLES["chorale"], np.random.default_rng(1), bpm=80, n_clips=2, clip_seconds=3.0)
    assert len(perf.parts) == 4 and all(p.program is not None for p in perf.parts)
    assert (perf.tonic, perf.mode) in [(9, "major"), (6, "minor")]


# ---- datasets, user audio, interruption ----


def test_clip_dataset(built):
    manifest, df = built
    ds = ClipDataset(manifest, "train")
    item = ds[0]
    assert item["wave"].shape == (1, int(3.0 * SR)) and item["wave"].dtype.is_floating_point
    assert isinstance(item["caption"], str) and item["bpm"] > 0 and item["piece_id"] in set(df.piece_id)
    assert len(ds) == (df.split == "train").sum()
    assert ClipDataset(manifest, "test", clip_samples=1000, random_crop=True)[0]["wave"].shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown split"):
        ClipDataset(manifest, "holdout")


def test_audio_folder_import_and_bad_file(tmp_path):
    audio = tmp_path / "audio"
    sr = 16000
    t = np.arange(int(sr * 8.0)) / sr
    clicks = np.zeros_like(t)
    for k in range(int(8.0 * 2)):                                # 120 BPM clicks
        i = int(k * 0.5 * sr)
        clicks[i:i + 200] = np.hanning(200) * np.sin(2 * np.pi * 1000 * t[:200])
    save_audio(audio / "a.wav", (0.5 * clicks + 0.05 * np.sin(2 * np.pi * 220 * t))[None], sr)
    save_audio(audio / "b.wav", (0.3 * np.sin(2 * np.pi * 330 * t))[None], sr)
    pd.DataFrame({"path": ["a.wav", "b.wav"], "caption": ["clicks", "a tone"], "bpm": ["", "90"]}).to_csv(
        tmp_path / "c.csv", index=False)
    params = _params()
    m = import_audio_folder(audio, tmp_path / "c.csv", tmp_path / "out", params, progress=False)
    df = pd.read_csv(m)
    assert len(df) == 2 * int(8.0 // 3.0) and set(df.sample_rate) == {SR}
    assert abs(df[df.caption == "clicks"].bpm.iloc[0] - 120) < 4 and (df[df.caption == "a tone"].bpm == 90).all()
    (audio / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    pd.DataFrame({"path": ["a.wav", "bad.wav"], "caption": ["x", "y"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="bad.wav"):
        import_audio_folder(audio, tmp_path / "d.csv", tmp_path / "out2", params, progress=False)
    assert not (tmp_path / "out2" / "audio.partial").exists() and not (tmp_path / "out2" / "manifest.csv").exists()


def test_interrupted_build_leaves_nothing_half_written(tmp_path, monkeypatch):
    midi = tmp_path / "midi"
    midi.mkdir()
    for k in range(3):
        _beat_midi(midi / f"m{k}.mid", qpm=100 + 10 * k)
    real, calls = corpus_mod.render_task, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(corpus_mod, "render_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(tmp_path / "out", _params(midi_dirs=[str(midi)]), progress=False)
    out = tmp_path / "out"
    assert not (out / "manifest.csv").exists() and not (out / "audio.partial").exists()
    assert not list(out.rglob("*.tmp*"))
