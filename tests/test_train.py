"""The shared training loop: DDP == one process, exact kill-and-resume, NaN guard, pickle-free checkpoints."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from presto_lib import checkpoint as ckpt
from presto_lib.train import NonFiniteLossError, StepSampler, TrainConfig, train

torch.set_num_threads(1)


# ---- a toy GAN-shaped problem: two players, two optimisers, noise in the data and in the step ----

class Noisy(torch.utils.data.Dataset):
    """x ~ fixed, plus numpy noise drawn inside __getitem__ (dataset randomness must resume exactly)."""

    def __init__(self, n=24):
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + torch.from_numpy(np.random.randn(4).astype(np.float32)) * 0.1}


def players():
    torch.manual_seed(0)
    gen, disc = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4)), nn.Linear(4, 1)
    opts = {"gen": torch.optim.AdamW(gen.parameters(), lr=1e-2),
            "disc": torch.optim.AdamW(disc.parameters(), lr=1e-2, betas=(0.8, 0.99))}
    return {"gen": gen, "disc": disc}, opts


def gan_step(ctx, batch, step, crash_at=None):
    if step == crash_at:
        raise KeyboardInterrupt("simulated kill")
    x = batch["x"]
    fake = ctx.modules["gen"](x + torch.randn_like(x))            # noise from the (saved) torch RNG
    d_loss = (ctx.modules["disc"](fake.detach()) ** 2).mean() + ((1 - ctx.modules["disc"](x)) ** 2).mean()
    ctx.backward_and_step(d_loss, "disc")
    g_loss = ((1 - ctx.raw["disc"](fake)) ** 2).mean() + (fake - x).abs().mean()
    ctx.backward_and_step(g_loss, "gen")
    return {"d_loss": d_loss, "g_loss": g_loss}


def run(tmp, step_fn=gan_step, **kw):
    mods, opts = players()
    cfg = TrainConfig(**{"run_dir": str(tmp), "max_steps": 10, "batch_size": 4, "ckpt_every": 3, "log_every": 1,
                         **kw})
    return train(step_fn, modules=mods, optimizers=opts, dataset=Noisy(), cfg=cfg, ema=["gen"],
                 lr_schedules={"gen": lambda s: min(1.0, (s + 1) / 5)})  # warm-up: resume must keep it


def assert_same_state(a, b):
    for k in a.raw:
        for (n, p), q in zip(a.raw[k].state_dict().items(), b.raw[k].state_dict().values()):
            assert torch.equal(p, q), f"{k}.{n} differs"
    for (n, p), q in zip(a.ema["gen"].state_dict().items(), b.ema["gen"].state_dict().values()):
        assert torch.equal(p, q), f"ema {n} differs"
    for k in a.optimizers:
        sa, sb = a.optimizers[k].state_dict()["state"], b.optimizers[k].state_dict()["state"]
        assert all(torch.equal(sa[i][s], sb[i][s]) for i in sa for s in sa[i]), f"optimiser {k} differs"


def log_rows(d):
    with open(Path(d) / "log.csv") as f:
        return [{k: v for k, v in r.items() if k not in ("wall_s", "samples_per_s")} for r in csv.DictReader(f)]


# ---- data order ----

def test_sampler_splits_global_batch_and_covers_epochs():
    full = [b for b in StepSampler(10, 4, 0, 1, seed=3, start=0, stop=5)]
    r0 = list(StepSampler(10, 4, 0, 2, seed=3, start=0, stop=5))
    r1 = list(StepSampler(10, 4, 1, 2, seed=3, start=0, stop=5))
    assert [a + b for a, b in zip(r0, r1)] == full, "ranks must split the same global batch"
    idx = [i for b in full for i, _ in b]
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10)), "epochs are permutations"
    assert list(StepSampler(10, 4, 0, 1, seed=3, start=2, stop=5)) == full[2:], "resume mid-run = same order"
    with pytest.raises(ValueError, match="divisible"):
        StepSampler(10, 3, 0, 2, 0, 0, 1)


# ---- resume ----

@pytest.mark.parametrize("num_workers", [0, 2])
def test_kill_and_resume_is_exact(tmp_path, num_workers):
    ref = run(tmp_path / "ref", num_workers=num_workers)
    with pytest.raises(KeyboardInterrupt):   # killed during step 7: last checkpoint is step 6
        run(tmp_path / "res", step_fn=lambda c, b, s: gan_step(c, b, s, crash_at=7), num_workers=num_workers)
    assert ckpt.latest_training_state(tmp_path / "res" / "checkpoints").name == "step_00000006"
    res = run(tmp_path / "res", num_workers=num_workers)
    assert res.step == ref.step == 10
    assert res.optimizers["gen"].param_groups[0]["lr"] == 1e-2 and res.optimizers["disc"].param_groups[0]["lr"] == 1e-2
    assert_same_state(ref, res)
    assert log_rows(tmp_path / "ref") == log_rows(tmp_path / "res"), "log.csv must not hold duplicated steps"


def test_stop_after_then_resume_and_rerun_is_noop(tmp_path):
    ref = run(tmp_path / "ref")
    first = run(tmp_path / "res", stop_after=4)
    assert first.step == 4 and ckpt.latest_training_state(tmp_path / "res" / "checkpoints").name == "step_00000004"
    assert_same_state(ref, run(tmp_path / "res"))
    again = run(tmp_path / "res")                 # already finished: loads and returns the final state
    assert again.step == 10
    assert_same_state(ref, again)


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    run(tmp_path, max_steps=3)
    files = [p for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} == {".safetensors", ".json"}
    st = ckpt.read_training_state(ckpt.latest_training_state(tmp_path / "checkpoints"))
    assert set(st["modules"]) == {"gen", "disc"} and set(st["ema"]) == {"gen"} and st["step"] == 3


# ---- log.csv: each metric averaged over the steps that returned it ----

def test_metric_reported_on_some_steps_is_logged_at_its_true_mean(tmp_path):
    k = 3                                               # like Presto-S's generator turn: 1 step in k

    def sparse(ctx, batch, step):
        return {"loss": 1.0, **({"rare": float(step)} if step % k == k - 1 else {})}
    run(tmp_path / "wide", step_fn=sparse, max_steps=12, log_every=6)
    rows = log_rows(tmp_path / "wide")
    assert [float(r["loss"]) for r in rows] == [1.0, 1.0]
    assert [float(r["rare"]) for r in rows] == [(2 + 5) / 2, (8 + 11) / 2], "not divided by the whole window"
    run(tmp_path / "narrow", step_fn=sparse, max_steps=6, log_every=2)   # windows {0,1}, {2,3}, {4,5}
    assert [r["rare"] for r in log_rows(tmp_path / "narrow")] == ["", "2", "5"], "no report: an empty cell"


# ---- NaN guard ----

def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poisoned(ctx, batch, step):
        if step == 4:
            batch = {"x": batch["x"] * float("nan")}
        return gan_step(ctx, batch, step)
    good = run(tmp_path / "good", max_steps=3)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*newest complete checkpoint \(step 3, checksums verified\)"):
        run(tmp_path / "bad", step_fn=poisoned, max_steps=10)
    st = ckpt.read_training_state(ckpt.latest_training_state(tmp_path / "bad" / "checkpoints"))
    assert st["step"] == 3
    for k, m in good.raw.items():
        for n, p in m.state_dict().items():
            assert torch.equal(st["modules"][k][n], p)


def test_nan_metric_without_backward_is_caught(tmp_path):
    with pytest.raises(NonFiniteLossError, match="kl.*before any complete checkpoint was written"):
        run(tmp_path, step_fn=lambda c, b, s: {"kl": float("inf")})


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="not among modules"):
        mods, opts = players()
        train(gan_step, modules=mods, optimizers=opts, dataset=Noisy(),
              cfg=TrainConfig(run_dir=str(tmp_path), max_steps=1, batch_size=2), ema=["nope"])
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(run_dir=str(tmp_path), max_steps=1, batch_size=2, amp="fp8")


# ---- DDP: 2 processes (gloo) == 1 process with the same global batch ----

DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from presto_lib.train import TrainConfig, cleanup_distributed, train
    torch.set_num_threads(1)

    class Reg(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(1)
            self.x = torch.randn(32, 4, generator=g)
            self.y = self.x @ torch.randn(4, 2, generator=g)
        def __len__(self): return 32
        def __getitem__(self, i): return {"x": self.x[i], "y": self.y[i]}

    def step_fn(ctx, batch, step):
        loss = ((ctx.modules["net"](batch["x"]) - batch["y"]) ** 2).mean()
        ctx.backward_and_step(loss, "net")
        return {"loss": loss}

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    ctx = train(step_fn, modules={"net": net}, optimizers={"net": torch.optim.AdamW(net.parameters(), lr=1e-2)},
                dataset=Reg(), cfg=TrainConfig(run_dir=sys.argv[1], max_steps=12, batch_size=8, grad_clip=0.5,
                                               log_every=4), ema=["net"])
    if ctx.is_main:
        torch.save({"net": ctx.raw["net"].state_dict(), "ema": ctx.ema["net"].state_dict()}, sys.argv[1] + "/w.pt")
    cleanup_distributed()
""")


def test_ddp_two_processes_match_one(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (torch.load(tmp_path / d / "w.pt", weights_only=True) for d in ("one", "two"))
    for part in ("net", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], atol=1e-5, rtol=1e-4)
    la = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "one" / "log.csv"))]
    lb = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "two" / "log.csv"))]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    assert la[-1] < la[0]
