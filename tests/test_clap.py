"""The LAION-CLAP path: a tiny random-initialised ClapModel saved to a local folder, loaded like the real one."""
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

from presto_lib.eval.clap import ClapEmbedder, quantize_int16
from presto_lib.eval.backbones import get_embedder
from presto_lib.eval.metrics import clap_score
from presto_lib.models.text import minilm_dir

SR = 48000


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = ClapConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, pad_token_id=0, projection_dim=16),
        audio_config=dict(patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
                          num_attention_heads=[1, 1, 1, 1], projection_dim=16),
        projection_dim=16)
    d = tmp_path_factory.mktemp("tiny_clap")
    ClapModel(cfg).save_pretrained(d)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(d)   # any local tokenizer matching the vocab
    ClapFeatureExtractor().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def emb(clap_dir):
    return get_embedder("clap", path=clap_dir)


def _direct(clap_dir, windows):
    """Reference: the transformers feature extractor + ClapModel called by hand, window by window."""
    model = ClapModel.from_pretrained(clap_dir).eval()
    fe = ClapFeatureExtractor.from_pretrained(clap_dir)
    out = []
    for w in windows:
        f = fe([quantize_int16(w)], sampling_rate=SR, truncation="rand_trunc", return_tensors="pt")
        with torch.no_grad():
            e = model.get_audio_features(input_features=f["input_features"], is_longer=f["is_longer"])
        e = e if isinstance(e, torch.Tensor) else e.pooler_output
        out.append(torch.nn.functional.normalize(e, dim=-1)[0].numpy())
    return np.stack(out)


def test_loads_local_folder_and_matches_direct_call(clap_dir, emb):
    assert isinstance(emb, ClapEmbedder) and emb.sample_rate == SR and emb.dim == 16
    rng = np.random.default_rng(0)
    short = (0.1 * rng.normal(size=4 * SR)).astype(np.float32)       # one repeat-padded window
    long = (0.1 * rng.normal(size=11 * SR)).astype(np.float32)       # windows at 0 s and 1 s
    got = emb.embed_audio([short, long], SR)
    assert got.shape == (2, 16)
    np.testing.assert_allclose(got[0], _direct(clap_dir, [short])[0], atol=1e-5)
    np.testing.assert_allclose(got[1], _direct(clap_dir, [long[:10 * SR], long[SR:]]).mean(0), atol=1e-5)


def test_text_embeddings_unit_norm_and_score(emb):
    t = emb.embed_text(["a calm piano piece in C major", "fast drums and bass"])
    assert t.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    a = emb.embed_audio(np.zeros((2, SR * 2), np.float32) + 0.01, SR)
    s = clap_score(a, t)
    assert -100.0 <= s <= 100.0


def test_resamples_input(emb):
    rng = np.random.default_rng(1)
    x16 = (0.1 * rng.normal(size=16000 * 2)).astype(np.float32)
    assert emb.embed_audio(x16[None], 16000).shape == (1, 16)


def test_absent_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not available offline"):
        get_embedder("clap", path=tmp_path / "larger_clap_music")
    with pytest.raises(FileNotFoundError, match="not available offline"):
        ClapEmbedder(None)


# ---- corpus CLAP ----

def test_contrastive_loss_matches_clip_formula_without_duplicates():
    from presto_lib.eval.corpus_clap import contrastive_loss
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    scale = torch.tensor(np.log(10.0))
    logits = 10.0 * a @ t.T
    labels = torch.arange(6)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels))
    assert contrastive_loss(a, t, scale, torch.arange(6)).item() == pytest.approx(ref.item(), rel=1e-6)


def test_corpus_clap_learns_caption_audio_pairs_and_round_trips(tmp_path):
    from presto_lib.eval.corpus_clap import (load_corpus_clap, retrieval_at_k, save_corpus_clap, text_features,
                                             train_corpus_clap)
    from presto_lib.models.text import get_text_encoder
    rng = np.random.default_rng(0)
    names = ["solo piano, slow", "string quartet in D minor", "jazz drums and bass, fast", "church organ chorale",
             "acoustic guitar ballad", "brass fanfare, march"]
    protos = rng.normal(size=(len(names), 32))                      # each caption's 'sound' in feature space

    def clips(n):
        lab = rng.integers(0, len(names), n)
        wins = [protos[c] + 0.5 * rng.normal(size=(3, 32)) for c in lab]
        return wins, [names[c] for c in lab]

    name_feats = dict(zip(names, text_features(names, get_text_encoder())))
    feats = lambda caps: np.stack([name_feats[c] for c in caps])
    (tw, tc), (vw, vc) = clips(240), clips(60)
    cfg = dict(steps=100, batch_size=48, embed_dim=16, hidden=64, lr=3e-3)
    model, log = train_corpus_clap(tw, feats(tc), tc, cfg, valid=(vw, feats(vc), vc), progress=False)
    assert log[-1]["valid_r1"] > 0.9 and log[-1]["valid_gap"] > 20   # chance R@1 is ~1/6
    assert log[-1]["valid_loss"] < log[0]["valid_loss"]
    save_corpus_clap(tmp_path / "cc", model, {**cfg, "audio_layer": "penultimate"})
    emb = load_corpus_clap(tmp_path / "cc")
    a, t = emb.from_features(vw), emb.embed_text(vc)                # embed_text runs the real text tower
    assert a.shape == (60, 16) and retrieval_at_k(a, t, vc, 1) > 0.9
    np.testing.assert_allclose(t[:1], emb.embed_text(vc[:1]), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="metrics"):
        load_corpus_clap(tmp_path / "nothing")
