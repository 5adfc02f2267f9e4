"""The fast inference path reproduces the reference pipeline (same weights, prompts, seeds) at the smoke size.

Tolerance (relative L2 error): fp32 weights, latents <= 1e-5 and decoded audio <= 1e-4 (the fast path reorders
float work: text K/V cached, host-float EDM coefficients; measured ~2e-7); bf16 weight copies, latents <= 5e-2
(bf16 keeps an 8-bit mantissa). The random DiT's output layer is scaled up so its output shapes the latents.
"""
import pytest
import torch

from presto_lib.config import render_profile
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic
from presto_lib.inference.pipeline import FastConfig, FastTextToMusic, pad_text
from presto_lib.inference.systems import build_models, fast_system, reference_system, scale_output_layer

LAT_TOL, WAV_TOL, BF16_TOL = 1e-5, 1e-4, 5e-2
CAPTIONS, BPMS, SEEDS = ["calm piano", "fast drums and bass"], [90.0, 150.0], [3, 11]


class StubText:
    """Deterministic caption embeddings with caption-dependent lengths (so the key-padding mask matters)."""

    dim = 24

    def encode(self, captions):
        L = max(len(c.split()) for c in captions) + 1
        emb = torch.zeros(len(captions), L, self.dim)
        mask = torch.zeros(len(captions), L, dtype=torch.bool)
        for i, c in enumerate(captions):
            n = len(c.split()) + 1
            g = torch.Generator().manual_seed(sum(map(ord, c)))
            emb[i, :n] = torch.randn(n, self.dim, generator=g)
            mask[i, :n] = True
        return emb, mask


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    P = render_profile("smoke")
    vae, base, ls, frames, sr, clip = build_models(P, StubText.dim, "cpu")
    scale_output_layer(base, 10.0)      # ls shares base's DiT
    t2m = TextToMusic(base, vae, StubText(), latent_shape=(vae.latent_dim, frames), sample_rate=sr,
                      clip_samples=clip, sampling=SamplingConfig(steps=3))
    return t2m, base, ls


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def models(setup, name):
    t2m, base, ls = setup
    return ls if name in ("presto_ls", "presto_l") else base


@pytest.mark.parametrize("name", ["base", "presto_s", "presto_ls", "presto_l"])
def test_fast_path_equals_reference(setup, name):
    t2m, model = setup[0], models(setup, name)
    fast = fast_system(name, t2m, model, FastConfig(dtype="fp32", text_length=12))
    z_ref = reference_system(name, t2m, model, latents=True)(CAPTIONS, BPMS, SEEDS)
    z = fast.latents(CAPTIONS, BPMS, SEEDS)
    assert z.shape == z_ref.shape and rel(z, z_ref) < LAT_TOL, rel(z, z_ref)
    ref = reference_system(name, t2m, model)(CAPTIONS, BPMS, SEEDS)
    out = fast.generate(CAPTIONS, BPMS, SEEDS, timed=True)
    assert out.shape == ref.shape and ref.abs().max() > 0
    assert rel(out, ref) < WAV_TOL, rel(out, ref)
    assert set(fast.last_times) == {"text_s", "generation_s", "decode_s"}


def test_fast_path_is_sensitive_to_the_maths(setup):
    """Guards the tolerance: another guidance weight, seed or dropping plan moves the latents far beyond LAT_TOL."""
    t2m, base, ls = setup
    ref = reference_system("base", t2m, base, latents=True)(CAPTIONS, BPMS, SEEDS)
    fast = fast_system("base", t2m, base, FastConfig(dtype="fp32", text_length=12))
    fast.sampler.w = 0.7
    assert rel(fast.latents(CAPTIONS, BPMS, SEEDS), ref) > 10 * LAT_TOL
    fast.sampler.w = 0.8
    assert rel(fast.latents(CAPTIONS, BPMS, [3, 12]), ref) > 1000 * LAT_TOL
    ref_l = reference_system("presto_ls", t2m, ls, latents=True)(CAPTIONS, BPMS, SEEDS)
    fast_l = fast_system("presto_ls", t2m, ls, FastConfig(dtype="fp32"))
    fast_l.den.plan = lambda s, blocks=None: (tuple(range(ls.schedule.depth)), 0.0)    # no dropping
    assert rel(fast_l.latents(CAPTIONS, BPMS, SEEDS), ref_l) > 100 * LAT_TOL


def test_layer_dropped_fast_path_skips_the_planned_blocks(setup):
    """Presto-LS: at each sigma the fast path runs exactly the schedule's blocks (sec. 3.3), decided on the host."""
    t2m, _, ls = setup
    fast = fast_system("presto_ls", t2m, ls, FastConfig(dtype="fp32"))
    seen = []
    orig = fast.den.block
    fast.den.block = lambda i, *a: (seen.append(i), orig(i, *a))[1]
    fast.generate(CAPTIONS[:1], BPMS[:1], SEEDS[:1])
    expect = [i for s in fast.sampler.sigmas[:-1] for i in ls.schedule.blocks(int(ls.schedule.n_drop(s)[0]))]
    assert seen == expect and len(seen) < len(fast.sampler.sigmas[:-1]) * ls.schedule.depth


def test_batched_cfg_equals_two_passes(setup):
    t2m, base, _ = setup
    one = fast_system("base", t2m, base, FastConfig(dtype="fp32", batch_cfg=True))
    two = fast_system("base", t2m, base, FastConfig(dtype="fp32", batch_cfg=False))
    calls = []
    orig = two.den.net
    two.den.net = lambda x, *a: (calls.append(x.shape[0]), orig(x, *a))[1]
    z2 = two.latents(CAPTIONS, BPMS, SEEDS)
    assert rel(one.latents(CAPTIONS, BPMS, SEEDS), z2) < LAT_TOL
    assert calls and set(calls) == {len(CAPTIONS)}           # two passes of batch B each, not one of 2B


def test_bf16_weights_stay_close(setup):
    t2m, base, _ = setup
    ref = reference_system("presto_s", t2m, base, latents=True)(CAPTIONS, BPMS, SEEDS)
    fast = fast_system("presto_s", t2m, base, FastConfig(dtype="bf16"))
    assert next(fast.den.parameters()).dtype == torch.bfloat16
    assert next(fast.vae.parameters()).dtype == torch.bfloat16
    err = rel(fast.latents(CAPTIONS, BPMS, SEEDS), ref)
    assert 0 < err < BF16_TOL, err
    wav_ref = reference_system("presto_s", t2m, base)(CAPTIONS, BPMS, SEEDS)
    err = rel(fast.generate(CAPTIONS, BPMS, SEEDS), wav_ref)      # + the bf16 VAE decoder
    assert 0 < err < BF16_TOL, err


def test_static_text_padding_is_a_no_op(setup):
    t2m, base, _ = setup
    a = fast_system("presto_s", t2m, base, FastConfig(dtype="fp32", text_length=0)).latents(CAPTIONS, BPMS, SEEDS)
    b = fast_system("presto_s", t2m, base, FastConfig(dtype="fp32", text_length=40)).latents(CAPTIONS, BPMS, SEEDS)
    assert rel(a, b) < LAT_TOL
    e, m = pad_text(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), 5)
    assert e.shape == (2, 5, 4) and m.sum() == 6 and e[:, 3:].abs().sum() == 0


def test_bad_options_raise(setup):
    t2m, base, _ = setup
    with pytest.raises(ValueError):
        FastConfig(compile=True, compile_mode="reduce-overhead", cuda_graphs=True)
    with pytest.raises(ValueError):
        fast_system("base", t2m, base, FastConfig(dtype="fp8"))
    with pytest.raises(ValueError):
        FastTextToMusic.from_reference(t2m, base, sampler="heun", sigmas=[1.0, 0.0])


def test_checkpoint_blocks_gives_the_same_gradients(setup):
    """Activation checkpointing (training memory) changes no value: same loss and parameter gradients."""
    _, base, _ = setup
    import copy

    from presto_lib.diffusion.edm import dsm_loss

    m = copy.deepcopy(base).train()
    x = torch.randn(2, m.net.cfg.in_channels, 16, generator=torch.Generator().manual_seed(0))
    cond = {"text": torch.randn(2, 5, StubText.dim), "text_mask": torch.ones(2, 5, dtype=torch.bool),
            "bpm": torch.tensor([100.0, 0.0])}
    grads = []
    for flag in (False, True):
        m.net.checkpoint_blocks = flag
        m.zero_grad()
        torch.manual_seed(1)
        dsm_loss(m, x, cond).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    # a frozen pass (Presto-S's GAN term) whose backward runs after the parameters are unfrozen again
    from presto_lib.distill.presto_s import frozen

    x_grads = []
    for flag in (False, True):
        m.net.checkpoint_blocks = flag
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        with frozen(m):
            out = m(xi, torch.tensor([0.5, 3.0]), cond)
        out.square().mean().backward()
        assert all(p.grad is None or not p.grad.any() for p in m.parameters())
        x_grads.append(xi.grad)
    assert torch.allclose(x_grads[0], x_grads[1], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_compiled_fast_path_equals_reference(setup):
    """Regional torch.compile of the DiT blocks (inductor; ~20 s on one CPU core) changes no result."""
    t2m, _, ls = setup
    ref = reference_system("presto_ls", t2m, ls, latents=True)(CAPTIONS, BPMS, SEEDS)
    fast = fast_system("presto_ls", t2m, ls, FastConfig(dtype="fp32", compile=True))
    assert rel(fast.latents(CAPTIONS, BPMS, SEEDS), ref) < LAT_TOL


def test_flash_varlen_packing_matches_masked_attention(setup, monkeypatch):
    """The flash-attn varlen plan (host-built packing of real keys) with a plain-torch stand-in for the kernel."""
    import torch.nn.functional as F

    import presto_lib.inference.dit as fd

    def varlen(q, kv, cu_q, cu_k, max_q, max_k):     # flash_attn_varlen_kvpacked_func's contract, in torch
        out = []
        for i in range(len(cu_q) - 1):
            qi, kvi = q[cu_q[i]:cu_q[i + 1]], kv[cu_k[i]:cu_k[i + 1]]
            assert kvi.shape[0] <= max_k
            o = F.scaled_dot_product_attention(qi.transpose(0, 1), kvi[:, 0].transpose(0, 1), kvi[:, 1].transpose(0, 1))
            out.append(o.transpose(0, 1))
        return torch.cat(out)
    monkeypatch.setattr(fd, "_flash_varlen_kvpacked", varlen)
    monkeypatch.setattr(fd.FastDenoiser, "use_flash", lambda self, device: True)
    t2m, base, _ = setup
    ref = reference_system("base", t2m, base, latents=True)(CAPTIONS, BPMS, SEEDS)
    fast = fast_system("base", t2m, base, FastConfig(dtype="fp32", text_length=12))
    assert rel(fast.latents(CAPTIONS, BPMS, SEEDS), ref) < LAT_TOL


def test_cuda_graph_plumbing_reads_only_static_buffers(setup, monkeypatch):
    """The CUDA-graph path on CPU: capture stood in by "run fn on the static buffers again", so a replay sees new
    prompts / seeds only through the buffers it refreshes (text, BPM, noise, SDPA masks)."""
    import presto_lib.inference.pipeline as fp

    def fake_capture(fn, static):
        out = fn(*static)
        return (lambda: out.copy_(fn(*static))), out
    monkeypatch.setattr(fp, "capture_cuda_graph", fake_capture)
    t2m, base, ls = setup
    for name, model in (("base", base), ("presto_ls", ls)):
        plain = fast_system(name, t2m, model, FastConfig(dtype="fp32"))
        graphed = fast_system(name, t2m, model, FastConfig(dtype="fp32"))
        graphed.use_graphs = True
        for caps, bpms, seeds in ((CAPTIONS, BPMS, SEEDS), (CAPTIONS[::-1], [60.0, 0.0], [5, 6]),
                                  (["solo violin", "organ"], BPMS, SEEDS)):
            assert rel(graphed.generate(caps, bpms, seeds), plain.generate(caps, bpms, seeds)) < 1e-6
        assert {k[0] for k in graphed._graphs} == {"loop", "decode"}
