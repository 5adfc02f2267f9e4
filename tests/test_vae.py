"""The VAE (paper A.1): shapes and hop per profile, KL, losses vs references, GAN recipe on the loop, I/O."""
import math
import pickle

import librosa
import numpy as np
import pytest
import torch

from presto_lib.config import PROFILES, render_profile
from presto_lib.models.discriminators import MPD, Discriminator
from presto_lib.models.vae import VAE, VAEConfig, compute_latent_scale, kl_divergence, load_vae, save_vae
from presto_lib.models.vae_losses import (build_vae_modules, lowpass_baseline, make_vae_step,
                                          multiscale_mel_loss, si_sdr)

torch.set_num_threads(1)
HOPS = {"smoke": 160, "cpu": 320, "gpu": 960, "paper": 960}


def profile(p):
    P = render_profile(p)
    return P["vae"], P["common"]["sample_rate"]


# ---- architecture ----

@pytest.mark.parametrize("p", PROFILES)
def test_shapes_and_hop_for_every_profile(p):
    V, sr = profile(p)
    torch.manual_seed(0)
    if p in ("gpu", "paper"):   # same strides and latent dim, fewer channels (shapes do not depend on width)
        V = {**V, "encoder_dim": 4, "decoder_dim": 64}
    vae = VAE(VAEConfig.from_params({**V, "sample_rate": sr}))
    assert vae.hop_length == HOPS[p] == math.prod(V["strides"]) and vae.latent_dim == V["latent_dim"]
    if p == "paper":
        assert (sr, vae.hop_length, vae.latent_dim) == (44100, 960, 32)   # ~45 Hz, 32 dims (A.1)
    T = 2 * vae.hop_length + 7                    # odd length: encode pads to 3 frames, forward crops back
    x = torch.randn(2, 1, T) * 0.1
    with torch.no_grad():
        mean, logvar = vae.encode(x)
        assert mean.shape == logvar.shape == (2, V["latent_dim"], 3)
        assert vae.decode(mean).shape == (2, 1, 3 * vae.hop_length)
        out = vae(x)
    assert out["recon"].shape == x.shape and out["recon"].abs().max() <= 1
    # padding is on the right: the first frames do not depend on how the input is padded
    with torch.no_grad():
        m2, _ = vae.encode(torch.nn.functional.pad(x, (0, 3 * vae.hop_length - T)))
    torch.testing.assert_close(mean, m2)


def test_bad_inputs_are_refused():
    vae = VAE(VAEConfig(sample_rate=8000, strides=[2, 4], latent_dim=4, encoder_dim=4, decoder_dim=8))
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        vae.encode(torch.zeros(2, 2, 64))
    with pytest.raises(ValueError, match="decode expects"):
        vae.decode(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="divisible"):
        VAE(VAEConfig(strides=[2, 4], decoder_dim=6))


@pytest.mark.parametrize("p", ["smoke", "cpu"])
def test_discriminator_outputs(p):
    V, sr = profile(p)
    d = Discriminator(V["periods"], V["fft_sizes"], V["mpd_channels"], V["mrd_channels"])
    x = torch.randn(3, 1, int(V["segment_seconds"] * sr) + 1)
    outs = d(x)
    assert len(outs) == len(V["periods"]) + len(V["fft_sizes"])
    for fmaps, n in zip(outs, [6] * len(V["periods"]) + [5 * 5 + 1] * len(V["fft_sizes"])):
        assert len(fmaps) == n and all(f.shape[0] == 3 for f in fmaps)
        assert fmaps[-1].shape[1] == 1                     # logits: one channel
    # MPD folds time by the period: its last axis is the period
    assert all(f.shape[-1] == 5 for f in MPD(5, 2)(x))


# ---- losses and metrics against independent references ----

def test_kl_matches_closed_form():
    mean, logvar = torch.randn(4, 8, 10), torch.randn(4, 8, 10)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mean, logvar), ref)
    assert kl_divergence(torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)) == 0


def test_mel_loss_matches_librosa():
    sr, rng = 16000, np.random.default_rng(0)
    a, b = rng.standard_normal(4000).astype(np.float32) * 0.1, rng.standard_normal(4000).astype(np.float32) * 0.3
    ref = 0.0
    for w, m in ((64, 10), (256, 40)):
        mel = [librosa.feature.melspectrogram(y=y, sr=sr, n_fft=w, hop_length=w // 4, n_mels=m, power=1.0,
                                              center=True, pad_mode="constant") for y in (a, b)]
        ref += np.abs(np.log10(np.maximum(mel[0], 1e-5)) - np.log10(np.maximum(mel[1], 1e-5))).mean()
    got = multiscale_mel_loss(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], sr, (64, 256), (10, 40))
    assert got.item() == pytest.approx(ref, rel=1e-4)
    assert multiscale_mel_loss(torch.from_numpy(a)[None, None], torch.from_numpy(a)[None, None], sr).item() == 0


def test_si_sdr_known_values():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 8000, generator=g)
    noise = torch.randn(3, 8000, generator=g)
    ref, noise = ref - ref.mean(-1, keepdim=True), noise - noise.mean(-1, keepdim=True)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref   # orthogonal
    noise = noise * (ref.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)) * 10 ** (-20 / 20)
    torch.testing.assert_close(si_sdr(3.0 * (ref + noise), ref), torch.full((3,), 20.0), atol=1e-3, rtol=0)


def test_lowpass_baseline_keeps_low_and_removes_high():
    sr = 16000
    t = np.arange(sr) / sr
    low, high = np.sin(2 * np.pi * 200 * t).astype(np.float32), np.sin(2 * np.pi * 3000 * t).astype(np.float32)
    out = lowpass_baseline(low + high, sr, floats_per_second=800)     # Nyquist 400 Hz
    assert out.shape == low.shape
    mid = slice(1000, -1000)
    assert np.abs(out[mid] - low[mid]).max() < 0.05


# ---- training on the shared loop, latent scale, save/load ----

class Tones(torch.utils.data.Dataset):
    """Eight one-second 8 kHz clips of two harmonic tones."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        t = torch.arange(8000) / 8000
        f = 110 * (i + 2)
        return {"wave": (0.3 * torch.sin(2 * math.pi * f * t) + 0.1 * torch.sin(2 * math.pi * 3 * f * t))[None]}


def test_gan_recipe_trains_on_the_loop_and_loss_decreases(tmp_path):
    from presto_lib.train import TrainConfig, train
    V, sr = profile("smoke")
    V = {**V, "steps": 40, "gan_start": 30, "lr": 3e-3}
    torch.manual_seed(0)
    vae, disc = build_vae_modules(V, sr)
    opts = {"vae": torch.optim.AdamW(vae.parameters(), lr=V["lr"], betas=tuple(V["betas"])),
            "disc": torch.optim.AdamW(disc.parameters(), lr=V["lr"], betas=tuple(V["betas"]))}
    ctx = train(make_vae_step(V, sr), modules={"vae": vae, "disc": disc}, optimizers=opts, dataset=Tones(),
                cfg=TrainConfig(run_dir=str(tmp_path), max_steps=V["steps"], batch_size=4, log_every=5,
                                grad_clip={"vae": 1e3, "disc": 10.0}, ema_decay=0.9), ema=["vae"])
    import pandas as pd
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["mel"].iloc[-3:].mean() < 0.8 * log["mel"].iloc[0], log["mel"].tolist()
    assert log["d_loss"].isna().sum() == 6 and log["d_loss"].iloc[-1] > 0, "GAN terms only after warm-up"
    assert {"adv", "feat", "kl"} <= set(log.columns)
    # latent scale: scaled posterior means have unit variance; save/load round trip without pickle
    final = ctx.ema["vae"]
    waves = [Tones()[i]["wave"][None] for i in range(8)]
    scale = compute_latent_scale(final, waves)
    means = torch.cat([final.encode(w)[0] for w in waves]) * scale
    assert means.std().item() == pytest.approx(1.0, rel=0.05)
    save_vae(final, tmp_path / "vae")
    for f in (tmp_path / "vae").iterdir():
        with pytest.raises(Exception):
            pickle.loads(f.read_bytes())
    loaded = load_vae(tmp_path / "vae")
    assert loaded.latent_scale == pytest.approx(scale) and loaded.config["latent_scale"] == pytest.approx(scale)
    with torch.no_grad():
        torch.testing.assert_close(loaded(waves[0], sample=False)["recon"], final(waves[0], sample=False)["recon"])


def test_load_vae_refuses_other_checkpoints(tmp_path):
    from presto_lib.checkpoint import save_checkpoint
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, {"kind": "dit"})
    with pytest.raises(ValueError, match="not hold a Presto VAE"):
        load_vae(tmp_path)


def pd_read(path):
    import pandas as pd
    return pd.read_csv(path)


def _tiny_corpus(root):
    """Eight 1-s 8 kHz tone clips (6 train, 2 test) with a manifest in the corpus format."""
    import pandas as pd
    import soundfile as sf
    from presto_lib.data.datasets import REQUIRED_COLUMNS
    (root / "audio").mkdir(parents=True)
    rows = []
    for i in range(8):
        sf.write(root / "audio" / f"{i}.wav", Tones()[i]["wave"][0].numpy(), 8000)
        rows.append({"path": f"audio/{i}.wav", "piece_id": str(i), "split": "train" if i < 6 else "test",
                     "caption": "tones", "bpm": 100.0, "key": "C", "instruments": "sine", "duration_s": 1.0,
                     "sample_rate": 8000, "source": "test", "license": "CC0"})
    pd.DataFrame(rows, columns=REQUIRED_COLUMNS).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_train_vae_resumes_exports_and_restarts_on_new_params(tmp_path):
    from presto_lib.stages.common import ParamsChanged
    from presto_lib.stages.vae import train_vae
    P = render_profile("smoke")
    P["common"] = {**P["common"], "clip_seconds": 1.0}
    P["vae"] = {**P["vae"], "steps": 6, "gan_start": 3, "ckpt_every": 2, "scale_clips": 4}
    P["curves"] = {**P["curves"], "points": 0}          # this corpus has no valid split; curves: test_learning_curve
    manifest, out = _tiny_corpus(tmp_path / "corpus"), tmp_path / "vae"
    train_vae(P, manifest, out, stop_after=4)          # "killed" after 4 steps: nothing exported yet
    assert not (out / "model.safetensors").exists()
    vae = train_vae(P, manifest, out)                  # resumes to the end and exports
    resumed = load_vae(out)
    assert resumed.latent_scale == pytest.approx(vae.latent_scale) and resumed.latent_scale != 1.0
    fresh = train_vae(P, manifest, tmp_path / "fresh")
    for (k, a), b in zip(fresh.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{k}: resumed run differs from an uninterrupted one"
    P["vae"]["kl_weight"] = 1e-2                        # new params: the old run is not resumed
    with pytest.raises(ParamsChanged, match="vae.kl_weight"):
        train_vae(P, manifest, out, stop_after=2)
    train_vae(P, manifest, out, stop_after=2, restart=True)
    assert not (out / "model.safetensors").exists()
    assert len(pd_read(out / "log.csv")) == 1
