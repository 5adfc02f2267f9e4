"""CLAP rejection sampling (sec. 4.6, A.10): keep exactly the (1 - r) best by the ranking function."""
import math

import numpy as np
import pandas as pd
import pytest

from presto_lib.eval import metrics as M
from presto_lib.eval.rejection import check_rejection_claims, n_keep, reject, rejection_sweep


def brute_force(s, r):
    """Independent reference: sort (score desc, index asc), take n - floor(r n) (at least 1)."""
    k = max(1, len(s) - math.floor(r * len(s) + 1e-9))
    return sorted(sorted(range(len(s)), key=lambda i: (-s[i], i))[:k])


def test_keeps_exactly_the_best_with_deterministic_ties():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 10, 33):
        s = rng.integers(0, 4, n).astype(float)             # many ties
        for r in (0.0, 0.1, 0.25, 0.5, 0.7, 0.99):
            kept = reject(s, r)
            assert kept.tolist() == brute_force(list(s), r), (n, r)
            assert len(kept) == n_keep(n, r)
    assert reject([0.3, 0.1, 0.2], 0.0).tolist() == [0, 1, 2]           # r = 0 keeps all
    assert reject([0.5, 0.9, 0.5, 0.1], 0.5).tolist() == [0, 1]         # tie 0.5: the earlier one stays
    assert n_keep(10, 0.3) == 7 and n_keep(10, 0.0) == 10 and n_keep(3, 0.9) == 1


def test_groups_reject_inside_each_prompt():
    s = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.4, 0.3, 0.0])
    groups = ["a", "a", "a", "a", "b", "b", "b", "b"]
    assert reject(s, 0.5, groups).tolist() == [1, 2, 4, 5]
    assert reject(s, 0.5).tolist() == [1, 2, 4, 5]           # the same here by chance; now a case that differs
    assert reject(s + np.repeat([1.0, 0.0], 4), 0.5, groups).tolist() == [1, 2, 4, 5]
    assert reject(s + np.repeat([1.0, 0.0], 4), 0.5).tolist() == [0, 1, 2, 3]


def test_bad_input():
    with pytest.raises(ValueError):
        reject([0.1, 0.2], 1.0)
    with pytest.raises(ValueError):
        reject([0.1, np.nan], 0.5)
    with pytest.raises(ValueError):
        reject([0.1, 0.2], 0.5, groups=[0])


def synthetic(n=60, d=6, seed=0):
    """Candidates whose CLAP similarity is high when they sit near the reference's mode (quality ~ relevance)."""
    rng = np.random.default_rng(seed)
    ref = {"audio": rng.normal(size=(80, d))}
    audio = rng.normal(size=(n, d)) * 1.6
    text = rng.normal(size=(n, 4))
    far = np.linalg.norm(audio, axis=1)
    clap = text + (far[:, None] * 0.6) * rng.normal(size=(n, 4))      # far from the mode -> less relevant
    return {"audio": audio, "clap_audio": clap}, text, ref


def test_sweep_rows_equal_scoring_the_kept_subset():
    gen, text, ref = synthetic()
    df = rejection_sweep(gen, text, ref, ratios=[0.0, 0.25, 0.5, 0.75], mmd_sigma=2.0, k=3)
    assert df["r"].tolist() == [0.0, 0.25, 0.5, 0.75] and df["n_kept"].tolist() == [60, 45, 30, 15]
    cos = M.paired_cosine(gen["clap_audio"], text)
    for _, row in df.iterrows():
        keep = np.argsort(-cos, kind="stable")[: int(row["n_kept"])]
        assert row["CLAP (corpus)"] == pytest.approx(100 * cos[keep].mean())
        assert row["FAD"] == pytest.approx(M.fad(gen["audio"][keep], ref["audio"]))
        assert row["Recall"] == pytest.approx(M.prdc(ref["audio"], gen["audio"][keep], k=3)["recall"])
    assert df["CLAP (corpus)"].is_monotonic_increasing
    claims = check_rejection_claims(df).set_index("metric")
    assert claims.loc["CLAP (corpus)", "holds"] and claims.loc["Recall", "holds"]
    assert claims.loc["CLAP (corpus)", "r0"] == pytest.approx(df["CLAP (corpus)"].iloc[0])


def test_sweep_uses_a_custom_ranking_and_checks_sizes():
    gen, text, ref = synthetic(n=20)
    rank = -np.arange(20.0)                                    # prefer the first candidates
    df = rejection_sweep(gen, text, ref, ratios=[0.5], ranking=rank, k=3)
    assert df["FAD"].iloc[0] == pytest.approx(M.fad(gen["audio"][:10], ref["audio"]))
    with pytest.raises(ValueError, match="candidates"):
        rejection_sweep(gen, text[:5], ref)
    with pytest.raises(ValueError, match="at least 2"):
        rejection_sweep(gen, text, ref, ratios=[0.99], k=1)


def test_claims_table_reads_the_extreme_ratio():
    df = pd.DataFrame({"r": [0.0, 0.5], "CLAP (corpus)": [10.0, 12.0], "FAD": [5.0, 5.1], "MMD": [1.0, 0.9],
                       "Recall": [0.5, 0.4], "Coverage": [0.6, 0.6]})
    c = check_rejection_claims(df).set_index("metric")["holds"]
    assert c["CLAP (corpus)"] and not c["FAD"] and c["MMD"] and c["Recall"] and not c["Coverage"]
    assert check_rejection_claims(df, tolerance=0.05).set_index("metric")["holds"]["FAD"]


def test_evaluator_sweep_wires_the_evaluator():
    gen, text, ref = synthetic(n=12)

    class Ev:
        clap, k, clap_name = object(), 3, "CLAP (corpus)"

        def reference(self):
            return {**ref, "sigma": np.float64(2.0)}

        def embed(self, waves, sr):
            assert len(waves) == 12 and sr == 100
            return gen

        def text_embeddings(self, captions):
            return text[[int(c) for c in captions]]
    df = rejection_sweep(gen, text, ref, ratios=[0.0, 0.5], mmd_sigma=2.0, k=3)
    from presto_lib.eval.rejection import evaluator_sweep
    got = evaluator_sweep(Ev(), [np.zeros(5)] * 12, 100, [str(i) for i in range(12)], ratios=[0.0, 0.5])
    pd.testing.assert_frame_equal(got, df)


# ---- C11 cells: kept vs all, per prompt ----

def test_kept_vs_all_against_a_hand_computation():
    from presto_lib.eval.rejection import kept_vs_all
    clap = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 0.0])
    emb = np.array([[0.0], [1.0], [3.0], [0.0], [2.0], [6.0]])
    t = kept_vs_all(clap, emb, [0, 0, 0, 1, 1, 1], [1, 2, 3, 4])
    assert t.clap_kept.tolist() == [2.5, 4.5] and t.clap_all.tolist() == [2.0, 3.0]
    assert t.spread_kept.tolist() == [2.0, 2.0]
    assert np.allclose(t.spread_all, [(1 + 3 + 2) / 3, (2 + 6 + 4) / 3])


def test_rejection_cells_signs_follow_the_paper():
    """Candidates with high CLAP sit close together: rejection raises CLAP (+1) and lowers the spread (-1)."""
    from presto_lib.eval.claims import REPRODUCED
    from presto_lib.eval.rejection import rejection_cells
    rng = np.random.default_rng(0)
    P, k = 12, 6
    clap = rng.normal(size=P * k)
    emb = rng.normal(size=(P * k, 4)) * np.exp(-clap)[:, None]       # the better the CLAP, the tighter the cluster
    cells = rejection_cells(clap, emb, np.repeat(np.arange(P), k), [0.0, 0.5, 0.9], n_boot=300)
    assert [c.direction for c in cells] == [1, -1]
    assert "r=0.9" in cells[0].name and "r=0.5" in cells[1].name     # r = 0.9 keeps 1 of 6: no spread there
    assert cells[0].estimate > 0 and cells[1].estimate < 0 and all(c.n == P for c in cells)
    assert [c.verdict for c in cells] == [REPRODUCED, REPRODUCED]
