"""Base score model: DSM step (eq. 3) learns, 10% condition dropout happens at its rate, checkpoints round-trip."""
import math

import pytest
import torch
from torch import nn

from presto_lib.diffusion.edm import EDMPrecond, dsm_loss
from presto_lib.train import TrainConfig, train
from presto_lib.diffusion.score_model import (DSMStep, build_score_model, drop_conditions, load_score_model,
                                              null_condition, save_score_model, tempo_free_text)

torch.set_num_threads(2)
C, T, L, D_TEXT = 4, 8, 5, 12
TINY = dict(hidden_size=32, depth=2, num_heads=4, mlp_ratio=2.0)


def batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / T
    patterns = torch.stack([torch.sin(2 * math.pi * (k + 1) * t + c) for k in range(B) for c in range(C)])
    # structured, off-centre latents: a denoiser can beat the init (mu = c_skip x) by learning them
    return {"latents": 0.8 + 0.5 * patterns.reshape(B, C, T), "text": torch.randn(B, L, D_TEXT, generator=g),
            "text_mask": torch.ones(B, L, dtype=torch.bool), "bpm": torch.linspace(80, 160, B)}


def test_build_fills_data_sizes_and_is_preconditioned():
    m = build_score_model(TINY, in_channels=C, text_dim=D_TEXT)
    assert isinstance(m, EDMPrecond) and m.sigma_data == 0.5
    assert m.net.cfg.in_channels == C and m.net.cfg.text_dim == D_TEXT and m.net.depth == 2
    b = batch()
    # zero-initialised output layer: F = 0, so mu = c_skip x exactly (eq. 4)
    x, sigma = torch.randn(4, C, T), torch.full((4,), 0.7)
    out = m(x, sigma, {k: b[k] for k in ("text", "text_mask", "bpm")})
    torch.testing.assert_close(out, x * 0.25 / (0.49 + 0.25))


class Items(torch.utils.data.Dataset):
    """A batch dict served as a dataset of per-example dicts."""

    def __init__(self, b):
        self.b = b

    def __len__(self):
        return self.b["bpm"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.b.items()}


def test_dsm_step_lowers_loss_on_tiny_overfit(tmp_path):
    torch.manual_seed(0)
    m = build_score_model(TINY, in_channels=C, text_dim=D_TEXT)
    b = batch()
    g = torch.Generator().manual_seed(1)
    sig, noise = torch.exp(-0.4 + torch.randn(64, generator=g)), torch.randn(64, C, T, generator=g)
    rep = {k: v.repeat(16, *[1] * (v.ndim - 1)) for k, v in b.items()}
    cond = {k: rep[k] for k in ("text", "text_mask", "bpm")}
    evaluate = lambda net: float(dsm_loss(net.eval(), rep["latents"], cond, sig, noise=noise).detach())
    before = evaluate(m)
    cfg = TrainConfig(run_dir=str(tmp_path / "run"), max_steps=25, batch_size=4, ckpt_every=1000, log_every=5,
                      ema_decay=0.9)
    ctx = train(DSMStep(cond_dropout=0.1), modules={"score": m}, optimizers={"score": torch.optim.Adam(
        m.parameters(), lr=3e-3)}, dataset=Items(b), cfg=cfg, ema=["score"])
    after, after_ema = evaluate(ctx.raw["score"]), evaluate(ctx.ema["score"])
    assert after < 0.5 * before and after_ema < 0.7 * before, (before, after, after_ema)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:1] == ["step"] and {"loss", "grad_norm", "cond_dropped"} <= set(log[0].split(","))
    assert len(log) == 1 + 5


def test_drop_conditions_rate_and_content():
    B = 20000
    cond = {"text": torch.randn(B, 3, 2), "text_mask": torch.ones(B, 3, dtype=torch.bool),
            "bpm": torch.full((B,), 120.0)}
    out, dropped = drop_conditions(cond, 0.1, torch.Generator().manual_seed(0))
    rate, sd = dropped.float().mean().item(), math.sqrt(0.1 * 0.9 / B)
    assert abs(rate - 0.1) < 5 * sd
    # dropped samples are exactly the null condition; kept samples are untouched
    assert not out["text_mask"][dropped].any() and (out["bpm"][dropped] == 0).all()
    assert (out["text"][dropped] == 0).all()
    assert out["text_mask"][~dropped].all() and (out["bpm"][~dropped] == 120).all()
    torch.testing.assert_close(out["text"][~dropped], cond["text"][~dropped])
    assert not drop_conditions(cond, 0.0)[1].any() and drop_conditions(cond, 1.0)[1].all()
    with pytest.raises(ValueError):
        drop_conditions(cond, 1.5)
    with pytest.raises(ValueError):
        DSMStep(cond_dropout=-0.1)


class Recorder(nn.Module):
    """A one-parameter score model that counts the null conditions it is called with."""

    def __init__(self):
        super().__init__()
        self.gain, self.null, self.total = nn.Parameter(torch.ones(())), 0, 0

    def forward(self, x, sigma, cond):
        is_null = (~cond["text_mask"].any(1)) & (cond["bpm"] <= 0)
        self.null += int(is_null.sum())
        self.total += is_null.numel()
        return self.gain * x / (1 + sigma[:, None, None] ** 2)


def test_dsm_step_applies_dropout_at_configured_rate():
    torch.manual_seed(0)
    rec = Recorder()
    step = DSMStep(cond_dropout=0.25)
    b = batch(B=4)
    b = {k: v.repeat(100, *[1] * (v.ndim - 1)) for k, v in b.items()}
    for _ in range(20):
        step.loss(rec, b)
    rate, sd = rec.null / rec.total, math.sqrt(0.25 * 0.75 / rec.total)
    assert rec.total == 20 * 400 and abs(rate - 0.25) < 5 * sd, rate


def _with_tempo_free(b):
    return {**b, "text_notempo": -b["text"] - 5.0, "text_notempo_mask": torch.zeros_like(b["text_mask"])}


def test_tempo_free_text_swaps_whole_captions_at_rate():
    b = _with_tempo_free({k: v.repeat(1000, *[1] * (v.ndim - 1)) for k, v in batch(B=4).items()})
    assert tempo_free_text(b, 0.0) is b and tempo_free_text({**batch(), "x": 1}, 1.0)["text"] is not None
    out = tempo_free_text(b, 0.3, torch.Generator().manual_seed(0))
    swapped = (out["text"] == b["text_notempo"]).all(-1).all(-1)
    kept = (out["text"] == b["text"]).all(-1).all(-1)
    assert (swapped ^ kept).all()                                        # a caption is swapped whole or not at all
    assert (out["text_mask"][swapped] == b["text_notempo_mask"][swapped]).all()   # with its own mask
    assert (out["text_mask"][kept] == b["text_mask"][kept]).all() and (out["bpm"] == b["bpm"]).all()
    rate, sd = swapped.float().mean().item(), math.sqrt(0.3 * 0.7 / len(swapped))
    assert abs(rate - 0.3) < 5 * sd, rate
    assert (tempo_free_text(b, 1.0)["text"] == b["text_notempo"]).all()
    with pytest.raises(ValueError):
        DSMStep(tempo_free_p=1.5)


class TextRecorder(nn.Module):
    """A one-parameter score model that counts the tempo-free captions (negative text) it is called with."""

    def __init__(self):
        super().__init__()
        self.gain, self.free, self.total = nn.Parameter(torch.ones(())), 0, 0

    def forward(self, x, sigma, cond):
        kept = cond["text_mask"].any(1) | (cond["bpm"] > 0)            # not dropped to the null condition
        self.free += int(((cond["text"] < -2).all(-1).all(-1) & kept).sum())
        self.total += int(kept.sum())
        return self.gain * x / (1 + sigma[:, None, None] ** 2)


def test_dsm_step_shows_tempo_free_captions_at_its_rate():
    torch.manual_seed(0)
    b = _with_tempo_free({k: v.repeat(100, *[1] * (v.ndim - 1)) for k, v in batch(B=4).items()})
    b["text"] = b["text"].abs() + 0.1                                   # positive: told apart from tempo-free
    b["text_notempo"] = -b["text"] - 5.0
    for p in (0.0, 0.5):
        rec = TextRecorder()
        for _ in range(10):
            DSMStep(cond_dropout=0.1, tempo_free_p=p).loss(rec, b)
        rate = rec.free / rec.total
        assert abs(rate - p) < 5 * math.sqrt(max(p * (1 - p), 1e-3) / rec.total) + 1e-9, (p, rate)


def test_null_condition_matches_dropout():
    n = null_condition(3, L, D_TEXT)
    assert n["text"].shape == (3, L, D_TEXT) and not n["text_mask"].any() and (n["bpm"] <= 0).all()


def test_checkpoint_round_trip(tmp_path):
    m = build_score_model(TINY, in_channels=C, text_dim=D_TEXT)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_score_model(tmp_path / "base", m, {"latent_scale": 2.0})
    m2, cfg = load_score_model(tmp_path / "base")
    assert cfg["latent_scale"] == 2.0 and cfg["dit"]["hidden_size"] == 32
    b = batch()
    cond = {k: b[k] for k in ("text", "text_mask", "bpm")}
    x, sigma = torch.randn(4, C, T), torch.tensor([0.1, 1.0, 5.0, 40.0])
    torch.testing.assert_close(m.eval()(x, sigma, cond), m2(x, sigma, cond))
    with pytest.raises(ValueError):
        save_score_model(tmp_path / "bad", nn.Linear(2, 2))


def _write_cache(root, n=6, frames=8, L=5, dim=D_TEXT):
    """A minimal latent cache in the on-disk format of presto_lib.data.latents."""
    import json

    from safetensors.torch import save_file

    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for sp in ("train", "valid", "test"):
        save_file({"latents": torch.randn(n, C, frames, generator=g), "latents_std": torch.full((n, C, frames), 0.01),
                   "text": torch.randn(n, L, dim, generator=g), "text_mask": torch.ones(n, L, dtype=torch.bool),
                   "bpm": torch.linspace(70, 150, n)}, str(root / f"{sp}.safetensors"))
        (root / f"{sp}.json").write_text(json.dumps({"captions": [f"c{i}" for i in range(n)],
                                                      "piece_ids": [str(i) for i in range(n)]}))
    (root / "meta.json").write_text(json.dumps({"latent_dim": C, "latent_frames": frames, "text_dim": dim,
                                                 "latent_scale": 1.5, "sample_rate": 800, "clip_samples": 64}))


def test_train_base_exports_ema_resumes_and_refuses_new_settings(tmp_path, capsys):
    from presto_lib.stages.base import train_base
    from presto_lib.stages.common import ParamsChanged

    _write_cache(tmp_path / "latents")
    P = {"common": {"seed": 0}, "edm": {"sigma_data": 0.5, "p_mean": -0.4, "p_std": 1.0},
         "base": {"dit": dict(TINY, patch_size=2), "cond_dropout": 0.1, "lr": 1e-3, "betas": [0.9, 0.999],
                  "warmup_steps": 2, "batch_size": 2, "steps": 3, "grad_clip": 1.0, "ema_decay": 0.9,
                  "ckpt_every": 100, "log_every": 1, "keep_checkpoints": 1,
                  "sample_posterior": False, "num_workers": 0}}
    out = tmp_path / "base"
    train_base(P, tmp_path / "latents", out)
    model, cfg = load_score_model(out / "model")
    assert cfg["latent_frames"] == 8 and cfg["clip_samples"] == 64 and cfg["latent_scale"] == 1.5
    assert cfg["train_steps"] == 3 and model.net.cfg.patch_size == 2 and model.net.cfg.text_dim == D_TEXT
    P["base"]["steps"] = 5                     # more steps: resume
    ctx = train_base(P, tmp_path / "latents", out)
    assert ctx.step == 5 and "resumed" in capsys.readouterr().out
    assert len((out / "run" / "log.csv").read_text().splitlines()) == 1 + 5
    P["base"]["lr"] = 5e-4                     # a training setting changed: refused, naming the key
    with pytest.raises(ParamsChanged, match=r"base\.lr: 0\.001 -> 0\.0005"):
        train_base(P, tmp_path / "latents", out)
    ctx = train_base(P, tmp_path / "latents", out, restart=True)    # asked for: start afresh
    assert ctx.step == 5 and "resumed" not in capsys.readouterr().out
    assert len((out / "run" / "log.csv").read_text().splitlines()) == 1 + 5
