"""benchmarks/bpm_reference.py: one arrangement of a real piece rendered at each target tempo, read by the BPM check."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
CFG = {"sample_rate": SR, "clip_seconds": 4.0, "gain": 0.5, "target_lufs": -20.0, "silence_db": -60.0,
       "max_silent_frac": 1.0}     # click tracks are mostly silence between clicks


def _bpm_reference():
    spec = importlib.util.spec_from_file_location("bpm_reference", ROOT / "benchmarks" / "bpm_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _clicks(bpm: float, seconds: float) -> np.ndarray:
    """A click on every beat at `bpm` (plus faint noise, so loudness normalisation has a floor to work with)."""
    x = np.random.default_rng(0).standard_normal(int(seconds * SR)).astype(np.float32) * 1e-3
    for t in np.arange(0.05, seconds, 60.0 / bpm):
        i = int(t * SR)
        x[i:i + 200] += np.hanning(200).astype(np.float32)
    return x


def _notes(perf) -> list:
    """What a performance plays, in quarter notes: (program, drum?, notes) per part."""
    return [(p.program, p.is_drum, np.asarray(p.notes).tolist()) for p in perf.parts]


@pytest.fixture
def fake_render(monkeypatch):
    """render_performances replaced by click tracks at each performance's BPM; records what it was asked."""
    import presto_lib.data.render as render

    seen = []

    def fake(perfs, sr, soundfont=None, gain=0.5, **kw):
        seen.append(list(perfs))
        return [(_clicks(p.bpm, 6.0), 8.0 * k) for k, p in enumerate(perfs)]

    monkeypatch.setattr(render, "render_performances", fake)
    return seen


def test_task_from_row_reads_music21_sources_and_rejects_others():
    br = _bpm_reference()
    t = br.task_from_row({"source": "music21:essenFolksong/han1.abc#121", "piece_id": "p", "style": "chinese_folk"})
    assert (t.kind, t.path, t.number, t.style, t.piece_id) == ("music21", "essenFolksong/han1.abc", 121,
                                                               "chinese_folk", "p")
    assert br.task_from_row({"source": "music21:bach/bwv66.6.mxl", "piece_id": "q", "style": "chorale"}).number is None
    with pytest.raises(ValueError, match="music21"):
        br.task_from_row({"source": "midi:song.mid", "piece_id": "r", "style": "user"})


def test_one_arrangement_is_rendered_at_each_tempo_with_the_same_notes(fake_render):
    br = _bpm_reference()
    task = br.task_from_row({"source": "music21:bach/bwv66.6.mxl", "piece_id": "bwv66", "style": "chorale"})
    clips = br.tempo_renders(task, CFG, [80.0, 130.0], seed=0)
    (perfs,) = fake_render
    assert [p.bpm for p in perfs] == [80.0, 130.0]
    assert perfs[1].qpm / perfs[0].qpm == pytest.approx(130 / 80)
    assert _notes(perfs[0]) == _notes(perfs[1]) and perfs[0].start_ql == perfs[1].start_ql   # only the tempo differs
    assert len(clips) == 2 and all(c.shape == (4 * SR,) for c in clips)
    again = br.tempo_renders(task, CFG, [80.0, 130.0], seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(clips, again))
    br.tempo_renders(task, CFG, [80.0, 130.0], seed=1)
    assert _notes(fake_render[2][0]) != _notes(perfs[0])                        # another seed: another draw


def test_a_perfect_follower_reads_as_one_on_the_check(fake_render):
    """Clicks on the beat at each target: onsets rise by the target ratio and the faster target wins."""
    from presto_lib.eval.tempo import bpm_pairs

    br = _bpm_reference()
    rows = pd.DataFrame([{"source": "music21:bach/bwv66.6.mxl", "piece_id": "bwv66", "style": "chorale",
                          "caption": "a chorale"}])
    long = br.reference_rows(rows, CFG, [80.0, 130.0], seeds=[0, 1])
    assert list(long.target) == [80.0, 130.0, 80.0, 130.0] and set(long.seed) == {0, 1}
    pairs = bpm_pairs(long, 80.0, 130.0)
    assert len(pairs) == 2 and pairs.win.all()
    assert pairs.onset_ratio.to_numpy() == pytest.approx([130 / 80] * 2, rel=0.2)
    s = br.summarise(pairs, "clicks")
    assert (s["pairs"], s["tempo wins"], s["onset wins"]) == (2, 2, 2)
    assert np.isnan(br.summarise(pairs.drop(columns=["onset_ratio"]), "old table")["median onset ratio"])
