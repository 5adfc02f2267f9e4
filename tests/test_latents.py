"""Latent cache: one encode of the corpus (VAE posterior x scale, text embeddings, masks, BPM) read back per split."""
import numpy as np
import pandas as pd
import pytest
import torch

from presto_lib.audio import load_audio, save_audio
from presto_lib.data.captions import strip_tempo
from presto_lib.data.latents import (LatentCodec, LatentDataset, LatentNorm, build_latent_cache, collate_latents,
                                     load_latent_split, read_meta)
from presto_lib.models.text import get_text_encoder
from presto_lib.models.vae import VAE, VAEConfig

torch.set_num_threads(2)
SR, CLIP = 8000, 1000            # hop 8 -> 125 latent frames
SPLIT_OF = ["train", "test", "train", "valid", "train", "test", "train"]
CAPTIONS = ["solo piano, slow", "a lively jig for fiddle and flute", "choir", "brass band march in B-flat major",
            "guitar", "string trio, minor key, at a moderate tempo", "organ"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    rng = np.random.default_rng(0)
    rows = []
    for i, (sp, cap) in enumerate(zip(SPLIT_OF, CAPTIONS)):
        t = np.arange(CLIP) / SR
        wav = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.01 * rng.standard_normal(CLIP)
        save_audio(root / "corpus" / "audio" / f"{i}.wav", wav.astype(np.float32), SR)
        rows.append({"path": f"audio/{i}.wav", "piece_id": f"p{i}", "split": sp, "caption": cap, "bpm": 60.0 + 10 * i,
                     "key": "C major", "instruments": "piano", "duration_s": CLIP / SR, "sample_rate": SR,
                     "source": "test", "license": "CC0"})
    pd.DataFrame(rows).to_csv(root / "corpus" / "manifest.csv", index=False)
    torch.manual_seed(0)
    vae = VAE(VAEConfig(sample_rate=SR, strides=[2, 4], latent_dim=4, encoder_dim=4, decoder_dim=16,
                        latent_scale=2.5)).eval()
    te = get_text_encoder()
    out = build_latent_cache(root / "corpus" / "manifest.csv", vae, te, root / "latents", batch_size=2)
    return {"root": root, "out": out, "vae": vae, "te": te, "rows": rows}


def test_splits_preserved_in_manifest_order(cache):
    meta = read_meta(cache["out"])
    assert meta["splits"] == {"train": 4, "valid": 1, "test": 2}
    for sp in ("train", "valid", "test"):
        want = [r for r in cache["rows"] if r["split"] == sp]
        tensors, labels = load_latent_split(cache["out"], sp)
        assert labels["captions"] == [r["caption"] for r in want]
        assert labels["piece_ids"] == [r["piece_id"] for r in want]
        assert tensors["bpm"].tolist() == [r["bpm"] for r in want]
    with pytest.raises(ValueError):
        load_latent_split(cache["out"], "holdout")


def test_latents_are_normalised_posterior_means_and_decode_to_clip_shape(cache):
    vae, meta = cache["vae"], read_meta(cache["out"])
    assert meta["latent_scale"] == 2.5 and meta["hop_length"] == 8 and meta["sample_rate"] == SR
    assert meta["clip_samples"] == CLIP and meta["latent_frames"] == -(-CLIP // 8) and meta["latent_dim"] == 4
    norm = LatentNorm.from_dict(meta["latent_norm"])
    train = load_latent_split(cache["out"], "train")[0]["latents"]
    flat = train.transpose(0, 1).reshape(4, -1)                     # per-channel standardisation
    med = flat.median(dim=1).values
    torch.testing.assert_close(med, torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(dim=1), torch.full((4,), 0.5), atol=1e-4, rtol=0)   # std = sigma_data (A.1)
    tensors, _ = load_latent_split(cache["out"], "test")
    assert tensors["latents"].shape == (2, 4, meta["latent_frames"]) and tensors["latents"].dtype == torch.float32
    wave = torch.stack([torch.from_numpy(load_audio(cache["root"] / "corpus" / r["path"])[0])
                        for r in cache["rows"] if r["split"] == "test"])
    codec = LatentCodec(vae, norm)
    with torch.no_grad():
        mean, logvar = vae.encode(wave)
        want = (2.5 * mean - torch.tensor(norm.mean)[None, :, None]) / torch.tensor(norm.std)[None, :, None]
        torch.testing.assert_close(tensors["latents"], want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(tensors["latents_std"], (0.5 * logvar).exp() * 2.5 / torch.tensor(norm.std)[:, None],
                                   rtol=1e-4, atol=1e-5)
        c_mean, c_logvar = codec.encode(wave)
        torch.testing.assert_close(c_mean, tensors["latents"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close((0.5 * c_logvar).exp(), tensors["latents_std"], rtol=1e-4, atol=1e-5)
        wav = codec.decode(tensors["latents"])
        torch.testing.assert_close(wav, vae.decode(mean), rtol=1e-3, atol=1e-4)     # decode(encode) round trip
    assert wav.shape == (2, 1, meta["latent_frames"] * 8) and wav.shape[-1] >= CLIP
    assert codec.hop_length == 8 and codec.latent_dim == 4 and codec.sample_rate == SR and codec.latent_scale == 1.0


def test_cached_text_equals_a_fresh_encode(cache):
    te, meta = cache["te"], read_meta(cache["out"])
    assert meta["text_dim"] == te.dim == 384 and meta["text_encoder"] == te.name
    for sp in ("train", "test"):
        tensors, labels = load_latent_split(cache["out"], sp)
        assert tensors["text"].shape[1] == tensors["text_mask"].shape[1] == meta["text_length"]
        for i, cap in enumerate(labels["captions"]):
            emb, mask = te.encode([cap])
            n = int(mask.sum())
            assert int(tensors["text_mask"][i].sum()) == n and tensors["text_mask"][i, :n].all()
            torch.testing.assert_close(tensors["text"][i, :n], emb[0, :n], rtol=1e-4, atol=1e-5)
            assert (tensors["text"][i, n:] == 0).all()


def test_cache_holds_tempo_free_captions(cache):
    te, meta = cache["te"], read_meta(cache["out"])
    tensors, labels = load_latent_split(cache["out"], "train")
    assert tensors["text_notempo"].shape == tensors["text"].shape == (4, meta["text_length"], 384)
    for i, cap in enumerate(labels["captions"]):
        emb, mask = te.encode([strip_tempo(cap)])
        n = int(mask.sum())
        assert int(tensors["text_notempo_mask"][i].sum()) == n
        torch.testing.assert_close(tensors["text_notempo"][i, :n], emb[0, :n], rtol=1e-4, atol=1e-5)
    assert strip_tempo(CAPTIONS[0]) == "Solo piano" and not torch.equal(tensors["text_notempo"][0], tensors["text"][0])
    ds = LatentDataset(cache["out"], "train")
    b = collate_latents([ds[i] for i in range(3)])
    torch.testing.assert_close(b["text_notempo"], tensors["text_notempo"][:3])
    assert b["text_notempo_mask"].dtype == torch.bool


def test_latent_dataset_items_and_posterior_sampling(cache):
    ds = LatentDataset(cache["out"], "train")
    assert len(ds) == 4 and ds.captions[1] == CAPTIONS[2]
    b = collate_latents([ds[i] for i in range(3)])
    assert b["latents"].shape == (3, 4, read_meta(cache["out"])["latent_frames"])
    assert b["text_mask"].dtype == torch.bool and b["bpm"].tolist() == [60.0, 80.0, 100.0]
    assert b["caption"] == [CAPTIONS[0], CAPTIONS[2], CAPTIONS[4]] and b["index"].tolist() == [0, 1, 2]
    torch.testing.assert_close(ds[0]["latents"], ds[0]["latents"])
    noisy = LatentDataset(cache["out"], "train", sample_posterior=True)
    torch.manual_seed(0)
    draws = torch.stack([noisy[0]["latents"] for _ in range(200)])
    std = ds.tensors["latents_std"][0]
    torch.testing.assert_close(draws.mean(0), ds[0]["latents"], atol=float(5 * std.max() / 200 ** 0.5), rtol=0)
    assert ((draws.std(0) / std - 1).abs().mean()) < 0.1
    with pytest.raises(ValueError):
        LatentDataset(cache["root"] / "nowhere", "train")


def test_lazy_split_reads_the_same_items_and_pickles(cache):
    import pickle

    eager, lazy = LatentDataset(cache["out"], "train"), LatentDataset(cache["out"], "train", lazy=True)
    assert lazy.lazy and not eager.lazy and len(lazy) == len(eager) == 4
    for i in (0, 3):
        a, b = eager[i], lazy[i]
        for k in ("latents", "text", "text_mask", "bpm"):
            torch.testing.assert_close(a[k], b[k])
    clone = pickle.loads(pickle.dumps(lazy))         # as a DataLoader worker receives it
    torch.testing.assert_close(clone[2]["latents"], eager[2]["latents"])
    with pytest.raises(ValueError):
        lazy.tensors
    with pytest.raises(IndexError):
        lazy[4]


def test_cache_without_posterior_std(cache, tmp_path):
    norm = LatentNorm.from_dict(read_meta(cache["out"])["latent_norm"])
    out = build_latent_cache(cache["root"] / "corpus" / "manifest.csv", cache["vae"], cache["te"], tmp_path / "lat",
                             splits=("test",), store_std=False, fit_norm=norm)
    tensors, _ = load_latent_split(out, "test")
    assert "latents_std" not in tensors and read_meta(out)["splits"] == {"test": 2}
    torch.testing.assert_close(tensors["latents"], load_latent_split(cache["out"], "test")[0]["latents"])
    assert LatentDataset(out, "test")[0]["latents"].shape[0] == 4
    with pytest.raises(ValueError):
        LatentDataset(out, "test", sample_posterior=True)


class ProjectionVAE(torch.nn.Module):
    """A VAE stand-in: each latent frame is a fixed random projection of its `hop` samples, with channel offsets."""
    hop_length, sample_rate, latent_dim, latent_scale = 8, SR, 3, 1.0

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3, 8, generator=g) * torch.tensor([[0.1], [2.0], [30.0]]))
        self.register_buffer("offset", torch.tensor([5.0, -1.0, 0.0]))

    def encode(self, wav):
        frames = wav.reshape(wav.shape[0], -1, 8)                              # [B, T', hop]
        mean = torch.einsum("ch,bth->bct", self.proj, frames) + self.offset[:, None]
        return mean, torch.full_like(mean, -4.0)

    def decode(self, z):
        return torch.einsum("ch,bct->bth", torch.linalg.pinv(self.proj).T, z - self.offset[:, None]).reshape(
            z.shape[0], 1, -1)


def test_cached_latents_sit_at_sigma_data_and_decode_exactly(tmp_path):
    """Every channel of the train split has std 0.5 (+-10%) = sigma_data, whatever the VAE's channel scales."""
    rng, rows = np.random.default_rng(1), []
    for i, sp in enumerate(["train"] * 4 + ["test"]):
        save_audio(tmp_path / "audio" / f"{i}.wav", (0.1 * rng.standard_normal(8 * CLIP)).astype(np.float32), SR)
        rows.append({"path": f"audio/{i}.wav", "piece_id": f"p{i}", "split": sp, "caption": "piano", "bpm": 90.0,
                     "key": "C major", "instruments": "piano", "duration_s": 8 * CLIP / SR, "sample_rate": SR,
                     "source": "test", "license": "CC0"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    vae, te = ProjectionVAE(), get_text_encoder()
    out = build_latent_cache(tmp_path / "manifest.csv", vae, te, tmp_path / "lat", splits=("train", "test"))
    meta, train = read_meta(out), load_latent_split(out, "train")[0]["latents"]
    std = train.transpose(0, 1).reshape(3, -1).std(1)
    assert ((std - 0.5).abs() < 0.05).all(), std                     # channel scales 0.1, 2, 30 all -> 0.5
    assert meta["target_std"] == 0.5 and meta["channel_std_train"] == pytest.approx(std.tolist(), rel=1e-5)
    norm = LatentNorm.from_dict(meta["latent_norm"])
    codec = LatentCodec(vae, norm)
    wave = torch.from_numpy(load_audio(tmp_path / "audio" / "4.wav")[0])[None]
    with torch.no_grad():
        x = load_latent_split(out, "test")[0]["latents"]
        torch.testing.assert_close(codec.encode(wave)[0], x, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.denormalize(x), vae.encode(wave)[0], rtol=1e-4, atol=1e-4)   # exact inverse
        torch.testing.assert_close(codec.decode(x), vae.decode(vae.encode(wave)[0]), rtol=1e-4, atol=1e-5)
    unit = build_latent_cache(tmp_path / "manifest.csv", vae, te, tmp_path / "lat1", splits=("train",), target_std=1.0)
    torch.testing.assert_close(load_latent_split(unit, "train")[0]["latents"], 2 * train, rtol=1e-4, atol=1e-5)


def test_latent_norm_is_robust_to_shared_edge_frames():
    g = torch.Generator().manual_seed(0)
    z = 3.0 + 0.2 * torch.randn(500, 2, 100, generator=g)        # music: offset 3, spread 0.2
    z[:, :, :2] += 40.0                                           # padding artefact on the first frames
    norm = LatentNorm.fit(z, scale=1.0, target_std=1.0, spread="mad")
    assert norm.mean == pytest.approx([3.0, 3.0], abs=0.01) and norm.std == pytest.approx([0.2, 0.2], rel=0.03)
    half = LatentNorm.fit(z, scale=1.0, spread="mad")              # robust std 0.5 = sigma_data
    assert half.std == pytest.approx([0.4, 0.4], rel=0.03)
    plain = LatentNorm.fit(z, scale=1.0)                           # default: plain std (EDM2), edge frames included
    assert plain.std == pytest.approx((z.transpose(0, 1).reshape(2, -1).std(1) / 0.5).tolist(), rel=1e-4)
    assert LatentNorm.from_dict(plain.to_dict()).normalize(z).transpose(0, 1).reshape(2, -1).std(1).tolist() == \
        pytest.approx([0.5, 0.5], rel=1e-4)
    with pytest.raises(ValueError, match="spread"):
        LatentNorm.fit(z, scale=1.0, spread="iqr")
    torch.testing.assert_close(norm.denormalize(norm.normalize(z)), z, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        LatentNorm(1.0, [0.0] * 3, [1.0] * 3).normalize(z)

