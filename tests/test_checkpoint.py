"""Checkpoints: safetensors + JSON round trips, no pickle anywhere, atomic last-good training states."""
import json
import pickle

import numpy as np
import pytest
import torch

from presto_lib import checkpoint as ckpt


def test_model_checkpoint_round_trip(tmp_path):
    sd = {"w": torch.randn(3, 4), "b": torch.arange(5), "s": torch.tensor(2.5)}
    ckpt.save_checkpoint(tmp_path / "m", sd, {"latent_dim": 8, "strides": [2, 4]})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    tensors, config = ckpt.load_checkpoint(tmp_path / "m")
    assert config == {"latent_dim": 8, "strides": [2, 4]}
    assert tensors.keys() == sd.keys() and all(torch.equal(tensors[k], sd[k]) for k in sd)


def test_shared_storage_and_views_are_saved(tmp_path):
    """Tied / view tensors would make raw safetensors refuse; we copy them apart."""
    w = torch.randn(4, 4)
    ckpt.save_checkpoint(tmp_path, {"a": w, "b": w, "c": w[1:, :2]}, {})
    t, _ = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(t["a"], w) and torch.equal(t["c"], w[1:, :2])


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ckpt.load_checkpoint(tmp_path)
    with pytest.raises(TypeError):
        ckpt.save_checkpoint(tmp_path / "x", {"w": torch.ones(1)}, {"bad": object()})
    assert not (tmp_path / "x" / "model.safetensors").exists(), "weights written although the config was invalid"
    with pytest.raises(ValueError, match="not tensors"):
        ckpt.save_checkpoint(tmp_path / "y", {"w": [1.0]}, {})


def test_files_are_not_pickles(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"w": torch.ones(2)}, {"a": 1})
    for f in tmp_path.iterdir():
        with pytest.raises(Exception):
            pickle.loads(f.read_bytes())


def test_optimizer_state_round_trip():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.99))
    for _ in range(3):
        net(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
    tensors, meta = ckpt.optimizer_to_flat(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # it must survive JSON
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    opt2.load_state_dict(ckpt.optimizer_from_flat(tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])


def test_rng_state_round_trip():
    st = json.loads(json.dumps(ckpt.get_rng_state()))
    want = (np.random.rand(3), torch.rand(3), __import__("random").random())
    ckpt.set_rng_state(st)
    got = (np.random.rand(3), torch.rand(3), __import__("random").random())
    assert np.array_equal(want[0], got[0]) and torch.equal(want[1], got[1]) and want[2] == got[2]


def _write_state(d, step, value):
    tmp = ckpt.begin_training_state(d, step)
    ckpt.write_rng(tmp, 0)
    ckpt.write_training_state(tmp, step=step, modules={"net": {"w": torch.full((2,), float(value))}},
                              ema={}, optimizers={}, meta={"v": value})
    return tmp


def test_training_state_last_good_semantics(tmp_path):
    assert ckpt.latest_training_state(tmp_path) is None
    for s in (10, 20, 30):
        ckpt.commit_training_state(tmp_path, _write_state(tmp_path, s, s), s, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000020", "step_00000030"]
    # a save killed half-way (temp folder written, never committed) must not be picked up
    _write_state(tmp_path, 40, 40)
    latest = ckpt.latest_training_state(tmp_path)
    assert latest.name == "step_00000030"
    st = ckpt.read_training_state(latest)
    assert st["step"] == 30 and st["meta"] == {"v": 30} and torch.equal(st["modules"]["net"]["w"], torch.full((2,), 30.0))
    assert set(st["rng"]) == {0}
