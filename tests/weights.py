"""Snapshots of a module's weights, to test which players an update moved and which it left alone."""
from __future__ import annotations

import torch


def snapshot(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every tensor in `m.state_dict()`."""
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def changed(before: dict[str, torch.Tensor], m: torch.nn.Module) -> bool:
    """Whether any tensor of `m` differs from the snapshot `before`."""
    return any(not torch.equal(before[k], v) for k, v in m.state_dict().items())
