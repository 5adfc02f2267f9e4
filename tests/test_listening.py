"""Listening test: kit builder, rating server (over HTTP, no browser), analysis vs scipy.stats, CLI."""
import importlib.util
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyloudnorm
import pytest
import soundfile as sf
import yaml
from scipy import stats

from presto_lib.config import find_root, render_profile
from presto_lib.eval import listening_analysis as la
from presto_lib.eval.listening import build_kit, gather_sources, make_anchor
from presto_lib.stages.listening import main
from presto_lib.eval.listening_server import make_server, rater_order

ROOT = find_root(Path(__file__).parent)
FIX = ROOT / "tests" / "fixtures"
SR = 8000
ANCHORS = {"anchor_lowpass": {"kind": "lowpass", "cutoff_hz": 1000}, "anchor_noisy": {"kind": "noise", "snr_db": 5}}


def _synth():
    spec = importlib.util.spec_from_file_location("listening_synth", FIX / "listening_synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _synth().make_corpus(tmp_path_factory.mktemp("lt"), n_prompts=4, sr=SR, seconds=1.5)


@pytest.fixture(scope="module")
def kit(corpus, tmp_path_factory):
    manifest, systems = corpus
    out = tmp_path_factory.mktemp("kit") / "kit"
    return build_kit(gather_sources(manifest, systems), out, n_sets=3, sample_rate=SR, excerpt_seconds=1.0,
                     target_lufs=-23.0, anchors=ANCHORS, seed=3)


# ---- kit builder ----


def test_kit_is_blinded_and_key_is_private(kit):
    public = sorted(p.relative_to(kit / "public").as_posix() for p in (kit / "public").rglob("*") if p.is_file())
    assert "key.csv" not in public and "build.json" not in public
    key = la.load_key(kit)
    text = "".join((kit / "public" / f).read_text() for f in ("kit.json", "index.html", "app.js"))
    for system in key["system"].unique():
        assert system not in text, f"system name {system!r} leaks into the served page"
    k = json.loads((kit / "public" / "kit.json").read_text())
    assert len(k["sets"]) == 3
    for s in k["sets"]:
        rows = key[key["set"] == s["set"]]
        assert sorted(s["clips"]) == sorted(rows["clip"])
        assert sorted(rows["system"]) == sorted(["reference", "sys_a", "sys_b", *ANCHORS])
        assert rows["caption"].nunique() == 1 and s["caption"] == rows["caption"].iloc[0]
    assert key["clip"].is_unique and sorted(public) == sorted(
        ["app.js", "index.html", "kit.json", "style.css"] + [f"audio/{c}.wav" for c in key["clip"]])


def test_excerpts_share_offset_and_are_loudness_matched(kit):
    key = la.load_key(kit)
    meter = pyloudnorm.Meter(SR)
    for row in key[~key["system"].str.startswith("anchor")].itertuples():
        clip, sr = sf.read(kit / "public" / "audio" / f"{row.clip}.wav")
        src, sr_src = sf.read(row.source)
        assert sr == sr_src == SR and len(clip) == round(row.seconds * SR) == SR
        seg = src[round(row.offset_s * SR): round(row.offset_s * SR) + len(clip)]
        assert np.corrcoef(seg, clip)[0, 1] > 0.999, "kit clip is not the source excerpt at the keyed offset"
        assert abs(meter.integrated_loudness(clip) + 23.0) < 0.5
    assert key.groupby("set")["offset_s"].nunique().eq(1).all()
    assert key["offset_s"].nunique() > 1, "offsets should be random across prompts"


def test_anchors_degrade_the_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, SR)).astype(np.float32)
    lp = make_anchor(x, SR, ANCHORS["anchor_lowpass"], rng)
    f = np.fft.rfftfreq(SR, 1 / SR)
    hi = lambda w: np.sum(np.abs(np.fft.rfft(w[0])[f > 1500]) ** 2)
    assert hi(lp) < 1e-4 * hi(x)
    noisy = make_anchor(x, SR, ANCHORS["anchor_noisy"], rng)
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 5) < 0.3
    with pytest.raises(ValueError, match="cutoff"):
        make_anchor(x, SR, {"kind": "lowpass", "cutoff_hz": 5000}, rng)
    with pytest.raises(ValueError, match="unknown anchor"):
        make_anchor(x, SR, {"kind": "reverb"}, rng)


def test_kit_is_reproducible_and_whole_clip_without_excerpt(corpus, kit, tmp_path):
    manifest, systems = corpus
    src = gather_sources(manifest, systems)
    again = build_kit(src, tmp_path / "k2", n_sets=3, sample_rate=SR, excerpt_seconds=1.0, anchors=ANCHORS, seed=3)
    pd.testing.assert_frame_equal(la.load_key(again).drop(columns="source"), la.load_key(kit).drop(columns="source"))
    whole = build_kit(src, tmp_path / "k3", n_sets=2, sample_rate=SR, excerpt_seconds=None, seed=4)
    key = la.load_key(whole)
    assert (key["offset_s"] == 0).all() and (key["seconds"] == 1.5).all()  # shortest system = 1.5 s
    assert la.load_key(build_kit(src, tmp_path / "k3", n_sets=2, sample_rate=SR, seed=5))["clip"].tolist() \
        != key["clip"].tolist()  # rebuilt in place with a new seed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a listening-test kit"):
        build_kit(src, tmp_path / "other", n_sets=2, sample_rate=SR, seed=0)
    assert (tmp_path / "other" / "notes.txt").exists()


def test_sources_skip_missing_systems_and_check_captions(corpus, tmp_path, caplog):
    manifest, systems = corpus
    src = gather_sources(manifest, {**systems, "presto_ls": str(tmp_path / "absent")})
    assert sorted(src["system"].unique()) == ["reference", "sys_a", "sys_b"]
    assert "presto_ls" in caplog.text
    assert (src[src["system"] == "reference"]["caption"].str.startswith("piano piece")).all()
    bad = tmp_path / "bad"
    bad.mkdir()
    s = pd.read_csv(Path(systems["sys_a"]) / "samples.csv").assign(caption="something else")
    s.assign(path=[str(Path(systems["sys_a"]) / p) for p in s["path"]]).to_csv(bad / "samples.csv", index=False)
    with pytest.raises(ValueError, match="captions differ"):
        gather_sources(manifest, {"bad": str(bad)})
    with pytest.raises(ValueError, match="manifest"):
        gather_sources(tmp_path / "none.csv", systems)


# ---- server (plain HTTP) ----


@pytest.fixture
def server(kit, tmp_path):
    httpd = make_server(kit, tmp_path / "ratings.csv", port=0)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "ratings.csv"
    httpd.shutdown()
    httpd.server_close()
    th.join()


def _get(url):
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url, payload, ctype="application/json"):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(url + "/api/ratings", data=data, headers={"Content-Type": ctype}, method="POST")
    return _get(req)


def test_server_serves_only_public_files(server, kit):
    url, _ = server
    assert _get(url + "/")[0] == 200 and b"app.js" in _get(url + "/")[1]
    clip = la.load_key(kit)["clip"].iloc[0]
    status, body = _get(f"{url}/audio/{clip}.wav")
    assert status == 200 and body == (kit / "public" / "audio" / f"{clip}.wav").read_bytes()
    ranged = urllib.request.Request(f"{url}/audio/{clip}.wav", headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(ranged) as r:
        assert r.status == 206 and r.read() == body[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    for bad in ("/key.csv", "/../key.csv", "/%2e%2e/key.csv", "/audio/../../key.csv", "/audio/..%2f..%2fkey.csv",
                "/build.json", "/audio/", "/public/kit.json", "//etc/passwd", "/%2fetc%2fpasswd"):
        assert _get(url + bad)[0] == 404, bad


def test_rater_order_is_a_per_rater_shuffle(kit):
    k = json.loads((kit / "public" / "kit.json").read_text())
    a, b = rater_order(k, "alice"), rater_order(k, "bob")
    assert a == rater_order(k, "alice")
    assert sorted(s["set"] for s in a) == sorted(s["set"] for s in k["sets"])
    base = {s["set"]: s["clips"] for s in k["sets"]}
    assert all(sorted(s["clips"]) == sorted(base[s["set"]]) for s in a + b)
    assert [s["clips"] for s in a] != [s["clips"] for s in b] or [s["set"] for s in a] != [s["set"] for s in b]


def test_server_saves_a_complete_set_and_refuses_bad_submissions(server, kit):
    url, ratings = server
    k = json.loads(_get(url + "/api/kit?rater=alice")[1])
    s0, s1 = k["sets"][0], k["sets"][1]
    good = {"rater": "alice", "set": s0["set"], "ratings": [{"clip": c["clip"], "rating": 10 * i}
                                                             for i, c in enumerate(s0["clips"])]}
    assert _post(url, good) == (200, b'{"saved": 5}')
    saved = ratings.read_bytes()
    rows = pd.read_csv(ratings, dtype={"clip": str})
    assert list(rows.columns) == ["rater", "set", "clip", "rating", "timestamp"]
    assert rows["clip"].tolist() == [c["clip"] for c in s0["clips"]] and rows["rating"].tolist() == [0, 10, 20, 30, 40]
    other = s1["clips"][0]["clip"]
    r1 = [{"clip": c["clip"], "rating": 50} for c in s1["clips"]]
    bad = {
        "incomplete": {**good, "set": s1["set"], "ratings": r1[:-1]},
        "unknown clip": {**good, "set": s1["set"], "ratings": r1[:-1] + [{"clip": "cdeadbeef", "rating": 5}]},
        "clip of another set": {**good, "ratings": good["ratings"][:-1] + [{"clip": other, "rating": 5}]},
        "clip twice": {**good, "set": s1["set"], "ratings": r1[:-1] + [r1[0]]},
        "above 100": {**good, "set": s1["set"], "ratings": r1[:-1] + [{**r1[-1], "rating": 101}]},
        "negative": {**good, "set": s1["set"], "ratings": r1[:-1] + [{**r1[-1], "rating": -1}]},
        "fraction": {**good, "set": s1["set"], "ratings": r1[:-1] + [{**r1[-1], "rating": 50.5}]},
        "bool": {**good, "set": s1["set"], "ratings": r1[:-1] + [{**r1[-1], "rating": True}]},
        "string": {**good, "set": s1["set"], "ratings": r1[:-1] + [{**r1[-1], "rating": "50"}]},
        "extra field": {**good, "set": s1["set"], "ratings": r1, "system": "x"},
        "unknown set": {**good, "set": "set99"},
        "bad rater": {**good, "rater": "=cmd|x", "set": s1["set"], "ratings": r1},
    }
    for why, payload in bad.items():
        assert _post(url, payload)[0] == 400, why
    assert _post(url, good)[0] == 409  # duplicate (rater, set)
    for raw in (b"{not json", b"[" * 50000, b"\xff\xfe", json.dumps(good).replace('"rating": 0', '"rating": NaN').encode()):
        assert _post(url, raw)[0] == 400, raw[:40]
    assert _post(url, {**good, "set": s1["set"], "ratings": r1}, ctype="text/plain")[0] == 415
    assert ratings.read_bytes() == saved, "a refused submission changed the saved ratings"
    assert json.loads(_get(url + "/api/kit?rater=alice")[1])["done"] == [s0["set"]]


def test_concurrent_submissions_all_land_once(server, kit):
    url, ratings = server
    k = json.loads((kit / "public" / "kit.json").read_text())
    jobs = [{"rater": f"r{i}", "set": s["set"], "ratings": [{"clip": c, "rating": i} for c in s["clips"]]}
            for i in range(4) for s in k["sets"]]
    codes = []
    threads = [threading.Thread(target=lambda p=p: codes.append(_post(url, p)[0])) for p in jobs + jobs[:3]]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(codes) == [200] * len(jobs) + [409] * 3
    rows = pd.read_csv(ratings)
    assert len(rows) == 5 * len(jobs) and not rows.duplicated(["rater", "clip"]).any()


def test_ratings_file_may_not_be_served(kit):
    with pytest.raises(ValueError, match="served folder"):
        make_server(kit, kit / "public" / "ratings.csv", port=0)


# ---- analysis vs scipy.stats ----


def _fixture():
    key = pd.read_csv(FIX / "listening_key.csv", dtype=str)
    return la.unblind(la.load_ratings(FIX / "listening_ratings.csv"), key)


def _by_hand(unit):
    """Per-unit mean per system, computed with plain Python (independent of the library's pandas code)."""
    key = {r["clip"]: r["system"] for r in pd.read_csv(FIX / "listening_key.csv", dtype=str).to_dict("records")}
    acc = {}
    for r in pd.read_csv(FIX / "listening_ratings.csv", dtype=str).to_dict("records"):
        u = r["rater"] if unit == "rater" else (r["rater"], r["set"])
        acc.setdefault(u, {}).setdefault(key[r["clip"]], []).append(float(r["rating"]))
    return {u: {s: sum(v) / len(v) for s, v in d.items()} for u, d in acc.items()}


@pytest.mark.parametrize("unit", ["rater", "rater_set"])
@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_paired_tests_equal_scipy_ttest_rel_with_bonferroni(unit, alternative):
    df = _fixture()
    res = la.paired_tests(df, "presto_ls", unit=unit, alternative=alternative).set_index("system")
    means = _by_hand(unit)
    units = sorted(means)
    assert sorted(res.index) == ["base", "soundctm"]
    for other in ("base", "soundctm"):
        a = [means[u]["presto_ls"] for u in units]
        b = [means[u][other] for u in units]
        ref = stats.ttest_rel(a, b, alternative=alternative)
        assert res.loc[other, "n_pairs"] == len(units) == (6 if unit == "rater" else 17)
        assert res.loc[other, "t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert res.loc[other, "p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert res.loc[other, "p_bonferroni"] == pytest.approx(min(1.0, 2 * ref.pvalue), rel=1e-9)
        assert res.loc[other, "significant"] == (min(1.0, 2 * ref.pvalue) < 0.05)


def test_summary_ci_equals_scipy_t_interval():
    df = _fixture()
    summ = la.summarize(df, "rater").set_index("system")
    means = _by_hand("rater")
    for s in ("presto_ls", "base", "soundctm"):
        x = [means[u][s] for u in means]
        lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
        assert summ.loc[s, ["ci_low", "mean", "ci_high"]].tolist() == pytest.approx([lo, np.mean(x), hi])
        assert summ.loc[s, "n_ratings"] == 17


def test_unblind_and_load_refuse_bad_ratings(tmp_path):
    key = pd.read_csv(FIX / "listening_key.csv", dtype=str)
    r = la.load_ratings(FIX / "listening_ratings.csv")
    with pytest.raises(ValueError, match="not in the key"):
        la.unblind(r.assign(clip=r["clip"].where(r.index > 0, "cffffffff")), key)
    with pytest.raises(ValueError, match="set"):
        la.unblind(r.assign(set="set01"), key)
    r.assign(rating=r["rating"].where(r.index > 0, 120)).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        la.load_ratings(tmp_path / "r.csv")
    with pytest.raises(ValueError, match="chosen system"):
        la.paired_tests(_fixture(), "presto_lsx")


def test_simulated_raters_follow_the_model(kit):
    key = la.load_key(kit)
    q = {"reference": 80, "sys_a": 60, "sys_b": 40, "anchor_lowpass": 30, "anchor_noisy": 10}
    sim = la.simulate_ratings(key, 12, q, rater_sd=5, set_sd=3, noise_sd=6, seed=1)
    pd.testing.assert_frame_equal(sim, la.simulate_ratings(key, 12, q, rater_sd=5, set_sd=3, noise_sd=6, seed=1))
    assert len(sim) == 12 * len(key) and sim["rating"].between(0, 100).all()
    assert (sim["rating"] == sim["rating"].round()).all()
    res = la.analyse(la.unblind(sim, key), "reference", label=la.SIM_LABEL)
    assert res.summary["system"].tolist() == sorted(q, key=q.get, reverse=True)
    assert res.tests["significant"].all() and (res.table["data"] == la.SIM_LABEL).all()
    with pytest.raises(ValueError, match="2 raters"):
        la.simulate_ratings(key, 1, q)


# ---- outputs and CLI ----


def test_cli_build_analyse_and_serve(corpus, tmp_path):
    manifest, systems = corpus
    P = render_profile("smoke", ROOT)
    P["common"]["sample_rate"] = SR
    P["listening"].update(manifest=str(manifest), kit_dir=str(tmp_path / "kit"), ratings=str(tmp_path / "none.csv"),
                          systems={"sys_a": systems["sys_a"], "missing": str(tmp_path / "nope")}, chosen="reference")
    P["listening"]["anchors"] = ANCHORS
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(P))
    assert main(["build", "--params", str(tmp_path / "p.yaml")]) == 0
    key = la.load_key(tmp_path / "kit")
    assert set(key["system"]) == {"reference", "sys_a", *ANCHORS}
    table, fig = tmp_path / "t" / "listening_test.csv", tmp_path / "f" / "fig12.png"
    assert main(["analyse", str(tmp_path / "kit"), "--params", str(tmp_path / "p.yaml"), "--table", str(table),
                 "--figure", str(fig)]) == 0
    t = pd.read_csv(table)
    assert set(t["system"]) == set(key["system"]) and (t["data"] == la.SIM_LABEL).all()
    assert la.SIM_LABEL in table.with_suffix(".md").read_text() and fig.stat().st_size > 10_000
    la.simulate_ratings(key, 3, {}, seed=2).assign(timestamp="2025-01-01T00:00:00+00:00").to_csv(
        tmp_path / "human.csv", index=False)  # stands in for a server-written file
    assert main(["analyse", str(tmp_path / "kit"), "--params", str(tmp_path / "p.yaml"), "--ratings",
                 str(tmp_path / "human.csv"), "--table", str(table), "--figure", str(fig)]) == 0
    assert (pd.read_csv(table)["data"] == la.HUMAN_LABEL).all() and la.SIM_LABEL not in table.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):  # an explicit ratings file that is missing is an error, not a simulation
        main(["analyse", str(tmp_path / "kit"), "--params", str(tmp_path / "p.yaml"), "--ratings", str(tmp_path / "x.csv")])
    # serve: a real process on a free port, answering the page and the key's absence
    proc = subprocess.Popen([sys.executable, "-m", "presto_lib.stages.listening", "serve", str(tmp_path / "kit"),
                             "--ratings", str(tmp_path / "r.csv"), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split()[2].rstrip("/")
        assert url.startswith("http://127.0.0.1:")
        assert _get(url + "/")[0] == 200 and _get(url + "/key.csv")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
