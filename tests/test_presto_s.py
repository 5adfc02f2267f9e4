"""Presto-S (Algorithm 1): the 2-D toy distils, the 5:1 turn ratio, frozen teacher, DMD-GAN path, gradients."""
import math

import pytest
import torch

from presto_lib.diffusion import edm
from presto_lib.diffusion.score_model import null_like
from presto_lib.distill.discriminator import (DiscriminatorHead, DMD2Head, discriminator_gan_loss, generator_gan_loss,
                                              make_head, real_accuracy)
from presto_lib.distill.optim import PlayerOptimConfig, build_optimizers, loop_steps
from presto_lib.distill.presto_s import (FakeScore, PrestoS, PrestoSConfig, discrete_runs, native_budget,
                                         optimizer_update, pingpong_sigmas, sample_generator, snap_sigmas)
from presto_lib.distill.toy import (ExactScore, distill_toy, make_toy_model, mmd_rbf, ring_mixture,
                                    sample_points, toy_presto_s, train_toy_base)
from weights import changed, snapshot

torch.set_num_threads(1)


def _players(cfg=None, seed=0, hidden=16):
    """Tiny untrained toy players: real = a third toy net (a module with weights that could change)."""
    torch.manual_seed(seed)
    base = make_toy_model(hidden, 2)
    state = base.state_dict()
    mk = lambda: make_toy_model(hidden, 2)
    G, score, real = mk(), mk(), mk()
    for m in (G, score, real):
        m.load_state_dict(state)
    return PrestoS(G, FakeScore(score, DiscriminatorHead(hidden, n_down=0)), real, cfg or PrestoSConfig(cfg_w=1.0))


# ---- the toy distils ---------------------------------------------------------------------------

def test_toy_one_step_generator_mmd_falls():
    gm = ring_mixture()
    torch.manual_seed(0)
    base = train_toy_base(gm, steps=300, batch=256, hidden=64)
    ps = toy_presto_s(base, gm, PrestoSConfig(cfg_w=1.0))
    torch.manual_seed(1)
    ref, z = sample_points(gm, 1000), torch.randn(1000, 2, 1)
    before = mmd_rbf(ps.sample(z, None, steps=1), ref)
    distill_toy(ps, gm, iters=480, batch=128, lr=1e-3)
    after = mmd_rbf(ps.sample(z, None, steps=1), ref)
    floor = mmd_rbf(sample_points(gm, 1000), ref)
    assert before > 1.0                      # the base model's 1-step output collapses towards the mean
    assert after < 0.15 * before, (before, after)
    assert after > floor                     # sanity: not better than fresh data


# ---- Algorithm 1's bookkeeping ---------------------------------------------------------------------

def test_five_fake_updates_per_generator_update_and_each_turn_touches_one_player():
    ps = _players()
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-2) for k, m in ps.modules().items()}
    plain, calls = optimizer_update(opts), []
    update = lambda loss, name: (calls.append(name), plain(loss, name))
    gm = ring_mixture()
    for it in range(18):
        g0, f0 = snapshot(ps.G), snapshot(ps.fake)
        ps.step(sample_points(gm, 8), None, it, update)
        if calls[-1] == "generator":
            assert changed(g0, ps.G) and not changed(f0, ps.fake)
        else:
            assert changed(f0, ps.fake) and not changed(g0, ps.G)
    assert calls == (["fake"] * 5 + ["generator"]) * 3


def test_real_score_model_never_changes():
    ps = _players(PrestoSConfig(cfg_w=1.0))
    real0 = snapshot(ps.real)
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-2) for k, m in ps.modules().items()}
    gm = ring_mixture()
    for it in range(12):
        ps.step(sample_points(gm, 8), None, it, optimizer_update(opts))
    assert not changed(real0, ps.real)
    assert all(not p.requires_grad and p.grad is None for p in ps.real.parameters())
    assert not ps.real.training


def test_dmd_gradient_reaches_only_the_generator_and_equals_eq5():
    ps = _players(PrestoSConfig(cfg_w=1.0, use_gan=False))
    x_real = sample_points(ring_mixture(), 6)
    x_gen = ps.generate(x_real, None)
    x_gen.retain_grad()
    torch.manual_seed(5)
    loss, _ = ps.dmd_loss(x_gen, None)
    loss.backward()
    assert all(p.grad is not None for p in ps.G.parameters())
    assert all(p.grad is None for p in ps.fake.parameters())
    assert all(p.grad is None for p in ps.real.parameters())
    # independent recomputation of eq. 5 with DMD2's normalisation, same noise draws
    torch.manual_seed(5)
    with torch.no_grad():
        sigma = edm.sample_sigma("train", 6)
        x_t = x_gen + sigma[:, None, None] * torch.randn_like(x_gen)
        mu_f, mu_r = ps.fake.score(x_t, sigma), ps.real(x_t, sigma)
        g = (mu_f - mu_r) / (x_gen - mu_r).abs().mean((1, 2), keepdim=True)
    torch.testing.assert_close(x_gen.grad * x_gen.numel(), g, rtol=1e-4, atol=1e-6)


def test_gan_only_flag_runs_the_dmd_gan_path():
    ps = _players(PrestoSConfig(cfg_w=1.0, use_dmd=False))
    seen = []
    ps.real = lambda *a, **k: seen.append("real") or a[0]          # the teacher must never be queried
    ps.dmd_loss = lambda *a, **k: pytest.fail("DMD term ran in the DMD-GAN baseline")
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in ps.modules().items()}
    gm = ring_mixture()
    logs = [ps.step(sample_points(gm, 8), None, it, optimizer_update(opts)) for it in range(6)]
    gen = [l for l in logs if l["generator_turn"] == 1.0]
    assert len(gen) == 1 and "loss_gan_g" in gen[0] and "loss_dmd" not in gen[0]
    assert math.isclose(gen[0]["loss_generator"], gen[0]["loss_gan_g"], rel_tol=1e-5)
    assert not seen
    with pytest.raises(ValueError):
        PrestoSConfig(use_dmd=False, use_gan=False)


def test_teacher_uses_plain_cfg_with_the_null_condition():
    calls = []

    def real(x, sigma, cond):
        calls.append({k: v.clone() for k, v in cond.items()})
        return torch.where(cond["text_mask"].any(1)[:, None, None], torch.ones_like(x), torch.zeros_like(x))

    ps = PrestoS(make_toy_model(8, 1), FakeScore(make_toy_model(8, 1), DiscriminatorHead(8, n_down=0)), real,
                 PrestoSConfig(cfg_w=4.5))
    cond = {"text": torch.randn(3, 5, 4), "text_mask": torch.ones(3, 5, dtype=torch.bool),
            "bpm": torch.full((3,), 120.0)}
    out = ps.real_denoise(torch.zeros(3, 2, 1), torch.ones(3), cond)
    torch.testing.assert_close(out, torch.full_like(out, 4.5))           # mu_u + w (mu_c - mu_u) = 0 + 4.5 (1 - 0)
    null = null_like(cond)
    assert not null["text_mask"].any() and (null["bpm"] <= 0).all() and not null["text"].any()


# ---- Algorithm 1's labels and noise plumbing, against oracles ----------------------------------------

class OracleFake(FakeScore):
    """psi whose logits are the mean of its input (so real ~ +3, generated ~ -3) and that records every call."""

    def __init__(self):
        super().__init__(make_toy_model(8, 1), DiscriminatorHead(8, n_down=0))
        self.calls = []

    def forward(self, x, sigma, cond=None, with_logits=False):
        self.calls.append((sigma.detach().clone(), with_logits))
        x0 = x * 0.5
        return (x0, x.float().mean((1, 2))[:, None]) if with_logits else x0


class RecordingG(torch.nn.Module):
    """A generator that records its input noise levels and returns a constant -3 (with a gradient path)."""

    def __init__(self):
        super().__init__()
        self.w, self.sigmas = torch.nn.Parameter(torch.zeros(())), []

    def forward(self, x, sigma, cond=None):
        self.sigmas.append(sigma.detach().clone())
        return torch.full_like(x, -3.0) + self.w


@pytest.mark.parametrize("gan", ["ls", "ns"])
def test_discriminator_calls_real_real_and_generated_fake(gan):
    """Line 18: D(x_real) -> 1 and D(x_gen) -> 0. With logits +3 (real) and -3 (generated) the loss is analytic."""
    torch.manual_seed(0)
    fake = OracleFake()
    ps = PrestoS(RecordingG(), fake, lambda x, s, c: x, PrestoSConfig(gan_loss=gan, p_gan="train", nu2=1.0))
    x_real, x_gen = torch.full((16, 2, 256), 3.0), torch.full((16, 2, 256), -3.0)
    _, logs = ps.fake_loss(x_real, None, x_gen)
    r, f = torch.full((16, 1), 3.0), torch.full((16, 1), -3.0)
    want = float(discriminator_gan_loss(r, f, gan))      # LS: 9 + 4 = 13 (swapped labels: 16 + 9 = 25)
    assert math.isclose(logs["loss_gan_d"], want, rel_tol=0.05), (logs["loss_gan_d"], want)
    assert logs["d_real_acc"] == 1.0
    _, glogs = ps.generator_loss(x_gen, None)             # line 10: the generator wants D(x_gen) -> real
    assert math.isclose(glogs["loss_gan_g"], float(generator_gan_loss(f, gan)), rel_tol=0.05)


def _ks(kind, sigma, cfg):
    """KS p-value of noise levels against p(sigma^train) (log-normal) or p(sigma^inf) (eq. 9, u ~ U[0, 1])."""
    from scipy.stats import kstest
    s = sigma.double()
    if kind == "train":
        return kstest(s.log().numpy(), "norm", args=(cfg.p_mean, cfg.p_std)).pvalue
    hi, lo = cfg.sigma_max ** (1 / cfg.rho), cfg.sigma_min ** (1 / cfg.rho)
    return kstest(((s ** (1 / cfg.rho) - hi) / (lo - hi)).numpy(), "uniform").pvalue


@pytest.mark.parametrize("dists", [("inf", "train", "inf", "train"), ("train", "inf", "train", "inf")])
def test_each_noise_site_draws_from_its_own_distribution(dists):
    """Lines 1, 5, 13 and 8/16 draw from p_gen, p_DMD, p_DSM and p_GAN respectively (sec. 3.2.2)."""
    cfg = PrestoSConfig(**dict(zip(("p_gen", "p_dmd", "p_dsm", "p_gan"), dists)), dmd_normalize=False)
    torch.manual_seed(0)
    G, fake = RecordingG(), OracleFake()
    ps = PrestoS(G, fake, lambda x, s, c: x, cfg)
    x_real, B = torch.randn(100, 2, 4), 100
    for it in range(12):                                  # turns 5 and 11 are the generator's
        ps.step(x_real, None, it, lambda loss, name: None)
    sites = {"line 1": [torch.cat(G.sigmas)], "line 5": [], "line 13": [], "line 8": [], "line 16": []}
    for sigma, logits in fake.calls:
        if not logits:
            sites["line 5"].append(sigma)                # generator turn, mu_psi only
        elif len(sigma) == B:
            sites["line 8"].append(sigma)                # generator turn, D_psi
        else:
            sites["line 13"].append(sigma[:B])           # fake turn: one forward over lines 13 and 16
            sites["line 16"].append(sigma[B:])
    want = dict(zip(("line 1", "line 5", "line 13", "line 8"), dists), **{"line 16": dists[3]})
    for site, kind in want.items():
        s = torch.cat(sites[site])
        other = "inf" if kind == "train" else "train"
        assert len(s) >= 200 and _ks(kind, s, cfg) > 1e-3 and _ks(other, s, cfg) < 1e-6, site


# ---- noise levels and sampling -------------------------------------------------------------------

def test_generator_inputs_continuous_or_discrete():
    ps = _players(PrestoSConfig(p_gen="inf"))
    s = ps.gen_sigma(4000, torch.device("cpu"))
    assert len(torch.unique(s)) == 4000 and s.min() >= edm.SIGMA_MIN * 0.999 and s.max() <= edm.SIGMA_MAX * 1.001
    ps = _players(PrestoSConfig(discrete_levels=4))
    s = ps.gen_sigma(4000, torch.device("cpu"))
    levels = pingpong_sigmas(4)[:-1]
    assert set(torch.unique(s).tolist()) == set(levels.tolist())


def test_one_discrete_model_per_step_budget_samples_on_its_own_levels():
    """Sec. 4.2's k-step discrete model is trained on the k levels its k-step schedule then visits, unsnapped."""
    runs = discrete_runs((1, 2, 4))
    assert runs == {"discrete_1": {"discrete_levels": 1}, "discrete_2": {"discrete_levels": 2},
                    "discrete_4": {"discrete_levels": 4}}
    for name, over in runs.items():
        k = over["discrete_levels"]
        cfg = PrestoSConfig(**over)
        seen = []
        G = lambda x, s, c: (seen.append(float(s[0])), torch.zeros_like(x))[1]
        sample_generator(G, torch.randn(1, 2, 3), None, k, cfg)
        trained = set(_players(cfg).gen_sigma(500, torch.device("cpu")).tolist())
        assert native_budget(cfg, k) and seen == pingpong_sigmas(k)[:-1].tolist() and set(seen) == trained
    assert not native_budget(PrestoSConfig(discrete_levels=4), 2) and native_budget(PrestoSConfig(), 2)
    with pytest.raises(ValueError):
        discrete_runs((0,))


def test_pingpong_schedule_and_snapping():
    s = pingpong_sigmas(2)
    k = edm.edm_sigmas(3)
    torch.testing.assert_close(s, torch.stack([k[0], k[1], k.new_zeros(())]))
    assert torch.equal(pingpong_sigmas(1), torch.tensor([80.0, 0.0]))
    with pytest.raises(ValueError):
        pingpong_sigmas(0)
    snapped = snap_sigmas(pingpong_sigmas(3), pingpong_sigmas(4)[:-1])
    assert set(snapped[:-1].tolist()) <= set(pingpong_sigmas(4)[:-1].tolist()) and snapped[-1] == 0


def test_sample_generator_is_pingpong_over_the_schedule():
    seen = []
    G = lambda x, s, c: (seen.append(float(s[0])), torch.zeros_like(x))[1]
    cfg = PrestoSConfig(rho=7.0)
    out = sample_generator(G, torch.randn(2, 3, 4), None, 3, cfg, rho=2.0)
    torch.testing.assert_close(torch.tensor(seen), pingpong_sigmas(3, rho=2.0)[:-1])
    assert torch.equal(out, torch.zeros(2, 3, 4))                       # the last step returns G's output


# ---- pieces ------------------------------------------------------------------------------------------

def test_head_partially_downsamples_over_latent_time():
    head = DiscriminatorHead(32, n_down=2)
    assert head(torch.randn(3, 40, 32)).shape == (3, 10)
    assert head(torch.randn(3, 1, 32)).shape == (3, 1)
    with pytest.raises(ValueError):
        head(torch.randn(3, 40, 16))


def test_dmd2_head_downsamples_into_a_single_logit():
    """DMD2's head pools the whole clip into one logit; Presto-S's keeps one per 4 latent frames (sec. 3.2.3)."""
    torch.manual_seed(0)
    presto, dmd2 = make_head("presto", 32), make_head("dmd2", 32)
    assert isinstance(presto, DiscriminatorHead) and isinstance(dmd2, DMD2Head)
    x = torch.randn(3, 40, 32)
    assert presto(x).shape == (3, 10) and dmd2(x).shape == (3, 1) and dmd2(x[:, :1]).shape == (3, 1)
    assert dmd2(torch.randn(3, 200, 32)).shape == (3, 1)       # one logit whatever the clip length
    with pytest.raises(ValueError):
        make_head("patch", 32)
    with pytest.raises(ValueError):
        dmd2(torch.randn(3, 40, 16))
    with pytest.raises(ValueError):
        PrestoSConfig(disc_head="patch")


@pytest.mark.parametrize("kind", ["presto", "dmd2"])
@pytest.mark.parametrize("loss", ["ls", "ns"])
def test_both_heads_learn_real_from_fake_under_both_losses(kind, loss):
    """Line 18 / eq. 7 drive either head to call real features real and fake ones fake; line 10 then rises."""
    torch.manual_seed(0)
    head = make_head(kind, 16, n_down=1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    pattern = torch.cat([torch.ones(8), -torch.ones(8)])          # a channel pattern GroupNorm cannot remove
    real, fake = torch.randn(8, 12, 16) + pattern, torch.randn(8, 12, 16) - pattern
    first = float(discriminator_gan_loss(head(real), head(fake), loss).detach())
    for _ in range(80):
        opt.zero_grad()
        discriminator_gan_loss(head(real), head(fake), loss).backward()
        opt.step()
    with torch.no_grad():
        assert float(discriminator_gan_loss(head(real), head(fake), loss)) < 0.5 * first
        assert head(real).min() > head(fake).max() and real_accuracy(head(real), loss) == 1.0
        assert float(generator_gan_loss(head(fake), loss)) > float(generator_gan_loss(head(real), loss))


def test_player_optimisers_default_to_dmd2_and_iterations_map_to_loop_steps():
    ps = _players()
    opts = build_optimizers(ps)
    for name, o in opts.items():                  # DMD2: AdamW (0.9, 0.999), weight decay 0.01, A.1's lr
        g = o.param_groups[0]
        assert type(o) is torch.optim.AdamW and g["betas"] == (0.9, 0.999) and g["weight_decay"] == 0.01
        assert g["lr"] == 5e-7
        assert {id(p) for p in g["params"]} == {id(p) for p in ps.modules()[name].parameters()}
    gan = build_optimizers(ps, PlayerOptimConfig.from_dict({"preset": "gan", "lr_generator": 1e-5, "lr_fake": 1e-4}))
    assert type(gan["fake"]) is torch.optim.Adam and gan["fake"].param_groups[0]["betas"] == (0.0, 0.99)
    assert gan["generator"].param_groups[0]["lr"] == 1e-5 and gan["fake"].param_groups[0]["lr"] == 1e-4
    # 32K DMD2 iterations = 32K fake + 6.4K generator updates = 38.4K of our one-player-per-step loop steps
    n = loop_steps(32_000)
    turns = torch.tensor([ps.is_generator_turn(i) for i in range(n)])
    assert n == 38_400 and int(turns.sum()) == 6_400 and int((~turns).sum()) == 32_000
    assert loop_steps(32_000, counting="generator") == 192_000
    with pytest.raises(ValueError):
        PlayerOptimConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError):
        PlayerOptimConfig.from_dict({"momentum": 0.9})


def test_gan_losses():
    r, f = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    assert math.isclose(float(discriminator_gan_loss(r, f, "ls")), 0.125 + 0.125)    # eq. 8 / line 18
    assert math.isclose(float(generator_gan_loss(f, "ls")), (1 + 0.25) / 2)             # line 10
    ns = -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean())          # eq. 7
    torch.testing.assert_close(discriminator_gan_loss(r, f, "ns"), ns)
    with pytest.raises(ValueError):
        generator_gan_loss(f, "wgan")


def test_exact_score_is_tweedie():
    gm = ring_mixture(k=3, std=0.2)
    x = torch.randn(5, 2, 1, dtype=torch.float64, requires_grad=True)
    sigma = torch.full((5,), 0.3, dtype=torch.float64)
    var = gm.stds**2 + 0.09
    logp = torch.logsumexp(-((x[:, None, :, 0] - gm.means) ** 2).sum(-1) / (2 * var) - torch.log(var), 1).sum()
    (grad,) = torch.autograd.grad(logp, x)
    torch.testing.assert_close(ExactScore(gm)(x.detach(), sigma), x.detach() + 0.09 * grad)


def test_config_errors():
    with pytest.raises(ValueError):
        PrestoSConfig(p_dmd="uniform")
    with pytest.raises(ValueError):
        PrestoSConfig.from_dict({"p_gen": "inf", "lr": 1.0})
    with pytest.raises(ValueError):
        FakeScore(make_toy_model(8, 2), DiscriminatorHead(8), feature_block=5)(
            torch.randn(2, 2, 1), torch.ones(2), with_logits=True)
