"""Plumbing under the training loop: distributed set-up, the deterministic data order and the CSV log.

`presto_lib.train` re-exports every public name here, so `from presto_lib.train import setup_distributed` keeps
working; this module never imports the loop.
"""
from __future__ import annotations

import csv
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler
from presto_lib.atomic import atomic_path

__all__ = ["setup_distributed", "cleanup_distributed", "StepSampler", "seeded", "SeededDataset", "CSVLog",
           "MetricWindow"]


# ---------------------------------------------------------------------------------------------
# Distributed set-up (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; nothing set = one process)
# ---------------------------------------------------------------------------------------------

def setup_distributed() -> tuple[int, int, torch.device]:
    """Init the process group when launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def cleanup_distributed() -> None:
    """Destroy the process group (call at the end of a torchrun script)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _barrier(world: int) -> None:
    """Wait for every rank (no-op for one process)."""
    if world > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Deterministic, resumable data order
# ---------------------------------------------------------------------------------------------

class StepSampler(Sampler):
    """Yields this rank's (index, position) pairs for global steps start..stop-1 (see `presto_lib.train`)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int, start: int, stop: int):
        if n < 1:
            raise ValueError("the training dataset is empty")
        if batch_size % world:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world size {world}")
        self.n, self.bs, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.start, self.stop, self._perm = start, stop, (None, None)

    def index(self, pos: int) -> int:
        """Dataset index at global sample position `pos` (epoch e = a seeded permutation)."""
        epoch = pos // self.n
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._perm[1][pos % self.n]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per = self.bs // self.world
        for s in range(self.start, self.stop):
            first = s * self.bs + self.rank * per
            yield [(self.index(p), p) for p in range(first, first + per)]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


@contextmanager
def seeded(seed: int):
    """Run a block under python/numpy/torch RNGs seeded with `seed`, restoring the outer states after."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class SeededDataset(Dataset):
    """Fetches item `index` under RNGs seeded from (seed, position): dataset randomness resumes exactly."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed = ds, seed

    def __getitem__(self, item: tuple[int, int]):
        idx, pos = item
        with seeded((self.seed * 1_000_003 + pos) % 2**63):
            return self.ds[idx]

    def __len__(self) -> int:
        return len(self.ds)


# ---------------------------------------------------------------------------------------------
# Metric means over a log window
# ---------------------------------------------------------------------------------------------

class MetricWindow:
    """Per-metric means over the steps of a log window that reported that metric.

    A step function may return a metric on some steps only (Presto-S's generator-turn losses, 1 step in
    fake_updates + 1, Algorithm 1 line 4; GAN losses after a warm-up): its mean is over the steps that
    returned it, not the whole window, and a window where no step returned it has no value for it.
    """

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0                           # steps in the window, reporting or not

    def add(self, metrics: dict[str, float]) -> None:
        """Accumulate one step's metrics."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1

    def means(self) -> dict[str, float]:
        """Each metric's mean over the steps that reported it."""
        return {k: v / self.counts[k] for k, v in self.sums.items()}


# ---------------------------------------------------------------------------------------------
# CSV log (wide; the header grows when a new metric appears, e.g. GAN losses after warm-up)
# ---------------------------------------------------------------------------------------------

class CSVLog:
    """Append-only metrics table at <run_dir>/log.csv (rank 0 writes; a metric missing from a row is empty)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.rows: list[dict[str, str]] = []
        if path.exists():  # drop rows a killed run logged after its last checkpoint
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        self.cols = list(dict.fromkeys(k for r in self.rows for k in r)) or ["step"]
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.cols)
            w.writeheader()
            w.writerows(self.rows)

    def append(self, row: dict[str, float]) -> None:
        row = {k: f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in row.items()}
        self.rows.append(row)
        if set(row) - set(self.cols):
            self.cols += [k for k in row if k not in self.cols]
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.cols).writerow(row)
