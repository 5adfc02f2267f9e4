"""The real rating page in headless Debian Chromium (Playwright, no browser download): rate, submit, tamper."""
import importlib.util
import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from presto_lib.config import find_root
from presto_lib.eval.listening import build_kit, gather_sources
from presto_lib.eval.listening_analysis import load_key
from presto_lib.eval.listening_server import make_server

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ROOT = find_root(Path(__file__).parent)
sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing: run scripts/install_system_deps.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A kit from synthetic audio, served on a free 127.0.0.1 port; yields (url, kit, ratings path)."""
    spec = importlib.util.spec_from_file_location("listening_synth", ROOT / "tests/fixtures/listening_synth.py")
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    tmp = tmp_path_factory.mktemp("browser")
    manifest, systems = synth.make_corpus(tmp, n_prompts=3, sr=8000, seconds=1.0)
    kit = build_kit(gather_sources(manifest, systems), tmp / "kit", n_sets=2, sample_rate=8000,
                    anchors={"anchor_lowpass": {"kind": "lowpass", "cutoff_hz": 1000}}, seed=0)
    httpd = make_server(kit, tmp / "ratings.csv", port=0)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", kit, tmp / "ratings.csv"
    httpd.shutdown()
    httpd.server_close()
    th.join()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser.new_page()
        browser.close()


def _move_sliders(page, skip_last=False):
    """Move each slider like a person: click somewhere on it, or focus it and use the arrow keys."""
    sliders = page.locator("#clips input[type=range]")
    n = sliders.count()
    for i in range(n - 1 if skip_last else n):
        s = sliders.nth(i)
        if i % 2 == 0:
            s.scroll_into_view_if_needed()
            box = s.bounding_box()
            # left of the thumb (which starts in the middle), so the value really changes
            page.mouse.click(box["x"] + box["width"] * (0.1 + 0.06 * i), box["y"] + box["height"] / 2)
        else:
            s.focus()
            for _ in range(3 + i):
                page.keyboard.press("ArrowRight")
    return {sliders.nth(i).get_attribute("data-clip"): int(sliders.nth(i).input_value()) for i in range(n)}


def _post_from_page(page, payload):
    return page.evaluate("""async (p) => {
        const r = await fetch("api/ratings", {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify(p)});
        return [r.status, (await r.json())];
    }""", payload)


def test_rater_completes_the_kit_and_tampering_is_refused(served, page):
    url, kit, ratings = served
    key = load_key(kit)
    page.goto(url)
    page.fill("#rater", "alice")
    page.click("#start")
    page.wait_for_selector("#set-view:not([hidden])")
    expected = {}
    for k in range(2):
        assert page.text_content("#progress") == f"Set {k + 1} of 2"
        caption = page.text_content("#caption")
        clips = page.locator("#clips input[type=range]").evaluate_all("els => els.map(e => e.dataset.clip)")
        assert sorted(clips) == sorted(key[key["caption"] == caption]["clip"])
        assert page.locator("#clips audio").count() == len(clips) == 4
        if k == 0:  # an incomplete set is refused by the page and nothing reaches the server
            _move_sliders(page, skip_last=True)
            page.click("#submit")
            assert "1 clip(s) not rated" in page.text_content("#message")
            assert not ratings.exists()
        values = _move_sliders(page)
        assert len(set(values.values())) > 1 and all(0 <= v <= 100 for v in values.values())
        expected.update(values)
        page.click("#submit")
        sync_api.expect(page.locator("#message")).to_have_text(f"Saved set {k + 1}.")
    page.wait_for_selector("#done-view:not([hidden])")

    df = pd.read_csv(ratings, dtype={"clip": str, "set": str})
    assert list(df.columns) == ["rater", "set", "clip", "rating", "timestamp"]
    assert (df["rater"] == "alice").all() and len(df) == len(key)
    assert dict(zip(df["clip"], df["rating"])) == expected
    assert (df.merge(key, on="clip")["set_x"] == df.merge(key, on="clip")["set_y"]).all()
    assert pd.to_datetime(df["timestamp"]).notna().all()

    # tampered submissions from the page's own origin are refused and nothing saved is lost
    saved = ratings.read_bytes()
    sets = json.loads((kit / "public" / "kit.json").read_text())["sets"]
    fresh = [{"clip": c, "rating": 50} for c in sets[0]["clips"]]
    tampered = {
        "unknown clip": {"rater": "mallory", "set": sets[0]["set"], "ratings": fresh[:-1] + [{"clip": "cdeadbeef", "rating": 1}]},
        "out of range": {"rater": "mallory", "set": sets[0]["set"], "ratings": fresh[:-1] + [{**fresh[-1], "rating": 250}]},
        "incomplete": {"rater": "mallory", "set": sets[0]["set"], "ratings": fresh[:-1]},
    }
    for why, payload in tampered.items():
        status, body = _post_from_page(page, payload)
        assert status == 400 and body["error"], why
    status, body = _post_from_page(page, {"rater": "alice", "set": sets[0]["set"], "ratings": fresh})
    assert status == 409 and "already rated" in body["error"]
    assert ratings.read_bytes() == saved

    # the key is never served, however it is asked for
    for path in ("key.csv", "../key.csv", "%2e%2e/key.csv", "audio/%2e%2e/%2e%2e/key.csv", "build.json"):
        assert page.request.get(url + path).status == 404, path

    # coming back: a rater who has finished sees the end page straight away
    page.goto(url)
    page.fill("#rater", "alice")
    page.click("#start")
    page.wait_for_selector("#done-view:not([hidden])")
