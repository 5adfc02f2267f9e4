"""The PyTorch MSD-musicnn port against TensorFlow's own outputs (tests/fixtures/musicnn_msd.npz, made by
scripts/make_musicnn_fixture.py), its front-end against musicnn's librosa preprocessing, and the TF reader."""
from pathlib import Path

import numpy as np
import pytest
import torch

from presto_lib.eval.musicnn import PATCH_FRAMES, checkpoint_prefix, load_musicnn, log_mel
from presto_lib.eval.tf_checkpoint import load_tf_checkpoint, read_index

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_msd.npz"
KEYS = ("penultimate", "max_pool", "mean_pool", "taggram")


@pytest.fixture(scope="module")
def fx():
    torch.set_num_threads(2)
    return dict(np.load(FIXTURE))


def _close(got: torch.Tensor, ref: np.ndarray, rel: float) -> None:
    """Max abs error within `rel` of the reference's range."""
    err = np.abs(got.numpy() - ref).max()
    assert err <= rel * np.abs(ref).max(), f"max abs err {err:.3g} vs scale {np.abs(ref).max():.3g}"


def test_tf_reader_reads_every_byte_with_expected_shapes():
    prefix = checkpoint_prefix()
    tensors = load_tf_checkpoint(prefix)
    data_size = Path(prefix + ".data-00000-of-00001").stat().st_size
    assert sum(t.nbytes for t in tensors.values()) == data_size     # entries tile the data file exactly
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)        # timbral 7 x int(0.4 * 96)
    assert tensors["conv2d_5/kernel"].shape == (7, 561, 1, 64)      # mid-end conv over 561 front-end maps
    assert tensors["dense/kernel"].shape == (1506, 200)
    assert len(read_index(prefix + ".index")) == len(tensors)


def test_tf_reader_rejects_non_checkpoint(tmp_path):
    bad = tmp_path / "x.index"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="not a TensorFlow checkpoint"):
        read_index(bad)
    with pytest.raises(FileNotFoundError):
        load_tf_checkpoint(tmp_path / "missing")


def test_port_matches_tensorflow_on_same_input(fx):
    out = load_musicnn()(torch.from_numpy(fx["mel"]))
    for k in KEYS:
        _close(out[k], fx[k], rel=1e-5)


def test_frontend_matches_musicnn_preprocessing(fx):
    mel = log_mel(fx["wave"].astype(np.float32) / 32768.0)          # soundfile's int16 scaling
    hop = int(fx["hop_frames"])
    patches = torch.stack([mel[i * hop:i * hop + PATCH_FRAMES] for i in range(len(fx["mel"]))])
    # float16 rounding of the mel (musicnn's own step) flips a few values by one float16 ulp
    assert (patches - torch.from_numpy(fx["mel"])).abs().max() < 2e-3
    out = load_musicnn()(patches)                                   # end to end: audio -> TF features
    for k in KEYS:
        _close(out[k], fx[k], rel=1e-4)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="log-mel patches"):
        load_musicnn()(torch.zeros(2, 187, 80))


# ---- the embedding interface and its windowing ----

def test_window_starts_cover_clip_evenly():
    from presto_lib.eval.embeddings import window_starts
    assert window_starts(100, 187, 62) == [0]                       # short: one (padded) window
    assert window_starts(187, 187, 62) == [0]
    s = window_starts(251, 187, 62)                                 # 4 s clip: 3 windows, ends aligned
    assert s[0] == 0 and s[-1] == 251 - 187 and max(np.diff(s)) <= 62
    with pytest.raises(ValueError):
        window_starts(10, 0, 1)


def test_embed_audio_is_mean_of_patch_features(fx):
    from presto_lib.eval.backbones import get_embedder
    emb = get_embedder("musicnn")
    wave = fx["wave"].astype(np.float32) / 32768.0                  # 3.5 s: windows at frames 0 and 32
    got = emb.embed_audio([wave, wave[:16000]], 16000)              # second clip: 1 s, repeat-padded
    assert got.shape == (2, 200)
    mel = log_mel(wave)
    ref = load_musicnn()(torch.stack([mel[0:187], mel[32:219]]))["penultimate"].mean(0)
    np.testing.assert_allclose(got[0], ref.numpy(), atol=1e-5)
    padded = np.tile(wave[:16000], 3)[:186 * 256]
    ref1 = load_musicnn()(log_mel(padded)[None, :187])["penultimate"][0]
    np.testing.assert_allclose(got[1], ref1.numpy(), atol=1e-5)


def test_embed_audio_inputs_and_errors():
    from presto_lib.eval.backbones import get_embedder
    emb = get_embedder("musicnn-max_pool")
    x = np.random.default_rng(0).normal(scale=0.1, size=(2, 1, 8000 * 3)).astype(np.float32)
    assert emb.embed_audio(x, 8000).shape == (2, 753)               # [N, C, T] at 8 kHz, resampled
    with pytest.raises(ValueError, match="NaN"):
        emb.embed_audio([np.full(1000, np.nan)], 16000)
    with pytest.raises(ValueError, match="unknown musicnn layer"):
        get_embedder("musicnn-nope")
    with pytest.raises(ValueError, match="unknown embedding backbone"):
        get_embedder("vggish")
