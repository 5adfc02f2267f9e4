"""Inference pipeline (text + BPM -> audio) with random tiny models; the evaluation layout; latency / RTF."""
import time

import pandas as pd
import pytest
import soundfile as sf
import torch

from presto_lib.data.latents import LatentCodec, LatentNorm
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic, read_prompts, write_samples
from presto_lib.diffusion.score_model import build_score_model, save_score_model
from presto_lib.eval.latency import LatencyResult, measure_latency, real_time_factor, time_systems
from presto_lib.models.text import get_text_encoder
from presto_lib.models.vae import VAE, VAEConfig, save_vae

torch.set_num_threads(2)
SR, CLIP = 8000, 796           # ~0.1 s clips; hop 8 -> 100 latent frames (decoder output cropped)
CAPTIONS = ["a calm piano piece in C major", "fast drums and bass", "string quartet, minor key"]
BPMS = [80.0, 150.0, 100.0]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(sample_rate=SR, strides=[2, 4], latent_dim=4, encoder_dim=4, decoder_dim=16)).eval()
    te = get_text_encoder()
    model = build_score_model(dict(hidden_size=32, depth=2, num_heads=4, mlp_ratio=2.0),
                              in_channels=4, text_dim=te.dim).eval()
    with torch.no_grad():   # random (not zero-init) output layers, so conditions change the output
        for mod in [b.adaLN_modulation[-1] for b in model.net.blocks] + [
                model.net.final_layer.adaLN_modulation[-1], model.net.final_layer.linear]:
            mod.weight.normal_(0, 0.2)
            mod.bias.normal_(0, 0.2)
    frames = -(-CLIP // vae.hop_length)
    return TextToMusic(model, vae, te, latent_shape=(4, frames), sample_rate=SR, clip_samples=CLIP,
                       latent_scale=2.0, sampling=SamplingConfig(steps=3))


def test_generate_shapes_and_nfe(pipe):
    wav = pipe.generate(CAPTIONS, BPMS, seeds=[0, 1, 2])
    assert wav.shape == (3, 1, CLIP) and torch.isfinite(wav).all()
    assert pipe.nfe == 2 * 3 - 1           # DPM-2S: two evaluations per step, Euler on the last
    assert pipe.seconds == pytest.approx(CLIP / SR)
    with pytest.raises(ValueError):
        pipe.generate(CAPTIONS, BPMS[:2])
    with pytest.raises(ValueError):
        SamplingConfig(guidance="cfg+++")


def test_cfgpp_w0_equals_unconditional_end_to_end(pipe):
    z_pp = pipe.sample_latents(CAPTIONS, BPMS, [5, 6, 7], guidance="cfgpp", w=0.0)
    z_un = pipe.sample_latents(CAPTIONS, BPMS, [5, 6, 7], guidance="uncond")
    torch.testing.assert_close(z_pp, z_un, rtol=1e-4, atol=1e-4)
    z_guided = pipe.sample_latents(CAPTIONS, BPMS, [5, 6, 7], guidance="cfgpp", w=0.8)
    assert (z_guided - z_un).abs().max() > 1e-2       # the condition matters, so the check above can fail
    torch.testing.assert_close(pipe.decode(z_pp), pipe.decode(z_un), rtol=1e-4, atol=1e-4)


def test_same_seed_same_audio_regardless_of_batch(pipe):
    alone = pipe.generate(CAPTIONS[1:2], BPMS[1:2], seeds=[11])
    batched = pipe.generate(CAPTIONS, BPMS, seeds=[3, 11, 4])
    torch.testing.assert_close(alone[0], batched[1], rtol=1e-4, atol=1e-4)
    other = pipe.generate(CAPTIONS[1:2], BPMS[1:2], seeds=[12])
    assert (other - alone).abs().max() > 1e-4


def test_write_samples_layout(pipe, tmp_path):
    prompts = [{"caption": c, "bpm": b} for c, b in zip(CAPTIONS, BPMS)]
    (tmp_path / "0009.wav").write_bytes(b"stale")
    csv = write_samples(pipe.generate, prompts, tmp_path, SR, batch_size=2, seed=100)
    df = pd.read_csv(csv)
    assert list(df.columns) == ["path", "caption", "bpm", "seed"]
    assert list(df.path) == ["0000.wav", "0001.wav", "0002.wav"] and list(df.seed) == [100, 101, 102]
    assert list(df.caption) == CAPTIONS and list(df.bpm) == BPMS
    assert not (tmp_path / "0009.wav").exists()
    for p in df.path:
        info = sf.info(str(tmp_path / p))
        assert info.samplerate == SR and info.frames == CLIP and info.channels == 1


def test_from_checkpoints_and_prompts(pipe, tmp_path):
    save_score_model(tmp_path / "base", pipe.model, {"latent_frames": pipe.latent_shape[1], "sample_rate": SR,
                                                     "clip_samples": CLIP, "latent_scale": 2.0})
    save_vae(pipe.vae, tmp_path / "vae")
    loaded = TextToMusic.from_checkpoints(tmp_path / "base", tmp_path / "vae", text_encoder=pipe.text_encoder,
                                          sampling=pipe.sampling)
    torch.testing.assert_close(loaded.generate(CAPTIONS[:1], BPMS[:1], [3]), pipe.generate(CAPTIONS[:1], BPMS[:1], [3]))
    norm = LatentNorm(2.0, [0.5, -1.0, 0.0, 2.0], [0.1, 0.2, 1.0, 3.0])      # the cache's normalisation
    save_score_model(tmp_path / "base_n", pipe.model, {"latent_frames": pipe.latent_shape[1], "sample_rate": SR,
                                                       "clip_samples": CLIP, "latent_norm": norm.to_dict()})
    normed = TextToMusic.from_checkpoints(tmp_path / "base_n", tmp_path / "vae", text_encoder=pipe.text_encoder)
    assert isinstance(normed.vae, LatentCodec) and normed.latent_scale == 1.0
    z = torch.randn(2, *pipe.latent_shape)
    torch.testing.assert_close(normed.decode(z), pipe.vae.decode(norm.denormalize(z))[..., :CLIP])
    cols = ["piece_id", "key", "instruments", "duration_s", "sample_rate", "source", "license"]
    pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav"], "split": ["train", "test", "test"],
                  "caption": ["x", "y", "z"], "bpm": [90, 100, 110], **{c: ["-"] * 3 for c in cols}}
                 ).to_csv(tmp_path / "m.csv", index=False)
    assert read_prompts(tmp_path / "m.csv") == [{"caption": "y", "bpm": 100.0}, {"caption": "z", "bpm": 110.0}]
    with pytest.raises(ValueError):
        read_prompts(tmp_path / "m.csv", split="valid")


def test_latency_and_rtf_on_a_dummy_function():
    calls = []
    fn = lambda: (calls.append(1), time.sleep(0.02))
    res = real_time_factor(fn, audio_seconds=4.0, warmup=2, repeats=3)
    assert len(calls) == 5 and len(res.times_s) == 3
    assert all(t >= 0.02 for t in res.times_s) and res.median_s < 5.0
    assert 0 < res.rtf <= 4.0 / 0.02 and res.rtf == pytest.approx(4.0 / res.median_s)
    assert res.as_dict()["rtf"] == res.rtf
    assert LatencyResult(times_s=[0.5, 1.0, 2.0], audio_seconds=4.0, batch_size=2).rtf == 8.0   # b T / median
    with pytest.raises(ValueError):
        real_time_factor(fn, audio_seconds=0.0)
    with pytest.raises(ValueError):
        measure_latency(fn, repeats=0)


def test_time_systems_reports_every_system_with_its_decode_share():
    calls = {"a": 0, "b": 0, "dec": 0}
    bump = lambda k: calls.__setitem__(k, calls[k] + 1)
    df = time_systems({"a": lambda: bump("a"), "b": lambda: bump("b")}, lambda: bump("dec"), audio_seconds=4.0,
                      repeats=3)
    assert df["system"].tolist() == ["a", "b"] and calls == {"a": 4, "b": 4, "dec": 4}   # 1 warm-up + 3 timed
    assert (df["rtf"] * df["latency_s"]).round(9).eq(4.0).all() and (df["generation_s"] >= 0).all()
    with pytest.raises(ValueError):
        time_systems({"a": lambda: None}, lambda: None, audio_seconds=0.0)


@pytest.mark.parametrize("sampler", ["base", "presto_s"])
def test_copy_head_equals_generating_the_head_again(pipe, tmp_path, sampler):
    """The eval folder of a Table 2 run is copied from the head of its 168-prompt set (`copy_head`), not sampled
    twice: byte-identical to sampling the first prompts again, for the base sampler and a Presto-S generator."""
    from presto_lib.diffusion.pipeline import copy_head
    from presto_lib.distill.generator import generator_sampler
    from presto_lib.distill.presto_s import PrestoSConfig

    gen = pipe.generate if sampler == "base" else generator_sampler(pipe, pipe.model, PrestoSConfig(), 2)
    prompts = [{"caption": c, "bpm": b} for c, b in zip(CAPTIONS * 2, BPMS + [90.0, 120.0, 60.0])]
    write_samples(gen, prompts, tmp_path / "all", SR, batch_size=2, seed=7)
    copy_head(tmp_path / "all", tmp_path / "head", 4)
    write_samples(gen, prompts[:4], tmp_path / "again", SR, batch_size=2, seed=7)
    names = sorted(p.name for p in (tmp_path / "again").iterdir())
    assert names == ["0000.wav", "0001.wav", "0002.wav", "0003.wav", "samples.csv"]
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == names
    for n in names:
        assert (tmp_path / "head" / n).read_bytes() == (tmp_path / "again" / n).read_bytes(), n
    assert (tmp_path / "all" / "0004.wav").read_bytes() != (tmp_path / "all" / "0001.wav").read_bytes()
