"""evaluate(): samples folder + cached reference split -> one row, checked against the metrics computed by hand;
the degradations used by the sanity notebook."""
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from presto_lib.eval import evaluate as E
from presto_lib.eval import metrics as M
from presto_lib.eval.corpus_clap import CorpusClap, load_corpus_clap, save_corpus_clap
from presto_lib.eval.degrade import add_noise, degrade, lowpass, time_shuffle
from presto_lib.eval.backbones import get_embedder

SR, N = 8000, 10


def _clip(i: int, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    f = 110.0 * 2 ** (i / 5)
    x = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 5)) * (0.5 + 0.5 * np.sin(2 * np.pi * (1 + i % 3) * t))
    return (0.2 * x + 0.01 * np.random.default_rng(i).normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rows = []
    for i in range(2 * N):
        p = f"audio/{i:03d}.wav"
        sf.write(root / p, _clip(i), SR)
        rows.append(dict(path=p, piece_id=f"p{i}", split="test" if i < N else "valid",
                         caption=f"a piece number {i % 4} for piano", bpm=100.0 + i, key="C major",
                         instruments="piano", duration_s=2.0, sample_rate=SR, source="synthetic",
                         license="CC0"))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def _samples_dir(root, corpus, split="test"):
    """A fake system that 'generated' exactly the reference split."""
    d = root / "samples" / "copy"
    d.mkdir(parents=True)
    man = pd.read_csv(corpus / "manifest.csv")
    man = man[man.split == split].reset_index(drop=True)
    for i, r in man.iterrows():
        shutil.copy(corpus / r.path, d / f"{i:04d}.wav")
    pd.DataFrame(dict(path=[f"{i:04d}.wav" for i in range(len(man))], caption=man.caption, bpm=man.bpm,
                      seed=range(len(man)))).to_csv(d / "samples.csv", index=False)
    return d


@pytest.fixture(scope="module")
def cached(corpus, tmp_path_factory):
    """A metrics cache holding the test split's reference embeddings, and the valid split's clips + row."""
    cache = tmp_path_factory.mktemp("metrics")
    ev = E.Evaluator(corpus / "manifest.csv", "test", cache, clap=None, write_cache=True)
    waves, sr, _ = E.read_split(corpus / "manifest.csv", "valid")
    return cache, waves, ev.evaluate_audio(waves, sr, system="valid")


def test_row_matches_metrics_on_independently_embedded_sets(corpus, cached, monkeypatch):
    cache, waves, row = cached
    r = np.load(cache / "reference" / "test-musicnn.npz")["audio"]
    g = get_embedder("musicnn").embed_audio(waves, SR)              # the embed_audio path
    ref_w, _, _ = E.read_split(corpus / "manifest.csv", "test")
    np.testing.assert_allclose(r[:2], get_embedder("musicnn").embed_audio(ref_w[:2], SR), atol=1e-5)
    assert row["FAD"] == pytest.approx(M.fad(g, r), rel=1e-4)
    assert row["MMD"] == pytest.approx(M.mmd(g, r, sigma=M.median_bandwidth(r)), rel=1e-3, abs=1e-3)
    p = M.prdc(r, g, k=5)
    for k in ("precision", "recall", "density", "coverage"):
        assert row[k.capitalize()] == pytest.approx(p[k])
    assert row["system"] == "valid" and row["n"] == N and not any(c.startswith("CLAP") for c in row)
    # the reference is cached: a second evaluator reads it without touching the audio
    assert (cache / "reference" / "test-musicnn.npz").is_file()
    monkeypatch.setattr(E, "read_split", lambda *a, **k: pytest.fail("reference recomputed despite cache"))
    ev2 = E.Evaluator(corpus / "manifest.csv", "test", cache, clap=None)
    assert ev2.score_embeddings({"audio": g})["FAD"] == pytest.approx(row["FAD"], rel=1e-4)
    boot = ev2.score_embeddings({"audio": g}, n_boot=20)            # optional bootstrap intervals
    assert boot["FAD_lo"] < boot["FAD_hi"] and boot["MMD_lo"] < boot["MMD_hi"]


def test_stale_cache_is_not_used(corpus, cached, tmp_path, monkeypatch):
    man = pd.read_csv(corpus / "manifest.csv")
    man.loc[0, "caption"] = "changed"
    man.to_csv(tmp_path / "manifest.csv", index=False)
    shutil.copytree(corpus / "audio", tmp_path / "audio")
    ev = E.Evaluator(tmp_path / "manifest.csv", "test", cached[0], clap=None)
    monkeypatch.setattr(ev, "embed", lambda w, sr: {"audio": np.random.default_rng(0).normal(size=(len(w), 4))})
    with pytest.warns(UserWarning, match="stale"):
        assert ev.reference()["audio"].shape == (N, 4)


def test_evaluate_dir_with_corpus_clap(corpus, tmp_path):
    torch.manual_seed(0)
    save_corpus_clap(tmp_path / "metrics" / "corpus_clap", CorpusClap(200, 384, 16, 32),
                     {"audio_layer": "penultimate", "embed_dim": 16, "hidden": 32})
    d = _samples_dir(tmp_path, corpus)
    row = E.evaluate(d, corpus / "manifest.csv", "test", tmp_path / "metrics")
    assert row["system"] == "copy" and row["backbone"] == "musicnn"
    assert row["FAD"] == pytest.approx(0.0, abs=1e-3)                # generated == reference
    assert row["Precision"] == 1.0 and row["Coverage"] == 1.0
    cc = load_corpus_clap(tmp_path / "metrics" / "corpus_clap")
    waves, _, df = E.read_samples(d)
    ref = M.clap_score(cc.embed_audio(waves, SR), cc.embed_text(list(df.caption)))
    assert row["CLAP (corpus)"] == pytest.approx(ref, abs=1e-3)


def test_embed_memoises_per_clip_and_embeds_only_new_clips(corpus, cached, monkeypatch):
    """A clip embedded once (a curve folder that is the head of a Table 2 folder) is not embedded again, and the
    memoised rows equal a fresh embedding of each clip, in the caller's order (duplicates included)."""
    waves, sr, _ = E.read_split(corpus / "manifest.csv", "valid")
    ev = E.Evaluator(corpus / "manifest.csv", "test", cached[0], clap=None)
    seen, real = [], E.embed_set
    monkeypatch.setattr(E, "embed_set", lambda w, *a, **k: (seen.append(len(w)), real(w, *a, **k))[1])
    head = ev.embed(waves[:4], sr)["audio"]
    both = ev.embed([waves[5], waves[1], waves[5], waves[0]], sr)["audio"]
    assert seen == [4, 1]                                      # only waves[5] was new, and only once
    fresh = real(waves[:6], sr, None, ev.musicnn, "musicnn")["audio"]
    np.testing.assert_allclose(head, fresh[:4], atol=1e-5)
    np.testing.assert_allclose(both, fresh[[5, 1, 5, 0]], atol=1e-5)
    assert not np.allclose(both[0], both[1], atol=1e-3)      # distinct clips: the order check can fail
    with pytest.raises(ValueError, match="no waveforms"):
        ev.embed(waves[:0], sr)


def test_bad_samples_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="samples.csv"):
        E.read_samples(tmp_path)
    pd.DataFrame(dict(path=["0000.wav"])).to_csv(tmp_path / "samples.csv", index=False)
    with pytest.raises(ValueError, match="lacks columns"):
        E.read_samples(tmp_path)
    with pytest.raises(ValueError, match="backbone"):
        E.Evaluator(tmp_path / "manifest.csv", clap=None, backbone="vggish")


# ---- degradations ----

def test_noise_hits_requested_snr():
    x = _clip(3, 4.0)
    y = add_noise(x, 10.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)


def test_lowpass_removes_high_band():
    rng = np.random.default_rng(0)
    x = rng.normal(size=SR * 2).astype(np.float32)
    spec = lambda s: np.abs(np.fft.rfft(s)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    y = lowpass(x, SR, 1000.0)
    assert spec(y)[f > 1500].sum() < 1e-4 * spec(x)[f > 1500].sum()
    assert spec(y)[f < 700].sum() == pytest.approx(spec(x)[f < 700].sum(), rel=0.05)
    with pytest.raises(ValueError, match="cutoff"):
        lowpass(x, SR, 5000.0)


def test_time_shuffle_permutes_segments():
    x = np.arange(SR, dtype=np.float32)
    y = time_shuffle(x, SR, 0.1, np.random.default_rng(0))
    assert np.array_equal(np.sort(y), x) and not np.array_equal(y, x)
    segs = y.reshape(10, -1)
    assert all(np.all(np.diff(s) == 1) for s in segs)              # each segment kept intact
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade([x], SR, "reverb", 1.0)


def test_monotonic_table_directions():
    from presto_lib.eval.degrade import monotonic_table
    df = pd.DataFrame(dict(degradation=["noise"] * 3 + ["lowpass"] * 3, severity=[0, 1, 2] * 2,
                           FAD=[1.0, 2.0, 3.0, 1.0, 3.0, 2.0], Coverage=[0.9, 0.5, 0.5, 0.9, 0.95, 0.1],
                           **{"CLAP (corpus)": [30.0, 20.0, 10.0, 30.0, 20.0, 25.0]}))
    t = monotonic_table(df, ["FAD", "Coverage", "CLAP (corpus)"]).set_index("degradation")
    assert t.loc["noise"].tolist() == ["yes", "yes", "yes"]         # ties count as 'no better'
    assert t.loc["lowpass"].tolist() == ["no", "no", "no"]
