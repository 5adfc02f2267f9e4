"""Presto-L and ASE (sec. 3.3, Fig. 3): schedules, zero-init, which blocks run, the self-teacher's stop-gradient."""
import math

import pytest
import torch

from presto_lib.diffusion import edm
from presto_lib.diffusion.sampling import cfgpp_denoiser, sample_dpmpp_2s
from presto_lib.diffusion.score_model import build_score_model
from presto_lib.distill.layer_drop import (D3_SCHEDULE, PRESTO_LS_SCHEDULE, DropSchedule, bucket_shares,
                                           finetune_sigma, hidden_variance, inference_quantile, scale_schedule)
from presto_lib.distill.presto_l import (LayerDropModel, PrestoLConfig, PrestoLStep, load_layer_drop_model,
                                         presto_l_loss, save_layer_drop_model, variant_config, with_schedule)

torch.set_num_threads(1)
C, D_TEXT, DEPTH = 4, 8, 7          # D3 scaled to 7 blocks: [4, 3, 2, 1, 0]


def base_model(seed=0, randomise=True):
    """A tiny EDMPrecond(DiT); `randomise` replaces its zero-init layers so every block matters."""
    torch.manual_seed(seed)
    model = build_score_model(dict(in_channels=C, hidden_size=32, depth=DEPTH, num_heads=4, text_dim=D_TEXT))
    if randomise:
        dit = model.net
        with torch.no_grad():
            for mod in [b.adaLN_modulation[-1] for b in dit.blocks] + [dit.final_layer.adaLN_modulation[-1],
                                                                      dit.final_layer.linear]:
                mod.weight.normal_(0, 0.2)
                mod.bias.normal_(0, 0.2)
    return model.eval()


def batch(B=3, T=8, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, generator=g)
    cond = {"text": torch.randn(B, L, D_TEXT, generator=g), "text_mask": torch.ones(B, L, dtype=torch.bool),
            "bpm": torch.linspace(90, 150, B)}
    cond["text_mask"][0, 3:] = False
    return x, cond


def mid_sigmas(K=5):
    """One sigma in the middle of each quintile of the inference distribution (highest noise first)."""
    return [float(inference_quantile((k + 0.5) / K)) for k in range(K)]


class BlockCounter:
    """Counts calls of each DiT block (forward hooks)."""

    def __init__(self, dit):
        self.calls = [0] * dit.depth
        for i, b in enumerate(dit.blocks):
            b.register_forward_hook(lambda m, a, o, i=i: self.calls.__setitem__(i, self.calls[i] + 1))

    def take(self):
        out, self.calls[:] = list(self.calls), [0] * len(self.calls)
        return out


# ---- schedules ----

def test_scale_schedule_rounds_half_up_and_keeps_one_block():
    assert scale_schedule(D3_SCHEDULE, 28) == D3_SCHEDULE
    assert scale_schedule(D3_SCHEDULE, 8) == (4, 3, 2, 1, 0)           # 3.43 -> 3, 2.29 -> 2, 1.14 -> 1
    assert scale_schedule(D3_SCHEDULE, 6) == (3, 3, 2, 1, 0)           # 2.57 -> 3, 1.71 -> 2, 0.86 -> 1
    assert scale_schedule(D3_SCHEDULE, 4) == (2, 2, 1, 1, 0)           # 0.57 -> 1 (half up)
    assert scale_schedule(PRESTO_LS_SCHEDULE, 8) == (3, 2, 2, 0, 0)
    assert scale_schedule(D3_SCHEDULE, 2) == (1, 1, 1, 0, 0)           # 14/28 of 2 = 1: capped at depth - 1
    assert scale_schedule(D3_SCHEDULE, 1) == (0, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        scale_schedule([28, 0], 28)
    with pytest.raises(ValueError):
        DropSchedule.build("d4", 28)


def test_buckets_are_quintiles_of_the_inference_distribution():
    sch = DropSchedule.build("d3", 28)
    s = edm.sample_sigma_inference(200_000, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(sch.bucket(s), minlength=5).double() / len(s)
    assert torch.allclose(share, torch.full((5,), 0.2, dtype=torch.float64), atol=0.005)
    assert sch.n_drop(torch.tensor([1e4, 80.0, 1.0, 0.002, 1e-6])).tolist() == [14, 14, 8, 0, 0]
    b = sch.boundaries()
    assert (b.diff() < 0).all() and math.isclose(float(b[0]), 24.42, rel_tol=1e-3)   # sigma(u=0.2) of eq. 9


class BudgetRecorder(torch.nn.Module):
    """A stand-in LayerDropModel that records the budgets presto_l_loss asks for (x0_hat = x, h = 0)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule, self.n_drop = schedule, []

    def forward(self, x, sigma, cond, n_drop=None, return_hidden=False):
        if torch.is_grad_enabled():
            self.n_drop.append(torch.as_tensor(n_drop).clone())
        return x, x.new_zeros(x.shape[0], 1, 2)


@pytest.mark.parametrize("dist", [None, "inf", "stratified", "mix"])
def test_finetune_noise_gives_every_dropping_bucket_its_share(dist):
    """Each quintile's budget is used for 1/5 of the sampler's steps, so each gets >= 10% of the fine-tune samples."""
    cfg = PrestoLConfig() if dist is None else PrestoLConfig(sigma_dist=dist)     # None: the default
    sched = cfg.drop_schedule(DEPTH)                                              # drops [4, 3, 2, 1, 0]
    rec = BudgetRecorder(sched)
    torch.manual_seed(0)
    for _ in range(100):                  # the loss's own draw, through its own budget look-up
        presto_l_loss(rec, torch.zeros(20, C, 4), None, cfg)
    n_drop = torch.cat(rec.n_drop)
    share = torch.stack([(n_drop == n).double().mean() for n in sched.drops])
    assert share.min() >= 0.10, f"{cfg.sigma_dist}: bucket shares {share.tolist()}"
    if cfg.sigma_dist in ("inf", "stratified"):
        torch.testing.assert_close(share, torch.full((5,), 0.2, dtype=torch.float64), atol=0.03, rtol=0)


def test_lognormal_finetune_noise_starves_the_high_noise_buckets():
    """The old choice stays selectable; it gives the 14- and 12-drop quintiles ~0% and ~1.5% (issue: never tuned)."""
    sched = DropSchedule.build("d3", DEPTH)
    share = bucket_shares(sched, finetune_sigma("train", 200_000, generator=torch.Generator().manual_seed(0)))
    p = torch.distributions.Normal(edm.P_MEAN, edm.P_STD).cdf(sched.boundaries().log().float()).double()
    want = torch.cat([1 - p[:1], p[:-1] - p[1:], p[-1:]])       # analytic (boundaries decrease), highest noise first
    torch.testing.assert_close(share, want, atol=3e-3, rtol=0)
    assert share[0] < 0.001 and share[1] < 0.02
    strat = finetune_sigma("stratified", 10, generator=torch.Generator().manual_seed(1))
    assert bucket_shares(sched, strat).tolist() == [0.2] * 5                      # exactly 2 per bucket
    with pytest.raises(ValueError):
        finetune_sigma("uniform", 4)
    with pytest.raises(ValueError):
        PrestoLConfig(sigma_dist="uniform")


def test_blocks_ase_from_the_back_presto_l_before_the_last():
    ase, shifted = DropSchedule.build("d3", DEPTH, shift=False), DropSchedule.build("d3", DEPTH, shift=True)
    assert ase.drops == shifted.drops == (4, 3, 2, 1, 0)
    assert ase.blocks(3) == [0, 1, 2, 3] and shifted.blocks(3) == [0, 1, 2, 6]
    assert ase.blocks(0) == shifted.blocks(0) == list(range(DEPTH))
    mask = shifted.plan(torch.tensor([4, 0]))
    assert mask.tolist() == [[True, True, False, False, False, False, True], [True] * DEPTH]
    assert shifted.plan(torch.tensor([2, 2])) == [0, 1, 2, 3, 6]
    assert math.isclose(ase.expected_fraction_run(), 1 - 10 / 35)
    with pytest.raises(ValueError):
        ase.blocks(DEPTH)


# ---- which blocks run ----

@pytest.mark.parametrize("variant", ["ase", "presto_l"])
def test_blocks_run_match_the_schedule_in_each_quintile(variant):
    model = LayerDropModel(base_model(), variant_config(variant))
    count = BlockCounter(model.net.dit)
    x, cond = batch()
    for sigma, n in zip(mid_sigmas(), (4, 3, 2, 1, 0)):
        with torch.no_grad():
            model(x, sigma, cond)
        calls = count.take()
        assert sum(c > 0 for c in calls) == DEPTH - n
        assert calls[-1] == (1 if variant == "presto_l" or n == 0 else 0)


def test_final_block_always_runs_under_presto_l_never_under_ase_at_high_noise():
    x, cond = batch(B=2)
    uncond = {k: torch.zeros_like(v) for k, v in cond.items()}
    top = float(DropSchedule.build("d3", DEPTH).boundaries()[0])
    for variant in ("ase", "presto_l"):
        model = LayerDropModel(base_model(), variant_config(variant))
        count, seen = BlockCounter(model.net.dit), []

        def recorded(xx, s, c, **kw):
            out = model(xx, s, c, **kw)
            seen.append((float(s[0]), count.take()[-1]))
            return out
        sample_dpmpp_2s(cfgpp_denoiser(recorded, cond, uncond, 0.8), x * 80, edm.edm_sigmas(12), disable=True)
        high = [ran for s, ran in seen if s >= top]
        assert len(high) >= 2
        if variant == "presto_l":
            assert all(ran == 1 for _, ran in seen)
        else:
            assert not any(high)


def test_per_sample_budgets_match_samples_run_alone():
    model = LayerDropModel(base_model(), variant_config("presto_l"))
    x, cond = batch(B=3)
    sigma = torch.tensor(mid_sigmas())[[0, 2, 4]]
    with torch.no_grad():
        together = model(x, sigma, cond)
        alone = torch.cat([model(x[i:i + 1], sigma[i:i + 1], {k: v[i:i + 1] for k, v in cond.items()})
                           for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


# ---- zero-initialised budget conditioning ----

@pytest.mark.parametrize("variant", ["presto_l", "ase_budget"])
def test_at_init_equals_base_with_the_same_dropping(variant):
    base = base_model()
    model = LayerDropModel(base_model(), variant_config(variant))
    x, cond = batch()
    with torch.no_grad():
        for sigma, n in zip(mid_sigmas(), model.schedule.drops):
            ref = base(x, sigma, cond, blocks=model.schedule.blocks(n))
            assert torch.allclose(model(x, sigma, cond), ref, atol=1e-6)
            if n:
                assert not torch.allclose(base(x, sigma, cond), ref, atol=1e-3)   # dropping does change it


def test_budget_modules_start_at_zero_but_learn():
    model = LayerDropModel(base_model(), variant_config("presto_l"))
    x, cond = batch()
    loss, _ = presto_l_loss(model, x, cond, model.cfg, sigma=torch.tensor(mid_sigmas())[:3])
    loss.backward()
    for lin in (model.net.budget_emb.embed.mlp[2], model.net.out_adaln.modulation[-1]):
        assert torch.count_nonzero(lin.weight) == 0 and lin.weight.grad.abs().sum() > 0
    assert model.budget_embedding_norms() == [0.0] * 5
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert min(model.budget_embedding_norms()) > 0                      # every bucket's embedding has moved


# ---- losses ----

def test_without_self_teacher_the_loss_is_dsm_at_the_scheduled_budget():
    model = LayerDropModel(base_model(), variant_config("ase"))
    x, cond = batch()
    sigma, noise = torch.tensor([30.0, 2.0, 0.01]), torch.randn_like(x)
    loss, logs = presto_l_loss(model, x, cond, model.cfg, sigma=sigma, noise=noise)
    ref = edm.dsm_loss(model, x, cond, sigma=sigma, noise=noise)     # the model picks its budget from sigma
    assert torch.allclose(loss, ref) and math.isclose(logs["dropped"], (4 + 2 + 0) / 3)


def test_self_teacher_target_carries_no_gradient():
    model = LayerDropModel(base_model(), variant_config("ase_st"))
    x, cond = batch()
    sigma = torch.full((3,), 50.0)          # top quintile: ASE runs blocks 0-2, blocks 3-6 only in the target pass
    loss, logs = presto_l_loss(model, x, cond, model.cfg, sigma=sigma)
    loss.backward()
    assert logs["st"] > 1e-3
    for i, block in enumerate(model.net.dit.blocks):
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        assert (sum(float(g.abs().sum()) for g in grads) > 0) == (i < 3), f"block {i}"


def test_self_teacher_vanishes_at_full_budget():
    model = LayerDropModel(base_model(), variant_config("presto_l"))
    x, cond = batch()
    loss, logs = presto_l_loss(model, x, cond, model.cfg, sigma=torch.full((3,), 0.005))
    assert logs["st"] == 0.0 and logs["dropped"] == 0.0


# ---- training, checkpoints, Fig. 4 ----

def test_train_loop_moves_the_budget_modules_and_checkpoint_round_trips(tmp_path):
    from presto_lib.train import TrainConfig, train
    n, L = 6, 5
    ds = [{"latents": torch.randn(C, 8), "text": torch.randn(L, D_TEXT), "text_mask": torch.ones(L, dtype=torch.bool),
           "bpm": torch.tensor(120.0)} for _ in range(n)]
    model = LayerDropModel(base_model(), variant_config("presto_l", sigma_dist="inf"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctx = train(PrestoLStep(model.cfg), modules={"model": model}, optimizers={"model": opt}, dataset=ds,
                cfg=TrainConfig(run_dir=str(tmp_path / "run"), max_steps=3, batch_size=3, log_every=1, amp="none"))
    assert ctx.step == 3 and torch.count_nonzero(model.net.out_adaln.modulation[-1].weight) > 0
    save_layer_drop_model(tmp_path / "ckpt", model, {"latent_frames": 8})
    loaded, config = load_layer_drop_model(tmp_path / "ckpt")
    x, cond = batch()
    with torch.no_grad():
        assert torch.equal(loaded(x, 3.0, cond), model.eval()(x, 3.0, cond))
    assert config["latent_frames"] == 8 and config["presto_l"]["shift"] is True
    assert with_schedule(loaded.cfg, "presto_ls").drop_schedule(DEPTH).drops == (3, 2, 2, 0, 0)


def test_hidden_variance_is_flat_through_identity_blocks():
    x, cond = batch()
    flat = hidden_variance(base_model(randomise=False), x, cond, [0.1, 10.0])   # AdaLN-zero: every block = identity
    assert flat.shape == (2, DEPTH) and torch.allclose(flat, flat[:, :1].expand(-1, DEPTH))
    grown = hidden_variance(base_model(), x, cond, [0.1, 10.0])
    assert not torch.allclose(grown, grown[:, :1].expand(-1, DEPTH))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        variant_config("ase_plus")
    with pytest.raises(ValueError):
        variant_config("ase", bogus=1)
    with pytest.raises(ValueError):
        variant_config("ase", sigma_dist="uniform")
    model = LayerDropModel(base_model(), variant_config("presto_l"))
    x, cond = batch()
    with pytest.raises(ValueError):
        model(x, 1.0, cond, n_drop=torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        model(x, 1.0, cond, n_drop=DEPTH)


# ---- the stage: Table 2 samples reused as the curve folder ----

class StubT2M:
    """Stands in for TextToMusic: audio determined by (seed, steps) alone, as the real pipeline's per-sample seeds."""
    sample_rate, nfe = 8000, 0

    def generate(self, captions, bpms, seeds, steps):
        self.nfe = 2 * steps - 1
        return torch.stack([torch.full((1, 64), s / 100 + steps / 1000) for s in seeds])


def test_curve_folder_is_the_head_of_the_table_folder(tmp_path):
    import pandas as pd
    from presto_lib.audio import load_audio
    from presto_lib.stages.presto_l import generate_all
    prompts = [{"caption": f"tune {i}", "bpm": 90.0 + i} for i in range(5)]
    runs = generate_all(StubT2M(), prompts[:4], [2, 4], tmp_path / "run", (prompts, 4, tmp_path / "table"), 2, 7)
    direct = generate_all(StubT2M(), prompts[:4], [4], tmp_path / "direct", None, 2, 7)
    assert runs["curves"][4] == {"seconds": 0.0, "nfe": 7} and runs["table"]["prompts"] == 5
    odd = generate_all(StubT2M(), prompts[:3], [4], tmp_path / "odd", (prompts, 4, tmp_path / "t2"), 2, 7)
    assert odd["curves"][4]["seconds"] > 0           # 3 prompts in batches of 2: the batches differ, so sample
    assert direct["curves"][4]["seconds"] > 0 and runs["curves"][2]["nfe"] == 3
    reused, fresh = tmp_path / "run" / "steps_4", tmp_path / "direct" / "steps_4"
    assert pd.read_csv(reused / "samples.csv").equals(pd.read_csv(fresh / "samples.csv"))
    for f in pd.read_csv(fresh / "samples.csv")["path"]:
        assert (load_audio(reused / f)[0] == load_audio(fresh / f)[0]).all()
    assert len(pd.read_csv(tmp_path / "table" / "samples.csv")) == 5
