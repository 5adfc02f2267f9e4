"""BPM following: tempo estimates of synthetic click tracks, the two accuracies, and the paired win count."""
import numpy as np
import pandas as pd
import pytest

from presto_lib.eval.tempo import bpm_following, bpm_pairs, estimate_tempo, onset_rate, tempo_accuracy

SR = 16000


def clicks(bpm: float, seconds: float = 4.0, sr: int = SR) -> np.ndarray:
    """A click on every beat: short decaying 1 kHz bursts."""
    import librosa

    return librosa.clicks(times=np.arange(0, seconds, 60.0 / bpm), sr=sr, length=int(seconds * sr))


@pytest.mark.parametrize("bpm", [60, 80, 100, 130, 160])
def test_estimate_tempo_recovers_click_tracks(bpm):
    assert tempo_accuracy(np.array([estimate_tempo(clicks(bpm), SR)]), bpm) == 1.0


def test_the_estimator_halves_150_bpm_on_longer_clips():
    """Why the check's targets stay inside 60-140 BPM: librosa's tempo prior (centred at 120 BPM) reads a 6 s click
    track at 150 BPM as 75 BPM, below 80, so a model that follows BPM perfectly would lose the 80-vs-150 pair."""
    assert estimate_tempo(clicks(150, 6.0), SR) == pytest.approx(75, rel=0.05)
    assert tempo_accuracy(np.array([estimate_tempo(clicks(150, 6.0), SR)]), 150, octave=True) == 1.0


@pytest.mark.parametrize("bpm", [60, 80, 130, 150])
def test_onset_rate_counts_the_clicks(bpm):
    """A click per beat: onsets per second = BPM / 60 (the onset detector has no tempo prior, so 150 stays 150)."""
    assert onset_rate(clicks(bpm), SR) == pytest.approx(bpm / 60, abs=0.3)   # +-1 click in 4 s


def test_tempo_accuracy_acc1_and_acc2():
    est = np.array([100.0, 107.0, 50.0, 210.0, 130.0])
    assert tempo_accuracy(est, 100.0) == pytest.approx(2 / 5)                 # 100, 107 (7% off)
    assert tempo_accuracy(est, 100.0, octave=True) == pytest.approx(4 / 5)    # + half, + double (5% off)
    assert tempo_accuracy(est, np.array([100, 100, 50, 200, 120.0])) == pytest.approx(4 / 5)


def test_bpm_following_wins_for_a_model_that_follows_bpm_and_not_for_one_that_ignores_it():
    follow = lambda caps, bpms, seeds: np.stack([clicks(b)[None] for b in bpms])          # noqa: E731
    ignore = lambda caps, bpms, seeds: np.stack([clicks(96.0)[None] for _ in bpms])       # noqa: E731
    for gen, wins in ((follow, 4), (ignore, 0)):
        rows = bpm_following(gen, ["a", "b"], [80, 130], [0, 1], SR)
        assert len(rows) == 8 and set(rows.target) == {80.0, 130.0}
        p = bpm_pairs(rows, 80.0, 130.0)
        assert int(p.win.sum()) == wins
    p = bpm_pairs(bpm_following(follow, ["a"], [80, 130], [0], SR), 80.0, 130.0)
    assert p.ratio.iloc[0] == pytest.approx(130 / 80, rel=0.1)
    assert p.onset_ratio.iloc[0] == pytest.approx(130 / 80, rel=0.1)
    assert bpm_pairs(bpm_following(ignore, ["a"], [80, 130], [0], SR), 80.0, 130.0).onset_ratio.iloc[0] == 1.0


def test_bpm_pairs_counts_wins_and_tempo_ratios():
    rows = [("a", 0, 80.0, 100.0), ("a", 0, 150.0, 150.0), ("a", 1, 80.0, 120.0), ("a", 1, 150.0, 60.0),
            ("b", 0, 150.0, 90.0), ("b", 0, 80.0, 45.0)]
    est = pd.DataFrame(rows, columns=["caption", "seed", "target", "estimated"]).sample(frac=1, random_state=0)
    p = bpm_pairs(est, 80.0, 150.0).set_index(["caption", "seed"])
    assert len(p) == 3 and int(p.win.sum()) == 2
    assert p.loc[("a", 0), "ratio"] == pytest.approx(1.5) and p.loc[("a", 1), "ratio"] == pytest.approx(0.5)
    assert p.loc[("b", 0), ["est_low", "est_high"]].tolist() == [45.0, 90.0]      # low/high not swapped
    assert p.ratio.median() == pytest.approx(1.5)
    with pytest.raises(ValueError):
        bpm_pairs(est, 150.0, 80.0)
