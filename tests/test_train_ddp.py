"""Layer dropping under DDP (2 gloo processes on CPU): dropped blocks must not stall the reduction, and training
on 2 ranks must equal 1 process with the same global batch (ASE and Presto-L fine-tune steps, sec. 3.3)."""
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from presto_lib.diffusion.score_model import build_score_model
from presto_lib.distill.layer_drop import inference_quantile
from presto_lib.distill.presto_l import LayerDropModel, presto_l_loss, variant_config
from presto_lib.distill.optim import PlayerOptimConfig, build_optimizers
from presto_lib.distill.presto_ls import LayerDropScore, build_setup, reduced_layer_config
from presto_lib.distill.presto_s import FakeScore, PrestoSConfig
from presto_lib.distill.discriminator import make_head
from presto_lib.train import TrainConfig, skips_parameters, train
from weights import snapshot

C, DEPTH, STEPS, BATCH = 4, 4, 4, 4          # D3 scaled to 4 blocks: [2, 2, 1, 1, 0] dropped per quintile
VARIANTS = ("ase", "presto_l")


class FixedNoise(Dataset):
    """Latents with their own sigma and noise, so a sample's loss does not depend on which rank draws it.

    Items 0-5 sit in the highest-noise quintile, 6-7 in the lowest: with batch 4 split over 2 ranks, a rank
    holding only high-noise items drops blocks that a rank holding a low-noise item runs.
    """

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, C, 8, generator=g)
        self.noise = torch.randn(8, C, 8, generator=g)
        u = torch.tensor([0.05, 0.1, 0.15, 0.02, 0.08, 0.12, 0.9, 0.99])
        self.sigma = inference_quantile(u).float()
        self.text, self.bpm = torch.randn(8, 3, 8, generator=g), torch.linspace(60, 180, 8)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": self.x[i], "noise": self.noise[i], "sigma": self.sigma[i], "text": self.text[i],
                "text_mask": torch.ones(3, dtype=torch.bool), "bpm": self.bpm[i]}


def _base():
    torch.manual_seed(0)
    base = build_score_model(dict(in_channels=C, hidden_size=16, depth=DEPTH, num_heads=2, text_dim=8))
    with torch.no_grad():   # random AdaLN / output layers so every block and the budget modules get gradients
        for mod in [b.adaLN_modulation[-1] for b in base.net.blocks] + [base.net.final_layer.linear]:
            mod.weight.normal_(0, 0.1)
    return base


def _model(variant):
    return LayerDropModel(_base(), variant_config(variant, cond_dropout=0.0))


def _presto_l_reduced():
    return LayerDropModel(_base(), reduced_layer_config(variant_config("presto_l", cond_dropout=0.0)))


def _train(variant, run_dir):
    """STEPS Adam steps of `variant`'s DSM (+ self-teacher) loss on FixedNoise; returns the final weights.

    Adam's eps is raised to 1e-4: zero-initialised budget modules get gradients ~1e-10 in the first steps, which
    Adam at eps 1e-8 would blow up into full-size steps, turning float round-off into visible differences.
    """
    model = _model(variant)
    cfg = model.cfg

    def step(ctx, batch, i):
        cond = {k: batch[k] for k in ("text", "text_mask", "bpm")}
        loss, logs = presto_l_loss(ctx.modules["model"], batch["x"], cond, cfg, sigma=batch["sigma"],
                                   noise=batch["noise"])
        ctx.backward_and_step(loss, "model")
        return logs

    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-4)
    ctx = train(step, modules={"model": model}, optimizers={"model": opt},
                dataset=FixedNoise(), cfg=TrainConfig(run_dir=str(run_dir), max_steps=STEPS, batch_size=BATCH,
                                                      grad_clip=None, amp="none", log_every=1, ckpt_every=100))
    return snapshot(ctx.raw["model"])


def _train_lfake(run_dir, use_gan):
    """A few Algorithm 1 iterations of the L-Fake/Real setup: G_phi, mu_psi and mu_real all drop layers (A.4);
    without the GAN term a fake turn leaves D_psi unused as well."""
    ps = build_setup("ls_lfake", _base(), presto_l=_presto_l_reduced(),
                     s_cfg=PrestoSConfig(fake_updates=2, use_gan=use_gan),
                     head_channels=8)
    opts = build_optimizers(ps, PlayerOptimConfig(lr_generator=1e-3, lr_fake=1e-3))

    def step(ctx, batch, i):
        cond = {k: batch[k] for k in ("text", "text_mask", "bpm")}
        return ps.step(batch["x"], cond, i, ctx.backward_and_step, players=ctx.modules)

    ctx = train(step, modules=ps.modules(), optimizers=opts, dataset=FixedNoise(), frozen={"real": ps.real},
                cfg=TrainConfig(run_dir=str(run_dir), max_steps=6, batch_size=BATCH, amp="none", ckpt_every=100))
    return snapshot(ctx.raw["generator"])


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for v in VARIANTS:
            state = _train(v, os.path.join(out_dir, f"ddp_{v}"))
            if rank == 0:
                torch.save(state, os.path.join(out_dir, f"{v}.pt"))
        for gan in (True, False):
            state = _train_lfake(os.path.join(out_dir, f"ddp_lfake_{gan}"), gan)
            if rank == 0:
                torch.save(state, os.path.join(out_dir, f"lfake_{gan}.pt"))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_layer_dropping_modules_ask_ddp_for_unused_parameters():
    model = _model("presto_l")
    assert skips_parameters(model) and skips_parameters(LayerDropScore(model))
    assert skips_parameters(FakeScore(LayerDropScore(model), make_head("presto", 16)))
    assert not skips_parameters(model.precond)                       # a full-depth score model uses every weight


def test_two_process_layer_dropping_equals_one_process(tmp_path):
    """2 gloo ranks x 2 samples == 1 process x 4 samples, for ASE and Presto-L (blocks dropped on one rank only);
    the L-Fake/Real Presto-LS setup (every player drops layers) trains on 2 ranks without stalling."""
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        assert k not in os.environ, "run the test suite without torchrun"
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    t0 = time.monotonic()
    while not ctx.join(timeout=5):                 # True once every worker has exited (raises if one failed)
        if time.monotonic() - t0 > 120:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish in 120 s")
    torch.set_num_threads(1)
    for v in VARIANTS:
        one = _train(v, tmp_path / f"one_{v}")
        two = torch.load(tmp_path / f"{v}.pt", weights_only=True)
        start = _model(v).state_dict()
        moved = [k for k in one if not torch.equal(one[k], start[k])]
        assert any(".blocks.0." in k for k in moved) and any("budget" in k for k in moved) == (v == "presto_l")
        for k in one:
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=f"{v}: {k}")
    start = _presto_l_reduced().state_dict()
    for gan in (True, False):
        lfake = torch.load(tmp_path / f"lfake_{gan}.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in lfake.values())
        assert any(not torch.equal(lfake[k], start[k]) for k in start)       # the generator was updated
