"""Stereo corpus clips (the M2S stage's data): one gain for both channels, loudness and silence judged on the mid."""
import numpy as np

from presto_lib.data.corpus import prepare_clip, prepare_stereo_clip

CFG = {"target_lufs": -20.0, "silence_db": -60.0, "max_silent_frac": 0.5}


def _stereo(sr=16000, seconds=2.0):
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)
    left = 0.05 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    right = 0.02 * np.sin(2 * np.pi * 660 * t) + 0.01 * rng.standard_normal(len(t))
    return np.stack([left, right]).astype(np.float32), sr


def test_stereo_clip_mid_matches_mono_path_and_keeps_the_pan():
    x, sr = _stereo()
    y, why = prepare_stereo_clip(x, sr, CFG)
    assert why == "" and y.shape == x.shape
    mono, _ = prepare_clip(x.mean(0), sr, CFG)
    np.testing.assert_allclose(y.mean(0), mono[0], rtol=1e-3, atol=1e-5)     # the mid is the mono clip
    gains = y.std(axis=1) / x.std(axis=1)
    np.testing.assert_allclose(gains[0], gains[1], rtol=1e-5)                # one gain: the L/R balance is kept


def test_silent_stereo_clip_is_dropped():
    x = np.zeros((2, 16000), np.float32)
    assert prepare_stereo_clip(x, 16000, CFG) == (None, "silent")
