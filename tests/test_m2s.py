"""The mono-to-stereo model: mid = input exactly, shapes, zero-init dual mono, and it learns a panned mix."""
import math

import pandas as pd
import pytest
import torch

from presto_lib.models.m2s import M2SConfig, M2SStep, MonoToStereo, m2s_loss, mid_side, pan_mix, side_snr_db
from presto_lib.train import TrainConfig, train

SR = 8000
SMALL = M2SConfig(n_fft=256, hop_length=64, channels=8, layers=2)
MEL = dict(windows=(64, 128, 256, 512), n_mels=(10, 20, 40, 64))


def perturbed(seed=0):
    torch.manual_seed(seed)
    m = MonoToStereo(SMALL)
    torch.nn.init.normal_(m.out.weight, std=0.5)          # a model that does predict some width
    return m


def test_mid_channel_reproduces_the_input_and_shapes():
    x = torch.randn(3, 2000)
    for m in (MonoToStereo(SMALL), perturbed()):
        with torch.no_grad():
            y, y1 = m(x), m(x[:, None])
        assert y.shape == (3, 2, 2000) and torch.equal(y, y1)
        assert torch.allclose((y[:, 0] + y[:, 1]) / 2, x, atol=1e-6, rtol=0)
    with torch.no_grad():
        y = perturbed()(x)
    assert (y[:, 0] - y[:, 1]).abs().max() > 1e-3          # width really is added
    with pytest.raises(ValueError):
        MonoToStereo(SMALL)(torch.randn(2, 2, 2000))
    with pytest.raises(ValueError):
        MonoToStereo(SMALL)(torch.randn(2, 50))
    with pytest.raises(ValueError):
        M2SConfig(kernel=4)


def test_untrained_model_is_dual_mono():
    x = torch.randn(2, 1500)
    with torch.no_grad():
        y = MonoToStereo(SMALL)(x)
    assert torch.equal(y[:, 0], x) and torch.equal(y[:, 1], x)


def test_pan_mix_constant_power_law():
    s = torch.randn(2, 100)
    st = pan_mix(s, [-1.0, 0.0])
    assert torch.allclose(st[0, 0], s[0] + s[1] / math.sqrt(2), atol=1e-6)   # hard left + centre
    assert torch.allclose(st[0, 1], s[1] / math.sqrt(2), atol=1e-6)
    mid, side = mid_side(st)
    assert torch.allclose(mid, (st[:, 0] + st[:, 1]) / 2) and torch.allclose(side, (st[:, 0] - st[:, 1]) / 2)
    with pytest.raises(ValueError):
        pan_mix(s, [0.0, 1.5])


def panned_batch(n, T=4096, seed=0):
    """Two tones with random envelopes: the low one left (-0.8), the high one right (+0.8)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / SR
    f = torch.tensor([220.0, 1760.0])
    phase = 2 * math.pi * torch.rand(n, 2, 1, generator=g)
    amp = 0.2 + torch.rand(n, 2, 1, generator=g)
    src = amp * torch.sin(2 * math.pi * f[None, :, None] * t + phase)
    return pan_mix(src, [-0.8, 0.8])


class Clips(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = panned_batch(n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"wave": self.x[i]}


def test_a_few_training_steps_learn_the_panning(tmp_path):
    torch.manual_seed(0)
    m = MonoToStereo(SMALL)
    x = panned_batch(4, seed=1)
    with torch.no_grad():
        before = m2s_loss(m(mid_side(x)[0]), x, SR, **MEL)["loss"].item()
        snr0 = side_snr_db(m(mid_side(x)[0]), x).mean().item()
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), max_steps=40, batch_size=4, log_every=5, ckpt_every=1000,
                      amp="none", desc="m2s")
    train(M2SStep(SR, **MEL), modules={"m2s": m}, optimizers={"m2s": torch.optim.Adam(m.parameters(), 1e-2)},
          dataset=Clips(16), cfg=cfg)
    m.eval()
    with torch.no_grad():
        pred = m(mid_side(x)[0])
        after = m2s_loss(pred, x, SR, **MEL)["loss"].item()
        snr = side_snr_db(pred, x).mean().item()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert {"loss", "mel_lr", "mel_side", "stft_side"} <= set(log.columns)
    assert abs(snr0) < 1e-4 and after < 0.7 * before and snr > 6.0, (before, after, snr)
    assert torch.allclose((pred[:, 0] + pred[:, 1]) / 2, mid_side(x)[0], atol=1e-6, rtol=0)


def test_step_rejects_mono_batches():
    class Ctx:
        device = torch.device("cpu")
    with pytest.raises(ValueError, match="stereo"):
        M2SStep(SR)(Ctx(), {"wave": torch.randn(2, 1, 1000)}, 0)
