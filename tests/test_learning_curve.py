"""Learning curves: the training loop's validation hook (rows, schedule, training untouched) and the curve files."""
import csv

import torch
from torch import nn

from presto_lib.stages.learning_curve import curve_path, validate_every, write_curve
from presto_lib.train import TrainConfig, train

torch.set_num_threads(1)


class Points(torch.utils.data.Dataset):
    def __init__(self, n=16):
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def step_fn(ctx, batch, step):
    x = batch["x"]
    loss = ((ctx.modules["net"](x + 0.1 * torch.randn_like(x)) - x) ** 2).mean()   # noise from the torch RNG
    ctx.backward_and_step(loss, "net")
    return {"loss": loss}


VAL = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))


def val_fn(ctx):
    """Validation error of the EMA net, drawing random numbers (must not disturb training)."""
    torch.randn(100)
    net = ctx.ema["net"]
    return {"val": float(((net(VAL) - VAL) ** 2).mean())}


def run(tmp, validate=None, every=0, steps=6):
    torch.manual_seed(0)
    net = nn.Linear(3, 3)
    cfg = TrainConfig(run_dir=str(tmp), max_steps=steps, batch_size=4, ckpt_every=3, log_every=1,
                      validate_every=every, ema_decay=0.5)
    ctx = train(step_fn, modules={"net": net}, optimizers={"net": torch.optim.SGD(net.parameters(), lr=0.1)},
                dataset=Points(), cfg=cfg, ema=["net"], validate=validate)
    return ctx


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_validation_rows_at_start_every_n_and_end(tmp_path):
    run(tmp_path, val_fn, every=4, steps=6)
    rows = _rows(tmp_path / "validation.csv")
    assert [int(r["step"]) for r in rows] == [0, 4, 6]
    assert float(rows[-1]["val"]) < float(rows[0]["val"])     # the net learns the identity: the curve falls


def test_validation_leaves_training_unchanged(tmp_path):
    a = run(tmp_path / "a", val_fn, every=2)
    b = run(tmp_path / "b")
    for (k, p), q in zip(a.raw["net"].state_dict().items(), b.raw["net"].state_dict().values()):
        assert torch.equal(p, q), k
    assert a.raw["net"].training                                # validation left the module in train mode
    assert not (tmp_path / "b" / "validation.csv").exists()


def test_resume_keeps_the_curve_consistent(tmp_path):
    run(tmp_path, val_fn, every=2, steps=3)                     # checkpoint at 3, rows 0, 2, 3
    run(tmp_path, val_fn, every=2, steps=6)                     # resumed: rows 4, 6 appended
    assert [int(r["step"]) for r in _rows(tmp_path / "validation.csv")] == [0, 2, 3, 4, 6]


def test_schedule_and_curve_file(tmp_path):
    assert validate_every(100, {"points": 10}) == 10
    assert validate_every(3, {"points": 10}) == 1
    assert validate_every(100, {"points": 0}) == validate_every(100, None) == 0
    assert write_curve(tmp_path / "none", tmp_path / "results", "base") is None
    run(tmp_path / "run", val_fn, every=3)
    out = write_curve(tmp_path / "run", tmp_path / "results", "base")
    assert out == curve_path(tmp_path / "results", "base") == tmp_path / "results" / "plots" / "base_learning_curve.csv"
    assert out.read_text() == (tmp_path / "run" / "validation.csv").read_text()


# ---- the validation metrics on a tiny saved base model and latent cache ----

def test_generator_and_dsm_curves_in_a_presto_s_run(tmp_path, tiny_world):
    import pandas as pd

    from presto_lib.distill.generator import build_presto_s
    from presto_lib.distill.presto_s import PrestoSConfig
    from presto_lib.stages.learning_curve import dsm_validation, generator_validation
    from presto_lib.stages.presto_s import distill

    w = tiny_world(tmp_path, splits=("train", "valid"))
    cfg = PrestoSConfig()
    ps, _ = build_presto_s(w / "base", cfg, {"n_down": 1}, "cpu")
    gen_val = generator_validation(w / "latents", 4, cfg=cfg, steps=2)
    dsm_val = dsm_validation(w / "latents", 4, sigma_data=0.5, module="fake")
    both = lambda ctx: {**gen_val(ctx), **dsm_val(ctx)}                                   # noqa: E731
    train_p = {"iterations": 12, "batch_size": 4, "crop_frames": 8, "lr_generator": 1e-3, "lr_fake": 1e-3,
               "optimizer": "dmd2", "grad_clip": 10.0, "ema_decay": 0.0, "ckpt_every": 12, "log_every": 1}
    distill(ps, w / "latents", w / "run", train_p, seed=0, validate=both, validate_every=6)
    v = pd.read_csv(w / "run" / "validation.csv")
    assert v["step"].tolist() == [0, 6, 12]
    assert v["val_latent_mmd"].notna().all() and v["val_dsm"].gt(0).all()
    assert v["val_latent_mmd"].nunique() == 3                   # the generator's samples move as it trains
    again = generator_validation(w / "latents", 4, cfg=cfg, steps=2)
    from types import SimpleNamespace
    ctx = SimpleNamespace(ema={}, raw={"generator": ps.G}, device="cpu")
    assert again(ctx) == gen_val(ctx)                           # fixed noise: the metric is deterministic
