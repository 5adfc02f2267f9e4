"""DiT backbone (paper A.1): AdaLN-zero init, text concatenation + masking, BPM null, layer selection, shapes."""
import json
import math

import pytest
import torch

from presto_lib.models.dit import DiT, DiTConfig
from presto_lib.models.layers import AttnContext, joint_attention

torch.set_num_threads(2)
C, D_TEXT = 6, 12


def make(seed=0, randomise=True, **kw):
    """A tiny DiT; `randomise` replaces the zero-init layers with random weights so outputs are non-trivial."""
    torch.manual_seed(seed)
    cfg = dict(in_channels=C, hidden_size=32, depth=3, num_heads=4, text_dim=D_TEXT)
    cfg.update(kw)
    model = DiT(DiTConfig(**cfg)).eval()
    if randomise:
        with torch.no_grad():
            for mod in [b.adaLN_modulation[-1] for b in model.blocks] + [
                    model.final_layer.adaLN_modulation[-1], model.final_layer.linear]:
                mod.weight.normal_(0, 0.2)
                mod.bias.normal_(0, 0.2)
    return model


def inputs(B=2, T=9, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, generator=g)
    c_noise = torch.randn(B, generator=g)
    bpm = torch.linspace(80, 160, B)
    text = torch.randn(B, L, D_TEXT, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False
    return x, c_noise, bpm, text, mask


# ---- init ----

def test_zero_init_blocks_are_identity_and_output_is_zero():
    model = make(randomise=False)
    x, c_noise, bpm, text, mask = inputs()
    h, c, ctx = model.embed(x, c_noise, bpm, text, mask)
    for block in model.blocks:
        assert torch.equal(block(h, c, ctx), h)
    out = model(x, c_noise, bpm, text, mask)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0


def test_randomised_model_is_not_trivial():
    model = make()
    x, c_noise, bpm, text, mask = inputs()
    h, c, ctx = model.embed(x, c_noise, bpm, text, mask)
    assert not torch.allclose(model.blocks[0](h, c, ctx), h)
    assert model(x, c_noise, bpm, text, mask).abs().mean() > 1e-2


# ---- text conditioning ----

def test_padding_text_tokens_do_not_change_output():
    model = make()
    x, c_noise, bpm, text, mask = inputs()
    ref = model(x, c_noise, bpm, text, mask)
    pad = torch.randn(2, 4, D_TEXT) * 10
    text2 = torch.cat([text, pad], 1)
    mask2 = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(x, c_noise, bpm, text2, mask2), ref, atol=1e-5, rtol=1e-5)
    # values under the mask are ignored too
    text3 = text.clone()
    text3[0, 3:] = 100.0
    torch.testing.assert_close(model(x, c_noise, bpm, text3, mask), ref, atol=1e-5, rtol=1e-5)
    # ... but real tokens matter
    text4 = text.clone()
    text4[0, 0] += 1.0
    assert not torch.allclose(model(x, c_noise, bpm, text4, mask)[0], ref[0], atol=1e-4)


def test_fully_masked_text_is_the_null_condition():
    model = make()
    x, c_noise, bpm, text, mask = inputs()
    null_mask = torch.zeros_like(mask)
    out_null = model(x, c_noise, bpm, text, null_mask)
    assert torch.isfinite(out_null).all()
    assert not torch.allclose(out_null, model(x, c_noise, bpm, text, mask), atol=1e-4)
    # a null text carries no information: any masked tokens, or none at all, give the same output
    torch.testing.assert_close(model(x, c_noise, bpm, torch.randn_like(text), null_mask), out_null,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, c_noise, bpm, None, None), out_null, atol=1e-5, rtol=1e-5)


def test_joint_attention_matches_naive_masked_softmax():
    torch.manual_seed(0)
    B, N, L, H, d = 2, 5, 4, 2, 8
    q, k, v = torch.randn(B, N, H, d), torch.randn(B, N + L, H, d), torch.randn(B, N + L, H, d)
    key_mask = torch.ones(B, N + L, dtype=torch.bool)
    key_mask[0, N + 1:] = False
    key_mask[1, N:] = False
    out = joint_attention(q, k, v, AttnContext(torch.zeros(B, L, 4), key_mask, None, False))
    logits = torch.einsum("bnhd,bshd->bhns", q, k) / math.sqrt(d)
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    ref = torch.einsum("bhns,bshd->bnhd", logits.softmax(-1), v)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ---- BPM / extra embedding ----

def test_nonpositive_bpm_uses_learned_null_embedding():
    model = make()
    x, c_noise, _, text, mask = inputs()
    run = lambda bpm: model(x, c_noise, torch.tensor(bpm), text, mask)  # noqa: E731
    out0, out_neg, out_real = run([0.0, 0.0]), run([-1.0, -50.0]), run([120.0, 120.0])
    torch.testing.assert_close(out0, out_neg)
    assert not torch.allclose(out0, out_real, atol=1e-4)
    with torch.no_grad():
        model.null_bpm.add_(1.0)
    out_mixed = run([0.0, 120.0])
    assert not torch.allclose(out_mixed[0], out0[0], atol=1e-4)      # null row sees the new null embedding
    torch.testing.assert_close(out_mixed[1], out_real[1])            # real-BPM row does not


def _bpm_features(model, bpm):
    """The BPM embedder's input features (before its MLP), float64."""
    emb = model.bpm_embedder
    if hasattr(emb, "features"):
        return emb.features(bpm).detach().double()
    from presto_lib.models.layers import sinusoidal_embedding
    return sinusoidal_embedding(bpm * emb.scale, emb.freq_dim).double()


def test_number_bpm_embedding_is_normalised_smooth_and_distinct():
    """Stable Audio's NumberConditioner: t = (bpm - 40) / 200, learned Fourier features; the raw-BPM sinusoids alias."""
    new, old = make(bpm_emb="number"), make(bpm_emb="sinusoidal")
    assert DiTConfig().bpm_emb == "number"
    bpms = torch.arange(40.0, 241.0, 5.0)
    f = _bpm_features(new, bpms)
    torch.testing.assert_close(f[:, 0], (bpms - 40) / 200, check_dtype=False)     # the normalised number itself
    # well-conditioned: 1 BPM apart is close, 70 BPM apart is far; the raw-BPM sinusoids' fast features alias
    dist = lambda m, a, b: float((_bpm_features(m, torch.tensor([a])) - _bpm_features(m, torch.tensor([b]))).norm())
    for a in (60.0, 80.0, 120.0):
        assert dist(new, a, a + 1) < 0.05 * dist(new, a, a + 70)
        assert dist(old, a, a + 1) > 0.15 * dist(old, a, a + 70)
    # distinct tempi give distinct conditioning, and the null BPM differs from all of them (40 BPM included)
    with torch.no_grad():
        c = new.cond_embedding(torch.zeros(len(bpms) + 1), torch.cat([bpms, torch.zeros(1)]))
    d = torch.cdist(c.double(), c.double())
    assert d[~torch.eye(len(c), dtype=torch.bool)].min() > 1e-4
    assert d[-1, :-1].min() > 0.5 * d[0, -2]                                       # null is no tempo
    torch.testing.assert_close(new.bpm_embedder.normalise(torch.tensor([10.0, 500.0])), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        DiTConfig(bpm_emb="raw")


def test_legacy_config_keeps_the_sinusoidal_bpm_embedding():
    """A config saved before `bpm_emb` (it has bpm_emb_scale, not bpm_emb) rebuilds the old layout and loads."""
    old = make(bpm_emb="sinusoidal")
    saved = old.cfg.to_dict()
    for k in ("bpm_emb", "bpm_min", "bpm_max"):
        saved.pop(k)
    cfg = DiTConfig.from_dict(json.loads(json.dumps(saved)))
    assert cfg.bpm_emb == "sinusoidal"
    DiT(cfg).load_state_dict(old.state_dict())                                     # strict: same parameters
    assert DiTConfig.from_dict({"hidden_size": 32, "num_heads": 4}).bpm_emb == "number"   # a profile's partial dict
    with pytest.raises(RuntimeError):
        DiT(DiTConfig(**{**saved, "bpm_emb": "number"})).load_state_dict(old.state_dict())


def test_extra_emb_is_added_to_conditioning():
    model = make()
    x, c_noise, bpm, text, mask = inputs()
    ref = model(x, c_noise, bpm, text, mask)
    torch.testing.assert_close(model(x, c_noise, bpm, text, mask, extra_emb=torch.zeros(2, 32)), ref)
    e = torch.randn(2, 32)
    c = model.cond_embedding(c_noise, bpm) + e
    h, _, ctx = model.embed(x, c_noise, bpm, text, mask)
    manual = model.unembed(model.run_blocks(h, c, ctx)[0], c)
    torch.testing.assert_close(model(x, c_noise, bpm, text, mask, extra_emb=e), manual)
    assert not torch.allclose(manual, ref, atol=1e-4)


# ---- gradients ----

def test_gradients_reach_every_parameter():
    model = make().train()
    x, c_noise, _, text, mask = inputs()
    bpm = torch.tensor([120.0, 0.0])            # one real, one null BPM: both embeddings are used
    out = model(x, c_noise, bpm, text, mask)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    # per-sample dropping: a block no sample runs gets no gradient, a block one sample runs does
    model.zero_grad(set_to_none=True)
    sel = torch.tensor([[True, False, True], [False, False, True]])
    out = model(x, c_noise, bpm, text, mask, blocks=sel)
    (out * torch.randn_like(out)).sum().backward()
    assert all(p.grad is None for p in model.blocks[1].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())


# ---- block selection (layer dropping) ----

def test_block_indices_equal_bool_mask_equal_manual():
    model = make(depth=4)
    x, c_noise, bpm, text, mask = inputs()
    out_idx = model(x, c_noise, bpm, text, mask, blocks=[0, 1, 3])
    sel = torch.tensor([[True, True, False, True]] * 2)
    out_mask = model(x, c_noise, bpm, text, mask, blocks=sel)
    h, c, ctx = model.embed(x, c_noise, bpm, text, mask)
    for i in (0, 1, 3):
        h = model.blocks[i](h, c, ctx)
    manual = model.unembed(h, c)
    torch.testing.assert_close(out_idx, manual)
    torch.testing.assert_close(out_mask, manual)
    assert not torch.allclose(out_idx, model(x, c_noise, bpm, text, mask), atol=1e-4)


def test_per_sample_bool_mask_matches_each_sample_alone():
    model = make(depth=4)
    x, c_noise, bpm, text, mask = inputs(B=3)
    sel = torch.tensor([[True, False, False, True], [True, True, True, True], [False, False, False, False]])
    out, feats = model(x, c_noise, bpm, text, mask, blocks=sel, return_features=True)
    assert len(feats) == 4
    for b in range(3):
        idx = sel[b].nonzero().squeeze(1).tolist()
        alone = model(x[b:b + 1], c_noise[b:b + 1], bpm[b:b + 1], text[b:b + 1], mask[b:b + 1], blocks=idx)
        torch.testing.assert_close(out[b:b + 1], alone, atol=1e-5, rtol=1e-5)


def test_empty_block_list_and_features():
    model = make()
    x, c_noise, bpm, text, mask = inputs()
    h, c, _ = model.embed(x, c_noise, bpm, text, mask)
    torch.testing.assert_close(model(x, c_noise, bpm, text, mask, blocks=[]), model.unembed(h, c))
    out, feats = model(x, c_noise, bpm, text, mask, return_features=True)
    assert len(feats) == model.depth and all(f.shape == (2, 9, 32) for f in feats)
    torch.testing.assert_close(model.unembed(feats[-1], c), out)
    _, feats2 = model(x, c_noise, bpm, text, mask, blocks=[2, 0], return_features=True)
    assert len(feats2) == 2
    torch.testing.assert_close(feats2[0], model.blocks[2](h, c, model.embed(x, c_noise, bpm, text, mask)[2]))


# ---- shapes, positions, config ----

@pytest.mark.parametrize("T,patch", [(9, 1), (1, 1), (12, 2), (12, 3)])
def test_output_shape_matches_input(T, patch):
    model = make(patch_size=patch)
    x, c_noise, bpm, text, mask = inputs(T=T)
    out = model(x, c_noise, bpm, text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_patch_tokens_and_out_channels():
    model = make(patch_size=2, out_channels=2 * C)
    x, c_noise, bpm, text, mask = inputs(T=10)
    out, feats = model(x, c_noise, bpm, text, mask, return_features=True)
    assert out.shape == (2, 2 * C, 10) and feats[0].shape == (2, 5, 32)


def test_rope_breaks_and_no_pos_keeps_time_permutation_equivariance():
    x, c_noise, bpm, text, mask = inputs()
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    plain = make(pos_emb="none")
    torch.testing.assert_close(plain(x[..., perm], c_noise, bpm, text, mask),
                               plain(x, c_noise, bpm, text, mask)[..., perm], atol=1e-5, rtol=1e-5)
    rope = make()
    assert not torch.allclose(rope(x[..., perm], c_noise, bpm, text, mask),
                              rope(x, c_noise, bpm, text, mask)[..., perm], atol=1e-4)


def test_bad_inputs_raise_value_error():
    model = make(patch_size=2)
    x, c_noise, bpm, text, mask = inputs(T=10)
    bad = [
        dict(x=x[0]), dict(x=x[:, :C - 1]), dict(x=x[..., :9]),
        dict(text=text[..., :5]), dict(text=text[:1]), dict(mask=mask[:, :3]), dict(mask=mask.float()),
        dict(c_noise=torch.zeros(3)), dict(bpm=torch.zeros(5)),
        dict(extra_emb=torch.zeros(2, 7)), dict(blocks=[0, 3]), dict(blocks=torch.ones(2, 2, dtype=torch.bool)),
    ]
    for case in bad:
        kw = dict(x=x, c_noise=c_noise, bpm=bpm, text=text, mask=mask, blocks=None, extra_emb=None) | case
        with pytest.raises(ValueError):
            model(kw["x"], kw["c_noise"], kw["bpm"], kw["text"], kw["mask"], blocks=kw["blocks"],
                  extra_emb=kw["extra_emb"])
    with pytest.raises(ValueError):
        DiTConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError):
        DiTConfig(mlp="relu")


def test_scalar_conditions_broadcast():
    model = make()
    x, _, _, text, mask = inputs()
    torch.testing.assert_close(model(x, 0.3, 100.0, text, mask),
                               model(x, torch.full((2,), 0.3), torch.full((2,), 100.0), text, mask))


def test_config_roundtrip_and_gelu_variant():
    cfg = DiTConfig(in_channels=4, hidden_size=32, depth=2, num_heads=2, text_dim=8, mlp="gelu", patch_size=2)
    again = DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown DiTConfig keys"):
        DiTConfig.from_dict({**cfg.to_dict(), "width": 3})
    m1, m2 = DiT(cfg), DiT(again)
    m2.load_state_dict(m1.state_dict())
    x = torch.randn(1, 4, 6)
    out = m2(x, torch.zeros(1), torch.ones(1), torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))
    assert out.shape == x.shape


def test_bfloat16_weights_run():
    model = make().to(torch.bfloat16)
    x, c_noise, bpm, text, mask = inputs()
    out = model(x, c_noise, bpm, text, mask, blocks=torch.tensor([[True, False, True], [True, True, True]]))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out).all()
