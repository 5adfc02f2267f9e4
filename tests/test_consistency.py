"""CM, SoundCTM and DITTO-CTM (paper A.2): zero loss at the exact consistency target (analytic Gaussian teacher),
exact CTM jumps and 4-step sampling on the 2-D toy, the distilled CFG weight, training, and the shared loop."""
import pytest
import torch
from torch import nn

from presto_lib.diffusion import edm
from presto_lib.diffusion.sampling import sample_heun
from presto_lib.distill.cm import CMConfig, CMStep, ConsistencyStudent, cm_loss, guided_teacher, sample_cm, solve_ode
from presto_lib.distill.consistency_toy import distill_toy_consistency, label_null, sample_toy, toy_student
from presto_lib.distill.ctm import CTMConfig, CTMStep, ctm_config, ctm_jump, ctm_loss, sample_ctm
from presto_lib.distill.toy import ExactScore, make_toy_model, ring_mixture, sample_points, train_toy_base
from weights import changed, snapshot

torch.set_num_threads(1)

MU, S0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64), 0.5      # the analytic teacher: data ~ N(MU, S0^2 I)


def gaussian_flow(x, t, s):
    """The exact PF-ODE map of N(MU, S0^2 I) data: x_s = MU + sqrt((S0^2 + s^2) / (S0^2 + t^2)) (x_t - MU)."""
    t, s = t.double().reshape(-1, 1, 1), s.double().reshape(-1, 1, 1)
    m = MU[0].reshape(1, 2, 1)
    return m + ((S0**2 + s**2) / (S0**2 + t**2)).sqrt() * (x.double() - m)


def _vec(v, x):
    v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    return v.expand(x.shape[0]) if v.numel() == 1 else v


class FeatureTeacher(nn.Module):
    """An exact denoiser (edm.GaussianMixture) whose 'features' are its input and output as [B, T=1, 2] tokens."""

    def __init__(self, gm):
        super().__init__()
        self.gm = gm

    def forward(self, x, sigma, cond=None, return_features=False):
        d = self.gm.denoise(x[:, :, 0], sigma, cond)[:, :, None]
        return (d, [x.transpose(1, 2), d.transpose(1, 2)]) if return_features else d


class ExactCM(nn.Module):
    """f*(x_t, t) = x_0 along the analytic Gaussian's ODE (ignores w: an unconditional teacher)."""

    def forward(self, x, sigma, cond=None, w=None, s=None):
        t = _vec(sigma, x)
        return gaussian_flow(x, t, torch.zeros_like(t))


class ExactCTM(nn.Module):
    """g* with (s/t) x + (1 - s/t) g*(x, t, s) = the exact map x_t -> x_s (a flow `flow(x, t, s)`)."""

    def __init__(self, flow=gaussian_flow):
        super().__init__()
        self.flow = flow

    def forward(self, x, t, cond=None, w=None, s=None):
        t, s = _vec(t, x), _vec(s, x)
        s = torch.where(s < t, s, torch.zeros_like(s))          # s >= t: G = x_t whatever g is
        r = (s / t).reshape(-1, 1, 1)
        return ((self.flow(x, t, s).double() - r * x.double()) / (1 - r)).to(x.dtype)


class Shift(nn.Module):
    """A student off the consistency target by a constant offset."""

    def __init__(self, m, d=0.01):
        super().__init__()
        self.m, self.d = m, d

    def forward(self, *a, **k):
        return self.m(*a, **k) + self.d


def _gaussian_batch(n=2048):
    gm = edm.GaussianMixture(MU, S0)
    return gm, gm.sample(n, torch.Generator().manual_seed(0))[0][:, :, None]


# ---- each loss is zero at its consistency target --------------------------------------------------

@pytest.mark.parametrize("solver", ["heun", "dpmpp_2s"])
def test_cm_loss_zero_for_the_exact_consistency_function(solver):
    gm, x0 = _gaussian_batch()
    cfg = CMConfig(n_levels=40, solver=solver, guidance=False)
    loss = lambda student: float(cm_loss(student, ExactCM(), FeatureTeacher(gm), x0, None, cfg,
                                         generator=torch.Generator().manual_seed(1))[0])
    exact, off = loss(ExactCM()), loss(Shift(ExactCM()))
    assert exact < 1e-6 and off > 5e-5 and exact < 1e-3 * off, (exact, off)


@pytest.mark.parametrize("variant", ["soundctm", "ditto_ctm"])
def test_ctm_loss_zero_for_the_exact_jump(variant):
    gm, x0 = _gaussian_batch()
    cfg = ctm_config(variant, guidance=False, dsm_weight=0.0)     # the consistency term alone
    loss = lambda student: float(ctm_loss(student, ExactCTM(), FeatureTeacher(gm), x0, None, cfg,
                                          generator=torch.Generator().manual_seed(1))[0])
    exact, off = loss(ExactCTM()), loss(Shift(ExactCTM()))
    assert exact < 1e-5 and exact < 1e-2 * off, (exact, off)


def test_ditto_ctm_single_step_and_soundctm_multi_step_teacher():
    gm, x0 = _gaussian_batch(512)
    logs = {v: ctm_loss(ExactCTM(), ExactCTM(), FeatureTeacher(gm), x0, None, ctm_config(v, guidance=False),
                        generator=torch.Generator().manual_seed(2))[1] for v in ("soundctm", "ditto_ctm")}
    assert logs["ditto_ctm"]["teacher_steps"] == 1.0
    assert logs["soundctm"]["teacher_steps"] > 2.0


# ---- CTM's anywhere-to-anywhere jump on the 2-D toy -------------------------------------------------

def _toy_flow(gm, steps=120):
    """The toy teacher's exact ODE map x_t -> x_s, integrated finely (the 'exact student')."""
    den = ExactScore(gm)
    return lambda x, t, s: solve_ode(lambda y, sig: den(y, sig), x.double(), t.double(), s.double(), steps)


def _reference(gm, x, t, s, n=400):
    """The teacher's ODE solution by the library's Heun sampler on a fine eq. 9 grid from t to s."""
    u = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    sig = (t ** (1 / 7) + u * (s ** (1 / 7) - t ** (1 / 7))) ** 7
    return sample_heun(ExactScore(gm), x.double(), sig, disable=True)


@pytest.mark.parametrize("t,s", [(80.0, 1.0), (3.0, 0.3), (1.0, 0.0)])
def test_ctm_jump_with_exact_student_is_the_teacher_ode_solution(t, s):
    gm = ring_mixture()
    x = (sample_points(gm, 256, torch.Generator().manual_seed(0)) +
         t * torch.randn(256, 2, 1, generator=torch.Generator().manual_seed(1))).double()
    t64, s64 = torch.tensor(t, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
    got = ctm_jump(ExactCTM(_toy_flow(gm)), x, t64, s64, None)
    ref = _reference(gm, x, t64, s64)
    assert (got - ref).abs().max() < 2e-3, float((got - ref).abs().max())
    assert (x - ref).abs().max() > 0.1                          # a jump that moves


def test_four_step_ctm_sampling_with_exact_student_solves_the_teacher_ode():
    gm, cfg = ring_mixture(), ctm_config("soundctm", guidance=False, gamma=0.0)
    z = torch.randn(256, 2, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = sample_ctm(ExactCTM(_toy_flow(gm)), z, None, cfg, steps=4)
    ref = _reference(gm, z * cfg.sigma_max, torch.tensor(cfg.sigma_max, dtype=torch.float64),
                     torch.tensor(0.0, dtype=torch.float64))
    assert (got - ref).abs().max() < 2e-3, float((got - ref).abs().max())
    # the 4-step DDIM jumps of the exact *denoiser* (DITTO-CTM's family at init) do not reach it
    ddim = sample_ctm(lambda x, t, c, w=None, s=None: ExactScore(gm)(x, t), z, None, cfg, steps=4)
    assert (ddim - ref).abs().max() > 20 * (got - ref).abs().max()


# ---- the distilled CFG weight ------------------------------------------------------------------------

def _conditional_toy():
    """Two classes: class 0 one mode on the left, class 1 two modes on the right."""
    means = torch.tensor([[-0.6, 0.0], [0.5, 0.4], [0.5, -0.4]])
    return edm.GaussianMixture(means, 0.1, classes=torch.tensor([0, 1, 1]))


class ExactGuidedCM(nn.Module):
    """f*(x_t, t, c; w): the w-guided exact teacher's ODE from t to 0 (the exact CFG-distilled consistency function)."""

    def __init__(self, gm, fixed_w=None):
        super().__init__()
        self.teacher, self.fixed_w = ExactScore(gm), fixed_w

    def forward(self, x, sigma, cond=None, w=None, s=None):
        w = _vec(w if self.fixed_w is None else self.fixed_w, x)
        t = _vec(sigma, x)
        den = guided_teacher(self.teacher, cond, w, label_null)
        return solve_ode(den, x.double(), t, torch.zeros_like(t), 200)


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_cfg_distilled_cm_at_w_matches_the_unguided_or_guided_teacher(w):
    gm = _conditional_toy()
    cond = {"label": torch.ones(128, dtype=torch.long)}
    z = torch.randn(128, 2, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cfg = CMConfig(w_min=w, w_max=w, sample_w=w)
    got = sample_cm(ExactGuidedCM(gm), z, cond, cfg, steps=1)
    plain = (lambda x, s: ExactScore(gm)(x, s, {"label": torch.full_like(cond["label"], -1)})) if w == 0 else \
        (lambda x, s: ExactScore(gm)(x, s, cond))             # w = 0: unconditional teacher; w = 1: conditional
    ref = _reference_plain(plain, z * cfg.sigma_max, cfg.sigma_max)
    assert (got - ref).abs().max() < 5e-3, float((got - ref).abs().max())
    # the two weights give different samples (class 1 only at w = 1)
    on_left = (got[:, 0, 0] < 0).float().mean()
    assert (on_left > 0.15) if w == 0 else (on_left == 0)
    # the loss routes the sampled w to the teacher and the student alike: zero for the exact f*, not for a w-blind one
    x0 = gm.sample(256, torch.Generator().manual_seed(5), label=1)[0][:, :, None]
    c = {"label": torch.ones(256, dtype=torch.long)}
    lw = lambda st: float(cm_loss(st, ExactGuidedCM(gm), ExactScore(gm), x0, c, CMConfig(n_levels=40, w_min=w, w_max=w),
                                  label_null, torch.Generator().manual_seed(6))[0])
    exact, blind = lw(ExactGuidedCM(gm)), lw(ExactGuidedCM(gm, fixed_w=1.0 - w))
    assert exact < 1e-5 and exact < 1e-2 * blind, (exact, blind)


def _reference_plain(den, x, t, n=400):
    u = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return sample_heun(den, x, (t ** (1 / 7) * (1 - u)) ** 7, disable=True)


# ---- the student starts at the base model; training on the toy reduces the loss ---------------------

def test_student_starts_as_the_base_model_for_any_w_and_s():
    torch.manual_seed(0)
    base = make_toy_model(16, 2)
    for p in base.parameters():
        nn.init.normal_(p, std=0.3)
    st = toy_student(base, ctm_config("soundctm"))
    x, sig = torch.randn(8, 2, 1), torch.rand(8) * 5 + 0.1
    ref = base(x, sig)
    for w, s in [(1.0, 0.0), (6.0, 0.5)]:
        assert torch.allclose(st(x, sig, None, w=w, s=s), ref, atol=1e-6)
    with pytest.raises(ValueError, match="pass s"):
        st(x, sig, None, w=1.0)


@pytest.fixture(scope="module")
def toy_base():
    gm = ring_mixture()
    torch.manual_seed(0)
    return gm, train_toy_base(gm, steps=150, batch=256, hidden=32, depth=2)


@pytest.mark.parametrize("name", ["cm", "soundctm", "ditto_ctm"])
def test_a_few_training_steps_on_the_toy_reduce_the_loss(toy_base, name):
    gm, base = toy_base
    cfg = CMConfig(guidance=False) if name == "cm" else ctm_config(name, guidance=False, n_levels=18, teacher_steps=4)
    loss_fn = cm_loss if name == "cm" else ctm_loss
    torch.manual_seed(1)
    student, x0 = toy_student(base, cfg), sample_points(gm, 1024, torch.Generator().manual_seed(7))

    def ev():                                                    # the unweighted distance, not the loss itself
        with torch.no_grad():
            logs = loss_fn(student, student, base, x0, None, cfg, generator=torch.Generator().manual_seed(8))[1]
        return logs["cm_dist" if name == "cm" else "ctm_dist"]
    before = ev()
    hist = distill_toy_consistency(student, base, gm, cfg, iters=60, batch=256, lr=2e-3, log_every=20)
    after = ev()
    assert len(hist) == 3 and after < 0.7 * before, (before, after)
    assert sample_toy(student, cfg, 64, steps=4).shape == (64, 2, 1)


# ---- configs and the shared training loop -------------------------------------------------------------

def test_configs_reject_bad_options():
    for bad in (dict(solver="rk4"), dict(w_min=3.0, w_max=1.0), dict(target="online"), dict(n_levels=1)):
        with pytest.raises(ValueError):
            CMConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        CMConfig.from_dict({"n_level": 3})
    with pytest.raises(ValueError):
        ctm_config("ctm_gan")
    with pytest.raises(ValueError):
        CTMConfig(match_point="zt")
    assert ctm_config("ditto_ctm").target_time is False and ctm_config("soundctm").feature_loss is True


@pytest.mark.parametrize("name", ["cm", "soundctm", "ditto_ctm"])
def test_steps_plug_into_the_shared_loop(tmp_path, name):
    from presto_lib.train import TrainConfig, train

    torch.manual_seed(0)
    base = make_toy_model(16, 2)
    gm = ring_mixture()
    data = [{"latents": sample_points(gm, 1)[0]} for _ in range(32)]
    cfg = CMConfig(target="ema") if name == "cm" else ctm_config(name, teacher_steps=2)
    step = CMStep(cfg) if name == "cm" else CTMStep(cfg)
    student = toy_student(base, cfg)
    before, teacher0 = snapshot(student), snapshot(base)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    ctx = train(step, modules={"student": student}, optimizers={"student": opt}, dataset=data,
                cfg=TrainConfig(run_dir=str(tmp_path), max_steps=3, batch_size=8, log_every=1, amp="none"),
                ema=["student"], frozen={"teacher": base})
    assert ctx.step == 3
    assert changed(before, student) and not changed(teacher0, base)
    assert "loss" in (tmp_path / "log.csv").read_text()
    if name == "soundctm":                                       # a student without the target-time embedding
        bad = toy_student(base, ctm_config("ditto_ctm"))
        with pytest.raises(ValueError, match="target-time"):
            train(step, modules={"student": bad}, optimizers={"student": torch.optim.Adam(bad.parameters())},
                  dataset=data, cfg=TrainConfig(run_dir=str(tmp_path / "bad"), max_steps=1, batch_size=8),
                  frozen={"teacher": base})


def test_dit_student_trains_in_the_loop_and_round_trips(tmp_path):
    """The music model path: a tiny DiT teacher, a SoundCTM student with w and s in extra_emb, save / load."""
    from presto_lib.diffusion.score_model import build_score_model
    from presto_lib.distill.consistency import load_student, make_step, make_student, sample_student, save_student
    from presto_lib.train import TrainConfig, train

    torch.manual_seed(0)
    base = build_score_model(dict(hidden_size=32, depth=2, num_heads=2, in_channels=4, text_dim=8, freq_dim=16))
    for p in base.parameters():                                  # a teacher whose output is not identically 0
        nn.init.normal_(p, std=0.05)
    data = [{"latents": torch.randn(4, 8), "text": torch.randn(3, 8), "text_mask": torch.tensor([True, True, False]),
             "bpm": torch.tensor(120.0)} for _ in range(8)]
    cfg = ctm_config("soundctm", n_levels=10, teacher_steps=2)
    student = make_student(base, cfg)
    x, sig = torch.randn(2, 4, 8), torch.tensor([3.0, 0.5])
    cond = {"text": torch.randn(2, 3, 8), "text_mask": torch.ones(2, 3, dtype=torch.bool),
            "bpm": torch.tensor([90.0, 0.0])}
    assert torch.allclose(student(x, sig, cond, w=4.5, s=0.1), base(x, sig, cond), atol=1e-5)   # zero-init
    ctx = train(make_step(cfg), modules={"student": student},
                optimizers={"student": torch.optim.Adam(student.parameters(), 1e-2)}, dataset=data,
                cfg=TrainConfig(run_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, log_every=1),
                frozen={"teacher": base})
    assert ctx.step == 2
    student.eval()
    save_student(tmp_path / "student", student, cfg, {"train_steps": 2})
    loaded, cfg2, conf = load_student(tmp_path / "student")
    assert cfg2 == cfg and conf["method"] == "ctm" and conf["train_steps"] == 2
    g = lambda: torch.Generator().manual_seed(0)
    a = sample_student(student, torch.randn(2, 4, 8, generator=g()), cond, cfg, 4, w=2.0)
    b = sample_student(loaded, torch.randn(2, 4, 8, generator=g()), cond, cfg, 4, w=2.0)
    assert a.shape == (2, 4, 8) and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="ConsistencyStudent"):
        save_student(tmp_path / "x", base, cfg)


def test_dsm_balance_is_the_gradient_norm_ratio_at_the_last_layer():
    from presto_lib.distill.ctm import adaptive_weight, last_layer

    torch.manual_seed(0)
    st = toy_student(make_toy_model(8, 1), ctm_config("soundctm"))
    layer = last_layer(st)
    assert layer is st.score.net.out.weight
    y = st(torch.randn(4, 2, 1), torch.ones(4), None, w=1.0, s=0.5)
    l1, l2 = (y ** 2).sum(), 0.25 * (y ** 2).sum()
    assert float(adaptive_weight(l1, l2, layer)) == pytest.approx(4.0, rel=1e-5)
    assert adaptive_weight(l1.detach(), l2, layer) == 1.0


# ---- the stage layer: run configs and the Presto-S budget ---------------------------------------------

@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_stage_runs_get_presto_s_generator_updates_batch_and_crop(profile):
    from presto_lib.config import PROFILES, find_root, render_profile
    from presto_lib.distill.ctm import CTMConfig
    from presto_lib.stages.consistency import RUNS, run_config

    assert profile in PROFILES
    P = render_profile(profile, find_root())
    ps, c = P["presto_s"], P["consistency"]["train"]
    f = int(ps["algorithm"]["fake_updates"])
    updates = sum(i % (f + 1) == f for i in range(int(ps["train"]["iterations"])))    # Algorithm 1, line 4
    assert c["iterations"] == updates
    assert (c["batch_size"], c["crop_frames"]) == (ps["train"]["batch_size"], ps["train"]["crop_frames"])
    assert tuple(P["consistency"]["runs"]) == RUNS
    cfgs = {r: run_config(r, P) for r in RUNS}
    assert type(cfgs["cm"]) is CMConfig and all(isinstance(cfgs[r], CTMConfig) for r in ("soundctm", "ditto_ctm"))
    assert cfgs["soundctm"].target_time and cfgs["soundctm"].feature_loss and cfgs["soundctm"].teacher_steps > 1
    assert not cfgs["ditto_ctm"].target_time and cfgs["ditto_ctm"].teacher_steps == 1
    assert all(cfg.sigma_max == P["edm"]["sigma_max"] and cfg.rho == P["edm"]["rho"] for cfg in cfgs.values())


def test_stage_run_config_applies_overrides_and_rejects_unknown_runs():
    from presto_lib.config import find_root, render_profile
    from presto_lib.stages.consistency import run_config

    P = render_profile("cpu", find_root())
    P["consistency"]["runs"] = {"cm": {"n_levels": 7, "w_max": 3.0}, "soundctm": {"variant": "soundctm",
                                                                                   "teacher_steps": 2}}
    assert (run_config("cm", P).n_levels, run_config("cm", P).w_max) == (7, 3.0)
    assert run_config("soundctm", P).teacher_steps == 2
    with pytest.raises(ValueError, match="unknown consistency run"):
        run_config("ditto_ctm", P)
    P["consistency"]["runs"]["cm"] = {"n_level": 7}
    with pytest.raises(ValueError, match="unknown CMConfig options"):
        run_config("cm", P)
