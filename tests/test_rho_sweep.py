"""Fig. 9's sampler (A.5): one latent code (start noise + every re-noise) reused for every rho."""
import numpy as np
import pytest
import torch

from presto_lib.diffusion.sampling import sample_pingpong
from presto_lib.distill.presto_s import pingpong_sigmas
from presto_lib.eval.rho_sweep import NoiseBank, distance_to_reference, generator_rho_sweep, rho_sweep, sample_with_bank

C2 = 0.25   # data ~ N(0, C2 I): the exact denoiser is E[x0 | x_sigma] = C2 / (C2 + sigma^2) x


def gauss(x, s):
    return C2 / (C2 + s.reshape(-1, 1, 1) ** 2) * x


def sched(rho):
    return pingpong_sigmas(4, rho=rho)


def test_bank_is_per_seed_and_batch_independent():
    a, b = NoiseBank.draw((3, 8), [3, 5], steps=4), NoiseBank.draw((3, 8), [5], steps=4)
    assert a.steps == 4 and len(a.renoise) == 3 and a.start.shape == (2, 3, 8)
    assert torch.equal(a.start[1], b.start[0]) and all(torch.equal(x[1], y[0]) for x, y in zip(a.renoise, b.renoise))
    assert not torch.equal(a.start[0], a.start[1]) and not torch.equal(a.start, a.renoise[0])


def test_sample_with_bank_matches_hand_written_pingpong():
    bank, sig = NoiseBank.draw((2, 16), [0, 1, 2], steps=4), sched(7.0)
    x = bank.start * sig[0]                       # x_N = sigma_max eps_0, then mu + s' eps_i (sec. 3.1)
    for i in range(4):
        x = gauss(x, sig[i].expand(3))
        if i < 3:
            x = x + sig[i + 1] * bank.renoise[i]
    assert torch.allclose(sample_with_bank(gauss, bank, sig), x, atol=1e-6)


def test_same_rho_identical_different_rho_differs():
    bank = NoiseBank.draw((2, 16), [0, 1, 2, 3], steps=4)
    out = rho_sweep(gauss, bank, [7.0, 7.0, 1000.0, 3.0], sched)
    again = rho_sweep(gauss, bank, [7.0], sched)
    assert torch.equal(out[7.0], again[7.0])
    assert not torch.allclose(out[7.0], out[1000.0], atol=1e-3) and not torch.allclose(out[7.0], out[3.0], atol=1e-3)
    other = rho_sweep(gauss, NoiseBank.draw((2, 16), [9, 10, 11, 12], steps=4), [7.0], sched)
    d = distance_to_reference({**out, 99.0: other[7.0]}, ref_rho=7.0)
    d = d.set_index("rho")
    assert d.loc[7.0, "distance"] == 0.0
    # a new latent code moves the output further than a new rho with the same code does
    assert d.loc[99.0, "relative"] > d.loc[1000.0, "relative"] > 0


def test_pingpong_noises_validated_and_default_unchanged():
    x, sig = torch.randn(2, 1, 4), sched(7.0)
    with pytest.raises(ValueError, match="noises"):
        sample_pingpong(gauss, x, sig, noises=[torch.randn(2, 1, 4)], disable=True)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ref = sample_pingpong(gauss, x, sig, generator=g1, disable=True)
    zs = [torch.randn(x.shape, generator=g2) for _ in range(3)]
    assert torch.equal(sample_pingpong(gauss, x, sig, noises=zs, disable=True), ref)


def test_distance_to_reference_numbers():
    ref = np.array([[0.0, 0.0], [3.0, 4.0]])                    # codes 5 apart
    out = {7.0: ref, 20.0: ref + [[0.0, 1.0], [0.0, 3.0]]}
    d = distance_to_reference(out).set_index("rho")
    assert d.loc[20.0, "distance"] == pytest.approx(2.0) and d.loc[20.0, "distance_max"] == pytest.approx(3.0)
    assert d.loc[20.0, "between_codes"] == pytest.approx(5.0) and d.loc[20.0, "relative"] == pytest.approx(0.4)
    d2 = distance_to_reference(out, embed=lambda v: 2 * np.asarray(v)).set_index("rho")
    assert d2.loc[20.0, "distance"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="reference rho"):
        distance_to_reference(out, ref_rho=1.0)


def test_generator_rho_sweep_conditions_the_generator():
    class T2M:
        latent_shape, device = (2, 8), torch.device("cpu")

        def conditions(self, captions, bpms):
            return {"bpm": torch.tensor(bpms)}, None
    seen = []

    def G(x, s, cond):
        seen.append(cond["bpm"].tolist())
        return gauss(x, s) + cond["bpm"].reshape(-1, 1, 1)
    out = generator_rho_sweep(T2M(), G, ["a", "b"], [1.0, 2.0], [0, 1], [7.0, 100.0], sched)
    assert set(out) == {7.0, 100.0} and out[7.0].shape == (2, 2, 8) and seen[0] == [1.0, 2.0] and len(seen) == 8
    bank = NoiseBank.draw((2, 8), [0, 1], 4)
    expect = sample_with_bank(lambda x, s: gauss(x, s) + torch.tensor([1.0, 2.0]).reshape(-1, 1, 1), bank, sched(7.0))
    assert torch.allclose(out[7.0], expect)


def test_per_seed_distance_pairs_each_seed_with_itself():
    from presto_lib.eval.rho_sweep import per_seed_distance
    out = {7.0: np.array([[0.0, 0.0], [1.0, 1.0]]), 1000.0: np.array([[3.0, 4.0], [1.0, 1.0]])}
    assert per_seed_distance(out, 1000.0, 7.0).tolist() == [5.0, 0.0]        # seed 1 unchanged, seed 0 moved 5
    assert per_seed_distance(out, 1000.0, 7.0, embed=lambda x: 2 * x).tolist() == [10.0, 0.0]
    with pytest.raises(ValueError, match="not among"):
        per_seed_distance(out, 100.0, 7.0)
