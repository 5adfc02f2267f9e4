"""presto_lib.audio against independent references (librosa, pyloudnorm, numpy FFT)."""
import librosa
import numpy as np
import pyloudnorm as pyln
import pytest
import torch

from presto_lib import audio

torch.set_num_threads(2)


def _sine(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


def test_mel_matches_librosa():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1 + _sine(440, 16000, 0.5)
    ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=512, hop_length=128, n_mels=64)
    ours = audio.mel_spectrogram(torch.from_numpy(x), 16000, n_fft=512, hop_length=128, n_mels=64, log=False)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-3, atol=1e-5 * ref.max())
    logmel = audio.mel_spectrogram(torch.from_numpy(x), 16000, n_fft=512, hop_length=128, n_mels=64)
    np.testing.assert_allclose(logmel.numpy(), np.log(np.maximum(ref, 1e-5)), atol=2e-3)
    ref_r = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=512, hop_length=128, n_mels=64, pad_mode="reflect")
    ours_r = audio.mel_spectrogram(torch.from_numpy(x), 16000, n_fft=512, hop_length=128, n_mels=64, log=False,
                                   pad_mode="reflect")
    np.testing.assert_allclose(ours_r.numpy(), ref_r, rtol=1e-3, atol=1e-5 * ref_r.max())


def test_mel_batch_dims_and_gradient():
    x = torch.randn(2, 3, 4000, requires_grad=True)
    m = audio.mel_spectrogram(x, 8000, n_fft=256, hop_length=64, n_mels=32)
    assert m.shape == (2, 3, 32, 4000 // 64 + 1)
    single = audio.mel_spectrogram(x[1, 2].detach(), 8000, n_fft=256, hop_length=64, n_mels=32)
    torch.testing.assert_close(m[1, 2].detach(), single, rtol=1e-4, atol=1e-4)
    m.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    x = np.stack([_sine(220, 8000), _sine(330, 8000)])
    p = audio.save_audio(tmp_path / "sub" / "a.wav", x, 8000)
    assert p.exists() and not list(p.parent.glob("*.tmp*"))
    y, sr = audio.load_audio(p, mono=False)
    assert sr == 8000 and y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=2 / 32768)
    ym, _ = audio.load_audio(p)  # mono by default: channel mean
    np.testing.assert_allclose(ym[0], x.mean(0), atol=2 / 32768)


def test_load_resamples_and_resample_keeps_frequency(tmp_path):
    x = _sine(1000, 44100)
    y = audio.resample(x, 44100, 16000)
    assert len(y) == 16000
    assert abs(_peak_hz(y, 16000) - 1000) < 2
    audio.save_audio(tmp_path / "s.wav", x, 44100)
    z, sr = audio.load_audio(tmp_path / "s.wav", sample_rate=8000)
    assert sr == 8000 and z.shape == (1, 8000)
    assert abs(_peak_hz(z[0], 8000) - 1000) < 2
    # channels-first input keeps its layout
    assert audio.resample(np.stack([x, x]), 44100, 22050).shape == (2, 22050)


def test_loudness_normalize_hits_target():
    x = _sine(440, 16000, seconds=3.0, amp=0.05)[None]
    y = audio.loudness_normalize(x, 16000, target_lufs=-20.0)
    got = pyln.Meter(16000).integrated_loudness(y[0].astype(np.float64))
    assert abs(got - (-20.0)) < 0.1
    silent = np.zeros((1, 16000), np.float32)
    np.testing.assert_array_equal(audio.loudness_normalize(silent, 16000), silent)
    short = audio.loudness_normalize(_sine(440, 16000, 0.1, 0.01)[None], 16000)  # < one gating block
    assert np.isfinite(short).all() and np.abs(short).max() > 0.05


def test_bad_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio at all")
    with pytest.raises(ValueError, match="broken.wav"):
        audio.load_audio(bad)
    with pytest.raises(ValueError, match="missing.wav"):
        audio.load_audio(tmp_path / "missing.wav")
    import soundfile as sf
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(ValueError, match="empty.wav"):
        audio.load_audio(tmp_path / "empty.wav")


def test_helpers():
    x = _sine(100, 8000, amp=1.0)
    assert abs(audio.rms_db(x) - 20 * np.log10(1 / np.sqrt(2))) < 0.05
    assert audio.is_silent(np.zeros(100)) and not audio.is_silent(x)
    assert audio.crop_or_pad(x[None], 100, offset=50).shape == (1, 100)
    padded = audio.crop_or_pad(x[None, :10], 20)
    assert padded.shape == (1, 20) and np.all(padded[0, 10:] == 0)
    with pytest.raises(ValueError):
        audio.mel_spectrogram(torch.zeros(2, 10), 8000, n_fft=256, center=False)
