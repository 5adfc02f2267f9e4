"""benchmarks/bpm_probe.py's loss gap against the exact posterior-mean denoiser of Gaussian data whose mean is set
by the BPM: the gap has a closed form, and a denoiser blind to BPM scores exactly zero."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
N, A, V = 64, 4.0, 0.25        # clips (= frames: one-hot means), mean amplitude, data variance around the mean


def _bpm_probe():
    spec = importlib.util.spec_from_file_location("bpm_probe", ROOT / "benchmarks" / "bpm_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mean(bpm: torch.Tensor) -> torch.Tensor:
    """The data mean of a clip at `bpm`: A at frame bpm - 60, 0 elsewhere ([B, 1, N])."""
    return A * torch.nn.functional.one_hot((bpm - 60).long(), N).float()[:, None]


class GaussianDenoiser(torch.nn.Module):
    """E[x0 | x, bpm] for x0 ~ N(mean(bpm), V): mean + (x - mean) V / (V + sigma^2); `use_bpm=False` uses mean 0."""

    def __init__(self, use_bpm: bool = True):
        super().__init__()
        self.use_bpm = use_bpm

    def forward(self, x, sigma, cond):
        m = _mean(cond["bpm"]) if self.use_bpm else torch.zeros_like(x)
        k = (V / (V + sigma ** 2))[:, None, None]
        return m + (x - m) * k


def _data():
    torch.manual_seed(0)
    bpm = torch.arange(60, 60 + N).float()
    x0 = _mean(bpm) + V ** 0.5 * torch.randn(N, 1, N)
    return x0, {"text": torch.zeros(N, 2, 4), "text_mask": torch.ones(N, 2, dtype=torch.bool), "bpm": bpm}


def test_loss_gap_matches_the_closed_form_for_a_denoiser_that_reads_bpm():
    x0, cond = _data()
    gaps = _bpm_probe().bpm_loss_gap(GaussianDenoiser(), x0, cond, [0.2, 0.5, 1.0, 2.0])
    for s, g in gaps.items():
        # wrong-mean error (s^2 / (V + s^2))^2 * 2 A^2 / N per element over the true error V s^2 / (V + s^2)
        assert g == pytest.approx(s ** 2 * 2 * A ** 2 / (N * V * (V + s ** 2)), rel=0.15), s    # 20 seeds: worst 8 %


def test_loss_gap_is_zero_for_a_denoiser_blind_to_bpm():
    x0, cond = _data()
    gaps = _bpm_probe().bpm_loss_gap(GaussianDenoiser(use_bpm=False), x0, cond, [0.5, 2.0])
    assert all(g == 0.0 for g in gaps.values())
    with pytest.raises(ValueError, match="two clips"):
        _bpm_probe().bpm_loss_gap(GaussianDenoiser(), x0[:1], {k: v[:1] for k, v in cond.items()}, [1.0])
