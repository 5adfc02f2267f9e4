"""Text encoder: MiniLM from the wheel (offline), a local T5 folder as drop-in, null condition, clear errors."""
import pytest
import torch

from presto_lib.models.text import (MINILM_VOCAB_SIZE, TextEncoder, get_text_encoder, minilm_dir,
                                    null_condition)

torch.set_num_threads(2)
CAPTIONS = ["a calm solo piano piece in C major", "fast techno with heavy drums at 140 bpm", "jazz trio"]


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm", max_length=16)


def test_minilm_embeddings(minilm):
    assert minilm.vocab_size == MINILM_VOCAB_SIZE == 30522      # an offline tokenizer must not come back empty
    assert minilm.dim == 384 and minilm.kind == "minilm" and minilm.name == "minilm:all-MiniLM-L6-v2"
    emb, mask = minilm.encode(CAPTIONS)
    B, L, D = emb.shape
    assert (B, D) == (3, 384) and L > 2 and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert torch.isfinite(emb).all()
    lengths = [len(minilm.tokenizer(c)["input_ids"]) for c in CAPTIONS]   # [CLS] ... [SEP]
    assert mask.sum(1).tolist() == lengths and L == max(lengths)
    assert (emb[~mask] == 0).all() and (emb[mask].abs().sum(-1) > 0).all()


def test_minilm_deterministic_and_caption_sensitive(minilm):
    e1, m1 = minilm.encode(CAPTIONS)
    e2, m2 = minilm.encode(CAPTIONS)
    assert torch.equal(e1, e2) and torch.equal(m1, m2)
    a, _ = minilm.encode(["a calm solo piano piece", "a calm solo violin piece"])
    assert not torch.allclose(a[0], a[1], atol=1e-3)


def test_padding_and_truncation(minilm):
    emb, mask = minilm.encode(["short"], pad_to_max_length=True)
    assert emb.shape == (1, 16, 384) and mask.sum() == 3        # [CLS] short [SEP]
    emb, mask = minilm.encode(["word " * 100])
    assert emb.shape[1] == 16 and mask.all()


def test_cache_returns_same_object(minilm):
    assert get_text_encoder("minilm", max_length=16) is minilm


def test_null_condition(minilm):
    emb, mask = null_condition(2, 5, 384)
    assert emb.shape == (2, 5, 384) and not mask.any() and emb.abs().sum() == 0
    emb, mask = minilm.null_condition(3, 4)
    assert emb.shape == (3, 4, 384) and mask.shape == (3, 4) and not mask.any()


def test_t5_folder_is_a_drop_in(tmp_path, minilm):
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=MINILM_VOCAB_SIZE, d_model=24, d_kv=8, d_ff=32, num_layers=2, num_heads=3,
                   pad_token_id=0)
    T5EncoderModel(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True).save_pretrained(tmp_path)
    for kind in ("t5", "auto"):
        enc = TextEncoder(kind, tmp_path, max_length=12)
        assert enc.kind == "t5" and enc.name == f"t5:{tmp_path.name}" and enc.dim == 24 and enc.vocab_size == MINILM_VOCAB_SIZE
        emb, mask = enc.encode(CAPTIONS[:2])
        assert emb.shape == (2, mask.shape[1], 24) and torch.isfinite(emb).all()
        assert mask.sum(1).tolist() == minilm.encode(CAPTIONS[:2])[1].sum(1).tolist()
        assert not torch.allclose(emb[0, 1], emb[1, 1])


def test_missing_folder_or_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*config.json"):
        TextEncoder("t5", tmp_path / "nope")
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match="no weights"):
        TextEncoder("auto", tmp_path)
    with pytest.raises(ValueError, match="needs path"):
        TextEncoder("t5")
    with pytest.raises(ValueError, match="unknown text encoder kind"):
        TextEncoder("clip")


def test_bad_captions(minilm):
    with pytest.raises(ValueError):
        minilm.encode("not a list")
    with pytest.raises(ValueError):
        minilm.encode([])
