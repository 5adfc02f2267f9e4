"""Stereo rendering for the mono-to-stereo model: [2, T] from FluidSynth, pans written as CC 10, mono unchanged.

A fake `fluidsynth` (a script that writes a known stereo WAV) checks the plumbing everywhere; the real one, when
installed, checks that a part panned left really is louder on the left."""
import os
import shutil
import stat
import sys

import mido
import numpy as np
import pytest

from presto_lib.data.arrange import Performance
from presto_lib.data.midi import Part
from presto_lib.data.render import part_pans, render_performances, write_midi

SR = 8000
NOTES = np.array([[i, 0.5, 60 + i, 100] for i in range(4)], float)


def perf(programs, bpm=120.0):
    parts = [Part(f"p{i}", NOTES, program=p) for i, p in enumerate(programs)]
    return Performance(parts, bpm=bpm, beat_ql=1.0, tonic=0, mode="major", transpose=0, tempo_factor=1.0,
                       n_clips=1, start_ql=0.0, accompanied=False)


FAKE = """#!{py}
import sys, numpy as np, soundfile as sf
a = sys.argv
sr, out = int(a[a.index("-r") + 1]), a[a.index("-F") + 1]
t = np.arange(3 * sr) / sr
sf.write(out, np.stack([np.sin(2 * np.pi * 220 * t), 0.25 * np.sin(2 * np.pi * 330 * t)], 1).astype("float32"),
         sr, subtype="FLOAT")
"""


@pytest.fixture
def fake_fluidsynth(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "fluidsynth"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(py=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    sf2 = tmp_path / "x.sf2"
    sf2.write_bytes(b"")
    return sf2


def test_stereo_option_keeps_both_channels_and_mono_is_their_mean(fake_fluidsynth):
    (mono, s0), = render_performances([perf([0])], SR, soundfont=fake_fluidsynth)
    (st, s1), = render_performances([perf([0])], SR, soundfont=fake_fluidsynth, stereo=True)
    assert mono.ndim == 1 and st.shape == (2, mono.shape[0]) and s0 == s1 == 0.0
    t = np.arange(3 * SR) / SR
    assert np.allclose(st[0], np.sin(2 * np.pi * 220 * t), atol=1e-6)
    assert np.allclose(st[1], 0.25 * np.sin(2 * np.pi * 330 * t), atol=1e-6)
    assert np.allclose(mono, st.mean(0), atol=1e-6)
    two = render_performances([perf([0]), perf([0], 90.0)], SR, soundfont=fake_fluidsynth, stereo=True)
    assert [a.shape[0] for a, _ in two] == [2, 2] and sum(a.shape[1] for a, _ in two) == 3 * SR


def test_pans_are_written_as_cc10_and_absent_by_default(tmp_path):
    assert part_pans(1, 0.8) == [0.0] and part_pans(3, 0.8) == pytest.approx([-0.8, 0.0, 0.8])
    with pytest.raises(ValueError):
        part_pans(2, 1.5)

    def cc10(path):
        return [(m.channel, m.value) for m in mido.MidiFile(path).tracks[0] if m.type == "control_change"
                and m.control == 10]
    write_midi([perf([0, 40, 73])], tmp_path / "a.mid")
    assert cc10(tmp_path / "a.mid") == []
    write_midi([perf([0, 40, 73])], tmp_path / "b.mid", pan_spread=1.0)
    assert cc10(tmp_path / "b.mid") == [(0, 1), (1, 64), (2, 127)]


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_real_fluidsynth_pans_a_part():
    silent = Part("silent", np.zeros((0, 4)), program=0)
    p = Performance([Part("piano", NOTES, program=0), silent], bpm=120.0, beat_ql=1.0, tonic=0, mode="major",
                    transpose=0, tempo_factor=1.0, n_clips=1, start_ql=0.0, accompanied=False)
    (x, _), = render_performances([p], SR, stereo=True, pan_spread=1.0)     # the piano part: hard left
    (c, _), = render_performances([p], SR, stereo=True)                     # no pan: centred
    e = lambda a: float((a.astype(np.float64) ** 2).sum())
    # the soundfont's own sample pan and the (centred, stereo) reverb remain, so compare L/R ratios
    assert x.shape == c.shape and x.shape[0] == 2 and e(x[0]) / e(x[1]) > 2.5 * e(c[0]) / e(c[1])


def test_clip_dataset_keeps_channels_on_request(tmp_path):
    import pandas as pd

    from presto_lib.audio import save_audio
    from presto_lib.data.datasets import REQUIRED_COLUMNS, ClipDataset
    x = np.stack([np.linspace(-0.5, 0.5, 1000), np.zeros(1000)]).astype(np.float32)
    save_audio(tmp_path / "a.wav", x, SR)
    row = {c: "x" for c in REQUIRED_COLUMNS} | {"path": "a.wav", "split": "train", "bpm": 120.0}
    pd.DataFrame([row]).to_csv(tmp_path / "manifest.csv", index=False)
    st = ClipDataset(tmp_path / "manifest.csv", clip_samples=1200, mono=False)[0]["wave"]
    mono = ClipDataset(tmp_path / "manifest.csv", clip_samples=1200)[0]["wave"]
    assert st.shape == (2, 1200) and mono.shape == (1, 1200)
    assert np.allclose(st[:, :1000].numpy(), x, atol=1e-4) and np.allclose(mono[0].numpy(), st.mean(0).numpy())
