"""The verdict rule against independent references: scipy.stats.bootstrap, metrics.fad/mmd, known effects."""
import numpy as np
import pytest
from scipy.stats import bootstrap, spearmanr

from presto_lib.eval import claims as C
from presto_lib.eval import claims_ledger as L
from presto_lib.eval.metrics import fad, median_bandwidth, mmd


def _cell(lo, hi, direction=1, name="x"):
    return C.Comparison(name, (lo + hi) / 2, lo, hi, direction, n=10)


# ---- the verdict ----

@pytest.mark.parametrize("lo,hi,direction,want", [
    (0.1, 0.5, 1, C.REPRODUCED), (-0.5, -0.1, 1, C.CONTRADICTED), (-0.1, 0.5, 1, C.UNRESOLVED),
    (-0.5, -0.1, -1, C.REPRODUCED), (0.1, 0.5, -1, C.CONTRADICTED), (-0.5, 0.1, -1, C.UNRESOLVED)])
def test_verdict_sides(lo, hi, direction, want):
    assert C.verdict(lo, hi, direction) == want


def test_verdict_against_a_threshold():
    assert C.verdict(12.0, 15.0, 1, null=10.0) == C.REPRODUCED
    assert C.verdict(6.0, 8.0, 1, null=10.0) == C.CONTRADICTED
    assert C.verdict(8.0, 12.0, 1, null=10.0) == C.UNRESOLVED
    with pytest.raises(ValueError):
        C.verdict(0.0, 1.0, 0)


def test_beats_signs():
    assert C.beats("FAD") == C.beats("MMD") == -1
    assert C.beats("CLAP (corpus)") == C.beats("Recall") == 1


# ---- per-clip paired difference ----

def _pair(rng, n, effect, noise=1.0, shared=2.0):
    """Per-clip values of two systems on the same prompts: a large prompt effect shared by both, plus noise."""
    p = shared * rng.normal(size=n)
    return p + effect + noise * rng.normal(size=n), p + noise * rng.normal(size=n)


def test_known_effect_reproduced_and_reversed_contradicted():
    rng = np.random.default_rng(0)
    a, b = _pair(rng, 200, 0.5)
    assert C.paired_diff_ci(a, b, direction=1).verdict == C.REPRODUCED
    assert C.paired_diff_ci(a, b, direction=-1).verdict == C.CONTRADICTED
    assert C.paired_diff_ci(b, a, direction=1).verdict == C.CONTRADICTED


def test_pairing_resolves_what_unpaired_spread_hides():
    rng = np.random.default_rng(1)
    a, b = _pair(rng, 100, 0.4, noise=0.3, shared=5.0)
    c = C.paired_diff_ci(a, b, direction=1)
    assert c.verdict == C.REPRODUCED
    assert c.half_width < 0.2 * 1.96 * 5.0 / np.sqrt(100)  # far tighter than the prompt-to-prompt spread


def test_null_effect_false_positive_rate_near_alpha():
    rng = np.random.default_rng(2)
    verdicts = [C.paired_diff_ci(*_pair(rng, 40, 0.0), direction=1, n_boot=500, seed=s).verdict for s in range(300)]
    rate = np.mean([v != C.UNRESOLVED for v in verdicts])
    assert 0.01 <= rate <= 0.12                       # nominal 0.05 (percentile intervals run a little liberal)
    assert np.mean([v == C.REPRODUCED for v in verdicts]) <= 0.08


def test_mean_difference_ci_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(3)
    a, b = _pair(rng, 60, 0.3)
    ours = C.paired_diff_ci(a, b, direction=1, n_boot=50000, seed=0)
    ref = bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                    n_resamples=50000, method="percentile", random_state=1).confidence_interval
    se = np.std(a - b, ddof=1) / np.sqrt(len(a))
    assert ours.estimate == pytest.approx(np.mean(a - b))
    assert ours.lo == pytest.approx(ref.low, abs=0.06 * se)  # Monte Carlo error of both ~0.017 se
    assert ours.hi == pytest.approx(ref.high, abs=0.06 * se)  # Monte Carlo error of both ~0.017 se


def test_two_level_bootstrap_widens_with_run_to_run_variance():
    rng = np.random.default_rng(4)
    n, s = 80, 4
    base = rng.normal(size=(s, n))
    calm = base + 0.3                                 # same effect in every run
    noisy = base + 0.3 + rng.normal(0, 1.0, size=(s, 1))  # each run shifted by its own offset
    ref = np.zeros((s, n)) + rng.normal(0, 0.01, size=(s, n))
    w_calm = C.paired_diff_ci(calm, ref, direction=1).half_width
    w_noisy = C.paired_diff_ci(noisy, ref, direction=1).half_width
    w_pooled = C.paired_diff_ci(noisy.mean(0), ref.mean(0), direction=1).half_width  # seeds ignored
    assert w_noisy > 3 * w_calm and w_noisy > 3 * w_pooled
    assert C.paired_diff_ci(noisy, ref, direction=1).seeds == s


def test_paired_diff_rejects_unpaired_inputs():
    with pytest.raises(ValueError):
        C.paired_diff_ci(np.zeros(10), np.zeros(11), direction=1)


# ---- every-cell semantics ----

def test_every_cell_rule():
    rep, unres, contra = _cell(0.1, 0.2), _cell(-0.1, 0.2), _cell(-0.3, -0.1)
    assert C.aggregate([rep, rep, rep]) == C.REPRODUCED
    assert C.aggregate([rep, rep, unres]) == C.UNRESOLVED            # a majority is not enough
    assert C.aggregate([rep, rep, contra]) == C.CONTRADICTED         # one contradicted cell
    assert C.aggregate([unres, contra]) == C.CONTRADICTED
    assert C.aggregate([]) == C.NOT_RUN
    assert C.aggregate([_cell(-0.3, -0.1, direction=-1), rep]) == C.REPRODUCED


# ---- set metrics ----

@pytest.mark.parametrize("n,m,d", [(30, 25, 6), (20, 24, 40), (26, 18, 40)])   # narrow (D x D) and wide (Gram) paths
def test_set_metric_replicates_equal_metrics_on_resampled_rows(n, m, d):
    rng = np.random.default_rng(5)
    g, r = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), rng.normal(size=(m, d)) + 0.5
    idx, idx_r = rng.integers(0, n, (4, n)), rng.integers(0, m, (4, m))
    got_f = C.set_metric_replicates([g], r, idx, idx_r, "FAD")[0]
    got_m = C.set_metric_replicates([g], r, idx, idx_r, "MMD")[0]
    sigma = median_bandwidth(r)
    assert got_f == pytest.approx([fad(g[i], r[j]) for i, j in zip(idx, idx_r)], rel=1e-7)
    assert got_m == pytest.approx([mmd(g[i], r[j], sigma=sigma) for i, j in zip(idx, idx_r)], rel=1e-7)


def _gauss_sets(rng, n=120, d=8, shift=0.0):
    ref = rng.normal(size=(n, d))
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift, ref


@pytest.mark.parametrize("metric", ["FAD", "MMD"])
def test_set_metric_bootstrap_detects_a_mean_shift(metric):
    rng = np.random.default_rng(6)
    a, b, ref = _gauss_sets(rng, shift=0.6)           # B drifts from the reference, A does not
    c = C.set_metric_diff_ci(a, b, ref, direction=C.beats(metric), metric=metric, n_boot=200)
    assert c.verdict == C.REPRODUCED and c.estimate < 0
    assert C.set_metric_diff_ci(b, a, ref, direction=C.beats(metric), metric=metric, n_boot=200).verdict \
        == C.CONTRADICTED


@pytest.mark.parametrize("metric", ["FAD", "MMD"])
def test_set_metric_bootstrap_null_is_mostly_unresolved(metric):
    rng = np.random.default_rng(7)
    hits = 0
    for s in range(30):                               # two equally good systems, both off the reference
        a, b, ref = _gauss_sets(rng, n=80, d=8)
        a, b = 1.3 * a + 0.4, 1.3 * b + 0.4
        hits += C.set_metric_diff_ci(a, b, ref, direction=-1, metric=metric, n_boot=150, seed=s).verdict \
            != C.UNRESOLVED
    assert hits <= 5                                  # ~alpha * 30 = 1.5 expected


def test_set_metric_two_runs_average_per_run_metric():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(2, 40, 3))
    b = rng.normal(size=(2, 40, 3)) + 1.0
    ref = rng.normal(size=(50, 3))
    c = C.set_metric_diff_ci(a, b, ref, direction=-1, n_boot=100)
    assert c.values[0] == pytest.approx(np.mean([fad(x, ref) for x in a]))
    assert c.seeds == 2 and c.verdict == C.REPRODUCED


# ---- trends and ratios ----

def test_trend_matches_spearman_and_detects_improvement():
    rng = np.random.default_rng(9)
    steps = np.array([1, 2, 4, 8])
    p = rng.normal(size=60)
    curve = np.stack([p - 0.5 * k + 0.5 * rng.normal(size=60) for k in range(4)])   # falls with steps
    flat = np.stack([p + 0.5 * rng.normal(size=60) for _ in range(4)])
    c = C.trend_ci(curve, steps, direction=-1)
    assert c.estimate == pytest.approx(spearmanr(curve.mean(1), steps)[0])
    assert c.verdict == C.REPRODUCED
    assert C.trend_ci(flat, steps, direction=-1).verdict == C.UNRESOLVED
    assert C.trend_ci(curve, steps, direction=-1, against=flat).verdict == C.REPRODUCED


def test_trend_on_set_metric():
    rng = np.random.default_rng(10)
    ref = rng.normal(size=(80, 4))
    sets = [rng.normal(size=(80, 4)) + s for s in (1.5, 1.0, 0.5, 0.0)]              # approaches the reference
    assert C.trend_ci(sets, [1, 2, 4, 8], ref=ref, direction=-1, n_boot=100).verdict == C.REPRODUCED


def test_ratio_claim():
    rng = np.random.default_rng(11)
    slow, fast = 5.0 * (1 + 0.05 * rng.normal(size=10)), 1.0 * (1 + 0.05 * rng.normal(size=10))
    assert C.ratio_ci(slow, fast, threshold=3.0).verdict == C.REPRODUCED
    assert C.ratio_ci(slow, fast, threshold=10.0).verdict == C.CONTRADICTED
    assert C.ratio_ci(slow, fast, threshold=5.0).verdict == C.UNRESOLVED


# ---- noise floor ----

def test_noise_floor_contains_zero_and_shrinks_with_prompts():
    rng = np.random.default_rng(12)
    small = C.noise_floor(rng.normal(size=50), rng.normal(size=50))
    big = C.noise_floor(rng.normal(size=800), rng.normal(size=800))
    assert small["lo"] < 0 < small["hi"]
    assert big["half_width"] == pytest.approx(small["half_width"] / 4, rel=0.3)   # 1/sqrt(16)
    assert C.prompts_needed(small["half_width"], 50, small["half_width"] / 2) == pytest.approx(200, abs=1)
    ref = rng.normal(size=(60, 3))
    f = C.noise_floor(rng.normal(size=(60, 3)), rng.normal(size=(60, 3)), ref, n_boot=100)
    assert f["lo"] < 0 < f["hi"] and f["between_seeds"] > 0


# ---- the ledger ----

def test_registry_holds_the_papers_claims_and_numbers():
    ids = [c.id for c in L.CLAIMS]
    assert ids[:13] == [f"C{i}" for i in range(1, 14)] and len(set(ids)) == len(ids)
    assert "0.37" in L.claim("C1").paper_evidence and "0.22" in L.claim("C1").paper_evidence
    assert "230.49" in L.claim("C10").paper_evidence and "Table 3" in L.claim("C10").paper_evidence
    assert "0.73" in L.claim("C8").paper_evidence


def test_ledger_files_and_readme(tmp_path):
    rng = np.random.default_rng(13)
    a, b = _pair(rng, 100, 0.5)
    res = [L.ClaimResult(L.claim("C2"), [C.paired_diff_ci(a, b, direction=1, name="CLAP")]),
           L.ClaimResult(L.claim("C4"), [C.paired_diff_ci(a, b, direction=1, name="CLAP"),
                                         C.paired_diff_ci(a[:10], b[:10] + 0.5, direction=1, name="FAD")]),
           L.not_run("C14", "no human ratings")]
    md, csv_path = L.write_ledger(res, tmp_path)
    rows = {r["id"]: r for r in L.read_ledger(csv_path)}
    assert tuple(next(iter(rows.values()))) == L.COLUMNS and len(rows) == len(L.CLAIMS)
    assert rows["C2"]["verdict"] == C.REPRODUCED and "n=100" in rows["C2"]["ours"]
    assert rows["C4"]["verdict"] == C.UNRESOLVED and "prompts" in rows["C4"]["why / what would resolve it"]
    assert rows["C14"]["verdict"] == C.NOT_RUN and "human" in rows["C14"]["why / what would resolve it"]
    assert rows["C1"]["verdict"] == C.NOT_RUN
    snippet = L.readme_snippet(csv_path)
    assert snippet.split("\n", 1)[1].rsplit("\n", 1)[0] in md.read_text()      # verbatim
    readme = f"# x\n{L.BEGIN}\nold\n{L.END}\ntail\n"
    assert L.splice_readme(readme, snippet) == f"# x\n{snippet}\ntail\n"
    with pytest.raises(ValueError):
        L.write_ledger([L.ClaimResult(L.Claim("C99", "", "", "", ""))], tmp_path)


# ---- cells from system embeddings ----

def test_metric_cells_every_metric_and_pairing_check():
    from presto_lib.eval.claims_cells import check_paired, metric_cells, per_clip_clap
    from presto_lib.eval.metrics import clap_score
    rng = np.random.default_rng(14)
    n, d = 100, 6
    ref = rng.normal(size=(n, d))
    text = rng.normal(size=(n, 4))
    prompts = [f"p{i}" for i in range(n)]
    good = {"audio": rng.normal(size=(n, d)), "clap": per_clip_clap(text + 0.5 * rng.normal(size=(n, 4)), text),
            "prompt": prompts}
    bad = {"audio": 0.3 * rng.normal(size=(n, d)) + 0.8,          # off the reference and less diverse
           "clap": per_clip_clap(text + 2 * rng.normal(size=(n, 4)), text), "prompt": prompts}
    assert per_clip_clap(text, text).mean() == pytest.approx(clap_score(text, text))
    cells = metric_cells(good, bad, ref, ("FAD", "MMD", "CLAP", "recall"), label="good vs bad", n_boot=100)
    assert [c.name for c in cells] == ["good vs bad FAD", "good vs bad MMD", "good vs bad CLAP", "good vs bad recall"]
    assert C.aggregate(cells) == C.REPRODUCED
    assert C.aggregate(metric_cells(good, bad, ref, ("FAD", "CLAP"), a_better=False, n_boot=100)) == C.CONTRADICTED
    with pytest.raises(ValueError, match="prompts differ"):
        check_paired(prompts, prompts[::-1])


# ---- the last-block variance spike (Figs. 4, 7: C5, C6) ----

class _FakeDiT:
    """A score model whose block outputs scale clip i's input by (block + 1) * gain[i] (the last block x3 more)."""

    def __init__(self, depth: int = 4, last: float = 3.0):
        self.depth, self.last = depth, last

    def __call__(self, x, sigma, cond, return_features=False):
        import torch
        h = x.transpose(1, 2) * cond["gain"][:, None, None]                       # [B, N, C]
        feats = [h * (i + 1) * (self.last if i == self.depth - 1 else 1.0) for i in range(self.depth)]
        return torch.zeros_like(x), feats


def test_per_clip_hidden_variance_and_spike_table():
    import torch
    from presto_lib.distill.layer_drop import hidden_variance
    from presto_lib.eval.claims_cells import per_clip_hidden_variance, spike_table
    x0, cond = torch.randn(5, 3, 16), {"gain": torch.arange(1.0, 6.0)}
    v = per_clip_hidden_variance(_FakeDiT(), x0, cond, [0.5, 2.0], torch.Generator().manual_seed(0))
    assert v.shape == (5, 2, 4)
    g = torch.Generator().manual_seed(0)                                          # same noise as the pooled statistic
    xs = [x0 + s * torch.randn(x0.shape, generator=g) for s in (0.5, 2.0)]
    for j, x in enumerate(xs):
        np.testing.assert_allclose(v[:, j, 0], (x.flatten(1) * cond["gain"][:, None]).var(1).numpy(), rtol=1e-5)
    pooled = hidden_variance(_FakeDiT(), x0, cond, [0.5, 2.0], torch.Generator().manual_seed(0)).numpy()
    assert pooled.shape == (2, 4) and pooled[:, -1] / pooled[:, -2] == pytest.approx([16, 16], rel=1e-5)   # (4 x 3 / 3)^2
    t = spike_table(v, [0.5, 2.0])
    assert len(t) == 10 and list(t.columns[:2]) == ["clip", "sigma"]
    np.testing.assert_allclose(t["spike ratio L / L-1"], 16, rtol=1e-5)
    with pytest.raises(ValueError):
        spike_table(v, [0.5])


def test_spike_cells_per_noise_level_and_model_difference():
    from presto_lib.eval.claims_cells import spike_cells, spike_diff_cells, spike_table
    rng = np.random.default_rng(0)
    base = np.exp(rng.normal(0, 0.3, (40, 3, 6))) * np.array([1, 1, 1, 1, 1, 8.0])     # 8x spike at every sigma
    flat = np.exp(rng.normal(0, 0.3, (40, 3, 6)))                                       # no spike
    tb, tf = spike_table(base, [0.1, 1, 10]), spike_table(flat, [0.1, 1, 10])
    cells = spike_cells(tb)
    assert [c.name.split(":")[0] for c in cells] == ["sigma 0.1", "sigma 1", "sigma 10"]
    assert all(c.verdict == C.REPRODUCED and c.n == 40 and abs(np.exp(c.estimate) - 8) < 2 for c in cells)
    assert C.aggregate(spike_cells(tf)) != C.REPRODUCED
    (d,) = spike_diff_cells(tf, tb)                      # the flat model's spike is smaller: the claim's direction
    assert d.direction == -1 and d.verdict == C.REPRODUCED and d.n == 40
    assert spike_diff_cells(tb, tf)[0].verdict == C.CONTRADICTED
    with pytest.raises(ValueError, match="same clips"):
        spike_diff_cells(tf.iloc[:-3], tb)
