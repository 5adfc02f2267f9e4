"""The Presto-S stage: Algorithm 1 in the shared training loop, heads, discrete budgets, run configs."""
import pytest
import torch

from presto_lib.distill.presto_s import PrestoSConfig, pingpong_sigmas
from weights import changed, snapshot

torch.set_num_threads(1)


# ---- the stage: Algorithm 1 in the shared training loop ------------------------------------------------

def test_stage_runs_algorithm1_in_the_training_loop(tmp_path, tiny_world):
    import pandas as pd

    from presto_lib.distill.generator import build_presto_s
    from presto_lib.stages.presto_s import distill

    w = tiny_world(tmp_path)
    ps, _ = build_presto_s(w / "base", PrestoSConfig(), {"n_down": 1}, "cpu")
    real0, g0 = snapshot(ps.real), snapshot(ps.G)
    assert all(torch.equal(g0[k], v) for k, v in real0.items())                # G starts at the base weights
    storage = lambda m: {p.data_ptr() for p in m.parameters()}
    assert not (storage(ps.G) & storage(ps.real)) and not (storage(ps.fake) & storage(ps.real))
    train = {"iterations": 12, "batch_size": 4, "crop_frames": 8, "lr_generator": 1e-3, "lr_fake": 1e-3,
             "optimizer": "dmd2", "grad_clip": 10.0, "ema_decay": 0.0, "ckpt_every": 12, "log_every": 1,
             "checkpoint_blocks": True}
    ctx = distill(ps, w / "latents", w / "run", train, seed=0)
    log = pd.read_csv(w / "run" / "log.csv")
    assert log.generator_turn.tolist() == ([0.0] * 5 + [1.0]) * 2
    assert not changed(real0, ps.real) and changed(g0, ps.G)
    assert set(ctx.raw) == {"generator", "fake"} and set(ctx.frozen) == {"real"}
    # the `optimizer` preset reaches both players (DMD2: AdamW 0.9/0.999, wd 0.01), checkpointing both DiTs
    for name in ("generator", "fake"):
        o = ctx.optimizers[name]
        assert type(o) is torch.optim.AdamW and o.param_groups[0]["weight_decay"] == 0.01
    assert ps.G.net.checkpoint_blocks and ps.fake.score.net.checkpoint_blocks
    with pytest.raises(ValueError, match="optimizer"):
        distill(ps, w / "latents", w / "run2", {**train, "optimizer": "sgd"}, seed=0)


def test_stage_heads_and_discrete_budgets(tmp_path, tiny_world):
    from presto_lib.distill.discriminator import DiscriminatorHead, DMD2Head
    from presto_lib.distill.generator import build_presto_s
    from presto_lib.stages.presto_s import sample_steps

    w = tiny_world(tmp_path)
    assert type(build_presto_s(w / "base", PrestoSConfig(), {"n_down": 1})[0].fake.head) is DiscriminatorHead
    assert type(build_presto_s(w / "base", PrestoSConfig(disc_head="dmd2"), {"n_down": 1})[0].fake.head) is DMD2Head
    # a discrete_k model is sampled at its own k steps only; a continuous curve run at every budget
    assert sample_steps(PrestoSConfig(discrete_levels=2), 4, [1, 2, 3, 4], True) == ([2], 2)
    assert sample_steps(PrestoSConfig(discrete_levels=4), 4, [1, 2, 3, 4], True) == ([4], 4)
    assert sample_steps(PrestoSConfig(), 4, [1, 2, 3, 4], True) == ([1, 2, 3, 4], 4)
    assert sample_steps(PrestoSConfig(), 4, [1, 2], False) == ([4], 4)


def test_run_config_merges_profile_layers():
    from presto_lib.distill.generator import schedule
    from presto_lib.stages.presto_s import run_config

    P = {"edm": {"sigma_max": 40.0}, "presto_s": {"algorithm": {"p_gen": "inf", "nu1": 0.5},
                                                 "runs": {"a": {"p_gen": "train"}, "b": None}}}
    c = run_config("a", P)
    assert (c.p_gen, c.nu1, c.sigma_max) == ("train", 0.5, 40.0)
    assert run_config("b", P).p_gen == "inf"
    with pytest.raises(ValueError, match="unknown Presto-S run"):
        run_config("zzz", P)
    d = PrestoSConfig(discrete_levels=4)
    assert set(schedule(d, 3)[:-1].tolist()) <= set(pingpong_sigmas(4)[:-1].tolist())
