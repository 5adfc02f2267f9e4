"""Fault injection on training states: corrupt, truncated or missing checkpoint files, fsync order, NaN guard.

Each case is a probe that once failed (unreadable checkpoints, a resume that silently reseeded); the assertions
check what is on disk and what the resumed run computes, not just that an error was raised.
"""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from presto_lib import checkpoint as ckpt
from presto_lib.train import NonFiniteLossError, TrainConfig, train

torch.set_num_threads(1)


class Toy(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return self.x[i] + torch.from_numpy(np.random.randn(3).astype(np.float32)) * 0.1


def _step(ctx, x, step, nan_at=None):
    y = ctx.modules["net"](x + 0.1 * torch.randn_like(x))
    loss = (y - x).pow(2).mean() * (float("nan") if step == nan_at else 1.0)
    ctx.backward_and_step(loss, "net")
    return {"loss": loss}


def _train(run_dir, **kw):
    step = kw.pop("step_fn", _step)
    torch.manual_seed(0)
    net = nn.Linear(3, 3)
    cfg = TrainConfig(**{"run_dir": str(run_dir), "max_steps": 8, "batch_size": 4, "ckpt_every": 2,
                         "log_every": 1, **kw})
    return train(step, modules={"net": net}, optimizers={"net": torch.optim.AdamW(net.parameters(), lr=1e-2)},
                 dataset=Toy(), cfg=cfg, ema=["net"])


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p):   # same length, a few bytes overwritten: only the checksum can tell
    b = bytearray(p.read_bytes())
    b[-8:] = bytes(x ^ 0xFF for x in b[-8:])
    p.write_bytes(bytes(b))


CORRUPTIONS = {
    "modules.safetensors": _truncate,
    "ema.safetensors": lambda p: p.write_bytes(os.urandom(p.stat().st_size)),
    "optim.safetensors": _flip,
    "state.json": lambda p: p.write_text("{not json"),
    "rng_rank0.json": lambda p: p.unlink(),
    "manifest.json": lambda p: p.write_text("[]"),
}


@pytest.mark.parametrize("bad", sorted(CORRUPTIONS))
def test_corrupt_latest_state_falls_back_to_the_previous_complete_one(tmp_path, bad):
    full = _train(tmp_path / "full")
    _train(tmp_path / "run", stop_after=6)
    d = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in d.glob("step_*")) == ["step_00000004", "step_00000006"]
    CORRUPTIONS[bad](d / "step_00000006" / bad)
    with pytest.warns(UserWarning, match=rf"step_00000006.*{bad.replace('.', '[.]')}") as rec:
        resumed = _train(tmp_path / "run")
    assert any("resuming from the older complete state" in str(w.message) and "step_00000004" in str(w.message)
               for w in rec)
    for a, b in ((full.raw["net"], resumed.raw["net"]), (full.ema["net"], resumed.ema["net"])):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), n
    assert ckpt.latest_training_state(d).name == "step_00000008"
    assert sorted(p.name for p in d.glob("step_*")) == ["step_00000006", "step_00000008"]
    ckpt.verify_training_state(d / "step_00000006")      # the re-saved step 6 replaced the corrupt one


def test_no_usable_state_is_an_error_naming_the_file(tmp_path):
    _train(tmp_path, stop_after=2)
    f = tmp_path / "checkpoints" / "step_00000002" / "modules.safetensors"
    _truncate(f)
    with pytest.raises(ckpt.CorruptCheckpointError, match=str(f).replace(".", "[.]")), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(tmp_path)
    ckpt.save_checkpoint(tmp_path / "m", {"w": torch.ones(3)}, {"a": 1})
    _truncate(tmp_path / "m" / "model.safetensors")
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"m/model\.safetensors is corrupt"):
        ckpt.load_checkpoint(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"m/config\.json is not valid JSON"):
        ckpt.read_json(tmp_path / "m" / "config.json")


def test_every_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    synced, order = set(), []
    real_sync, real_replace = ckpt._fsync_file, os.replace
    monkeypatch.setattr(ckpt, "_fsync_file", lambda p: (synced.add(Path(p)), real_sync(p)))
    monkeypatch.setattr(ckpt.json, "dump", lambda obj, f, **kw: (f.write(json.dumps(obj, **kw)),
                                                                 synced.add(Path(f.name))))
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append((Path(a), Path(b))), real_replace(a, b)))
    _train(tmp_path, max_steps=2)
    files = [(a, b) for a, b in order if not b.name.startswith("step_") and b.name != "log.csv"]  # state files
    assert {b.name for _, b in files} >= {"modules.safetensors", "ema.safetensors", "optim.safetensors",
                                          "state.json", "rng_rank0.json", "manifest.json", "latest.json"}
    assert all(a in synced for a, _ in files), [a for a, _ in files if a not in synced]


def test_legacy_state_without_rng_file_says_so(tmp_path):
    _train(tmp_path, stop_after=2)
    d = tmp_path / "checkpoints" / "step_00000002"
    (d / "manifest.json").unlink()                      # a state written before checksums
    (d / "rng_rank0.json").unlink()
    with pytest.warns(UserWarning, match="rng_rank0.json is missing: RNG streams reseeded"):
        _train(tmp_path, stop_after=1)


def test_nan_guard_says_which_checkpoint_exists(tmp_path):
    with pytest.raises(NonFiniteLossError, match="before any complete checkpoint was written"):
        _train(tmp_path / "a", step_fn=lambda c, x, s: _step(c, x, s, nan_at=0))
    _train(tmp_path / "b", stop_after=4)
    with pytest.raises(NonFiniteLossError, match=r"step 4, checksums verified.*resumed from it and failed on its "
                                                  r"first step"):
        _train(tmp_path / "b", step_fn=lambda c, x, s: _step(c, x, s, nan_at=4))
    with pytest.raises(NonFiniteLossError, match=r"step 6, checksums verified\) is \S+step_00000006$"):
        _train(tmp_path / "c", step_fn=lambda c, x, s: _step(c, x, s, nan_at=6))
