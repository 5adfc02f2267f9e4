"""Presto-LS (sec. 3.4) and the failing combinations of A.4: who starts from which weights, which blocks run, Fig. 8 logs."""
import math

import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from presto_lib.diffusion.edm import EDMPrecond
from presto_lib.diffusion.score_model import build_score_model
from presto_lib.distill.layer_drop import PRESTO_LS_SCHEDULE, inference_quantile, scale_schedule
from presto_lib.distill.presto_l import LayerDropModel, variant_config
from presto_lib.distill.presto_ls import (FIG8_METRICS, SETUPS, LayerDropScore, LayerLosses, build_setup, dit_of,
                                          fig8_curves, fig8_summary, reduced_layer_config)
from presto_lib.distill.discriminator import make_head
from presto_lib.distill.generator import PrestoSStep
from presto_lib.distill.presto_l import presto_l_loss
from presto_lib.distill.presto_s import FakeScore, PrestoSConfig, load_fake_score, optimizer_update, save_fake_score
from presto_lib.train import TrainConfig, train

torch.set_num_threads(1)
C, D_TEXT, DEPTH, HIDDEN = 4, 8, 7, 32
REDUCED = scale_schedule(PRESTO_LS_SCHEDULE, DEPTH)          # [12, 8, 8, 0, 0] of 28 -> (3, 2, 2, 0, 0) of 7


def score_model(seed):
    """A tiny EDMPrecond(DiT) whose zero-init layers are randomised, so every block matters."""
    torch.manual_seed(seed)
    m = build_score_model(dict(in_channels=C, hidden_size=HIDDEN, depth=DEPTH, num_heads=4, text_dim=D_TEXT))
    with torch.no_grad():
        for mod in [b.adaLN_modulation[-1] for b in m.net.blocks] + [m.net.final_layer.linear]:
            mod.weight.normal_(0, 0.2)
            mod.bias.normal_(0, 0.2)
    return m.eval()


def presto_l_model(seed=1):
    """A stand-in for a Presto-L fine-tune with the reduced schedule: other DiT weights, trained budget modules."""
    m = LayerDropModel(score_model(seed), reduced_layer_config(variant_config("presto_l")))
    with torch.no_grad():
        for p in (*m.net.budget_emb.parameters(), *m.net.out_adaln.parameters()):
            p.normal_(0, 0.05)
    return m.eval()


def presto_s_fake(seed=3):
    """A stand-in for a Presto-S run's psi: a trained fake score model and discriminator head."""
    torch.manual_seed(seed)
    head = make_head("presto", HIDDEN, 16)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.1)
    return FakeScore(score_model(seed), head)


@pytest.fixture(scope="module")
def sources():
    return {"base": score_model(0), "presto_l": presto_l_model(1), "presto_s": score_model(2),
            "presto_s_fake": presto_s_fake(3)}


def batch(B=3, T=8, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    cond = {"text": torch.randn(B, L, D_TEXT, generator=g), "text_mask": torch.ones(B, L, dtype=torch.bool),
            "bpm": torch.linspace(90, 150, B)}
    return torch.randn(B, C, T, generator=g), cond


def mid_sigmas():
    return [float(inference_quantile((k + 0.5) / 5)) for k in range(5)]


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def dit_state(model):
    return dit_of(model).state_dict()


def same_dit(a, b):
    sa, sb = dit_state(a), dit_state(b)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def runs(model, sigma):
    """Indices of the DiT blocks a forward at `sigma` runs (forward hooks)."""
    seen, dit = [], dit_of(model)
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: seen.append(i)) for i, b in enumerate(dit.blocks)]
    x, cond = batch()
    with torch.no_grad():
        model(x, sigma, cond)
    for h in hooks:
        h.remove()
    return sorted(set(seen))


def build(name, sources, **kw):
    torch.manual_seed(0)                 # the discriminator head's init
    kw.setdefault("s_cfg", PrestoSConfig(fake_updates=2))
    return build_setup(name, sources["base"], presto_l=sources["presto_l"], presto_s=sources["presto_s"],
                       presto_s_fake=sources["presto_s_fake"], **kw)


# ---- Presto-LS: full-capacity score models, reduced-schedule generator ----

def test_presto_ls_score_models_are_the_base_weights_not_the_layer_dropped_ones(sources):
    ps = build("presto_ls", sources)
    for score in (ps.real, ps.fake.score):
        assert isinstance(score, EDMPrecond) and not isinstance(score, LayerDropModel)
        assert same_weights(score, sources["base"])
        assert not same_dit(score, sources["presto_l"])
        assert runs(score, mid_sigmas()[0]) == list(range(DEPTH))          # no block dropped at any noise
    assert not any(p.requires_grad for p in ps.real.parameters())
    fake_ids = {id(p) for p in ps.fake.parameters()} | {id(p) for p in ps.real.parameters()}
    assert not fake_ids & {id(p) for p in ps.G.parameters()}                # copies, not shared weights
    assert not {id(p) for p in ps.G.parameters()} & {id(p) for p in sources["presto_l"].parameters()}


def test_presto_ls_generator_is_the_presto_l_model_running_the_reduced_schedule(sources):
    G = build("presto_ls", sources).G
    assert isinstance(G, LayerDropModel) and same_weights(G, sources["presto_l"])
    assert G.schedule.drops == REDUCED == (3, 2, 2, 0, 0) and G.schedule.shift
    assert G.net.budget_emb is not None and G.net.out_adaln is not None           # budget conditioning kept
    assert all(p.requires_grad for p in G.net.budget_emb.parameters())
    for sigma, n in zip(mid_sigmas(), REDUCED):
        assert runs(G, sigma) == ([*range(DEPTH - 1 - n), DEPTH - 1] if n else list(range(DEPTH)))
    x, cond = batch()
    with torch.no_grad():
        assert torch.equal(G(x, 30.0, cond), sources["presto_l"](x, 30.0, cond))


# ---- A.4: each failing setup differs from Presto-LS only where the paper says ----

def test_ls_lfake_differs_only_in_the_score_models(sources):
    ls, lf = build("presto_ls", sources), build("ls_lfake", sources)
    assert same_weights(lf.G, ls.G) and lf.G.schedule == ls.G.schedule and lf.cfg == ls.cfg
    assert isinstance(lf.real, LayerDropModel) and same_weights(lf.real, sources["presto_l"])
    assert isinstance(lf.fake.score, LayerDropScore) and same_weights(lf.fake.score.model, sources["presto_l"])
    for score in (lf.real, lf.fake.score):
        assert runs(score, mid_sigmas()[0]) == [*range(DEPTH - 1 - REDUCED[0]), DEPTH - 1]   # layer-dropped
    assert same_weights(lf.fake.head, ls.fake.head)                           # same head init (seeded below)


@pytest.mark.parametrize("name, start", [("step_then_layer", "presto_s"), ("step_and_layer", "base")])
def test_layer_learning_setups_differ_in_the_generator_start_and_losses(sources, name, start):
    ls, alt = build("presto_ls", sources), build(name, sources)
    assert same_weights(alt.real, ls.real)                                                   # full capacity
    if name == "step_and_layer":
        assert same_weights(alt.fake.score, ls.fake.score)
    else:   # A.4 "continue distillation": psi = (mu_psi, D_psi) carries on from the Presto-S run
        assert same_weights(alt.fake, sources["presto_s_fake"]) and not same_weights(alt.fake.score, ls.fake.score)
        assert not {id(p) for p in alt.fake.parameters()} & {id(p) for p in sources["presto_s_fake"].parameters()}
        restart = build(name, sources, fake="scores")                                  # the earlier variant
        assert same_weights(restart.fake.score, ls.fake.score) and restart.generator_extra is not None
    assert isinstance(alt.generator_extra, LayerLosses) and ls.generator_extra is None
    assert build(name, sources, layer_losses=False).generator_extra is None
    G = alt.G
    assert isinstance(G, LayerDropModel) and G.schedule == ls.G.schedule                    # reduced schedule
    assert same_dit(G, sources[start]) and not same_dit(G, sources["presto_l"])
    for lin in (G.net.budget_emb.embed.mlp[2], G.net.out_adaln.modulation[-1]):          # learnt from scratch:
        assert torch.count_nonzero(lin.weight) == 0                                     # zero-init budget


def test_presto_s_setup_has_no_layer_dropping(sources):
    ps = build("presto_s", sources)
    assert isinstance(ps.G, EDMPrecond) and same_weights(ps.G, sources["base"])
    assert runs(ps.G, mid_sigmas()[0]) == list(range(DEPTH))
    assert same_weights(ps.fake.score, sources["base"]) and same_weights(ps.real, sources["base"])


def test_step_then_layer_continues_a_saved_presto_s_psi(tmp_path, sources):
    save_fake_score(tmp_path / "fake", sources["presto_s_fake"], {"run": "ls_ittt"})
    fake, cfg = load_fake_score(tmp_path / "fake")
    assert same_weights(fake, sources["presto_s_fake"]) and cfg["head"] == {"kind": "presto", "channels": 16,
                                                                            "n_down": 2} and cfg["run"] == "ls_ittt"
    ps = build_setup("step_then_layer", sources["base"], presto_s=sources["presto_s"], presto_s_fake=fake)
    assert same_weights(ps.fake, sources["presto_s_fake"])


def test_setups_table_matches_appendix_a4():
    assert {k: (s.generator, s.drop, s.scores, s.fake, s.layer_losses) for k, s in SETUPS.items()} == {
        "presto_s": ("base", False, "base", "scores", False), "presto_ls": ("presto_l", True, "base", "scores", False),
        "ls_lfake": ("presto_l", True, "presto_l", "scores", False),
        "step_then_layer": ("presto_s", True, "base", "presto_s", True),
        "step_and_layer": ("base", True, "base", "scores", True)}


def test_missing_or_unknown_inputs_are_clear_errors(sources):
    with pytest.raises(ValueError, match="presto_l"):
        build_setup("presto_ls", sources["base"])
    with pytest.raises(ValueError, match="presto_s"):
        build_setup("step_then_layer", sources["base"], presto_l=sources["presto_l"])
    with pytest.raises(ValueError, match="unknown setup"):
        build_setup("layer_then_step", sources["base"])
    with pytest.raises(ValueError, match="LayerDropModel"):
        build_setup("presto_ls", sources["base"], presto_l=sources["base"])
    with pytest.raises(ValueError, match="presto_s_fake"):
        build_setup("step_then_layer", sources["base"], presto_s=sources["presto_s"])


# ---- A.4's layer losses: behaviour ----

def test_generator_turn_adds_weighted_presto_l_losses_to_algorithm_1(sources):
    """loss_generator = L_DMD + nu1 L_GAN + layer_weight (L_DSM + L_st), the last on the generator's own forward."""
    x, cond = batch(B=4)
    for w in (0.0, 2.5):
        ps = build("step_and_layer", sources, layer_weight=w)
        torch.manual_seed(0)
        logs = ps.step(x, cond, ps.cfg.fake_updates, lambda loss, name: None)        # a generator turn
        want = logs["loss_dmd"] + ps.cfg.nu1 * logs["loss_gan_g"] + w * logs["layer_loss"]
        assert logs["generator_turn"] == 1.0 and math.isclose(logs["loss_generator"], want, rel_tol=1e-5)
        assert logs["layer_dsm"] > 0 and logs["layer_st"] >= 0 and logs["layer_dropped"] >= 0


def test_layer_losses_teach_the_generator_its_dropped_budgets(sources):
    """Joint step-and-layer: with Presto-L's losses the generator's layer-dropped DSM falls; Algorithm 1 alone
    (the earlier variant) does not train it. Measured on held-out clips at the 3- and 2-drop budgets."""
    g = torch.Generator().manual_seed(7)
    x_eval, cond_eval = batch(B=6, seed=5)
    sigma = torch.tensor([float(inference_quantile(u)) for u in (0.05, 0.1, 0.15, 0.25, 0.3, 0.35)])
    noise = torch.randn(x_eval.shape, generator=g)
    x_train, cond_train = batch(B=4, seed=1)
    l_cfg = reduced_layer_config(variant_config("presto_l"))
    scores = {}
    for on in (True, False):
        ps = build("step_and_layer", sources, layer_losses=on, layer_weight=4.0, l_cfg=l_cfg,
                   s_cfg=PrestoSConfig(fake_updates=1, nu1=1e-3))
        opts = {k: torch.optim.Adam(m.parameters(), lr=2e-3) for k, m in ps.modules().items()}
        dsm = lambda: float(presto_l_loss(ps.G, x_eval, cond_eval, l_cfg, sigma=sigma, noise=noise)[1]["dsm"])
        torch.manual_seed(0)
        start = dsm()
        for it in range(24):                                                    # 12 generator updates
            ps.step(x_train, cond_train, it, optimizer_update(opts))
        scores[on] = (start, dsm())
    (s0, with_l), (_, without) = scores[True], scores[False]
    assert with_l < 0.95 * s0 and with_l < 0.7 * without, scores


# ---- the layer-dropped fake score model's features ----

def test_layer_drop_score_features_follow_the_per_sample_budget(sources):
    model = sources["presto_l"]
    score = LayerDropScore(model)
    x, cond = batch(B=3)
    sigma = torch.tensor(mid_sigmas())[[0, 2, 4]]                            # budgets 3, 2, 0 of 7
    with torch.no_grad():
        x0, feats = score(x, sigma, cond, return_features=True)
        assert torch.allclose(x0, model(x, sigma, cond), atol=1e-5)
        assert len(feats) == DEPTH and feats[0].shape == (3, 8, HIDDEN)
        # sample 0 drops blocks 3, 4, 5 (shifted): their features are block 2's output passed through
        assert torch.equal(feats[5][0], feats[2][0]) and not torch.equal(feats[6][0], feats[5][0])
        assert not torch.equal(feats[3][2], feats[2][2])                      # sample 2 runs every block


# ---- the training loop: every setup runs Algorithm 1 and logs Fig. 8 ----

class Latents(Dataset):
    def __init__(self, n=8, T=8, L=5):
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n, C, T, generator=g) * 0.5
        self.text = torch.randn(n, L, D_TEXT, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"latents": self.x[i], "text": self.text[i], "text_mask": torch.ones(5, dtype=torch.bool),
                "bpm": torch.tensor(120.0)}


@pytest.mark.parametrize("name", list(SETUPS))
def test_every_setup_trains_in_the_loop_and_logs_fig8(tmp_path, sources, name):
    torch.manual_seed(0)
    ps = build(name, sources, head_channels=16)
    real0 = {k: v.clone() for k, v in ps.real.state_dict().items()}
    G0 = {k: v.clone() for k, v in ps.G.state_dict().items()}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in ps.modules().items()}
    cfg = TrainConfig(run_dir=str(tmp_path), max_steps=6, batch_size=4, log_every=1, ckpt_every=100, ema_decay=0.9)
    ctx = train(PrestoSStep(ps), modules=ps.modules(), optimizers=opts, dataset=Latents(), cfg=cfg,
                ema=["generator"], frozen={"real": ps.real})
    assert all(torch.equal(v, real0[k]) for k, v in ps.real.state_dict().items())      # mu_real frozen
    assert any(not torch.equal(v, G0[k]) for k, v in ps.G.state_dict().items())         # G_phi updated
    curves = fig8_curves(tmp_path / "log.csv")
    assert curves["update"].tolist() == [1, 2] and curves["step"].tolist() == [3, 6]    # turns 2 and 5
    for key in FIG8_METRICS:
        assert curves[key].notna().all() and curves[key].map(math.isfinite).all()
    assert curves["d_real_acc"].between(0, 1).all()
    assert ctx.ema["generator"] is not ps.G


# ---- Fig. 8 bookkeeping ----

def test_fig8_curves_pairs_each_generator_turn_with_the_fake_turns_before_it():
    log = pd.DataFrame({"step": range(1, 9), "generator_turn": [0, 0, 1, 0, 0, 1, 0, 0],
                        "loss_gan_d": [1.0, 3.0, None, 5.0, 7.0, None, 9.0, 9.0],
                        "d_real_acc": [0.0, 1.0, None, 1.0, 1.0, None, 0.5, 0.5],
                        "loss_gan_g": [None, None, 0.2, None, None, 0.4, None, None],
                        "dmd_grad_rms": [None, None, 1.0, None, None, 2.0, None, None]})
    c = fig8_curves(log)
    assert c["update"].tolist() == [1, 2] and c["step"].tolist() == [3, 6]
    assert c["loss_gan_d"].tolist() == [2.0, 6.0] and c["d_real_acc"].tolist() == [0.5, 1.0]
    assert c["loss_gan_g"].tolist() == [0.2, 0.4]
    s = fig8_summary({"presto_ls": c}, last=2).iloc[0]
    assert s["label"] == "Presto-LS" and math.isclose(s["dmd_grad_rms"], 1.5) and math.isclose(s["dmd_grad_std"], 0.5)
    with pytest.raises(ValueError, match="log_every=1"):
        fig8_curves(log.assign(generator_turn=0.5))



