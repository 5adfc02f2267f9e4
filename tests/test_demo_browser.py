"""The demo page in headless Debian Chromium (Playwright, no browser download): every clip loads and plays."""
import importlib.util
from pathlib import Path

import pytest

from presto_lib.config import find_root
from presto_lib.eval.demo import build_demo

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
ROOT = find_root(Path(__file__).parent)
sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing: run scripts/install_system_deps.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("listening_synth", ROOT / "tests/fixtures/listening_synth.py")
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    tmp = tmp_path_factory.mktemp("demo_browser")
    manifest, systems = synth.make_corpus(tmp, n_prompts=2, sr=8000, seconds=1.0, systems=("base", "presto_ls"))
    return build_demo({"reference": manifest, **systems}, tmp / "demo", n_prompts=2, seconds=0.8, sample_rate=8000)


def test_every_clip_loads_and_plays_without_console_errors(page_path):
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        page.goto(page_path.as_uri())
        n = page.locator("audio").count()
        assert n == 6
        results = page.evaluate("""async () => {
            const out = [];
            for (const a of document.querySelectorAll("audio")) {
                a.preload = "auto";
                a.load();
                const ok = await new Promise(res => {
                    if (a.readyState >= 2) return res(true);
                    a.addEventListener("canplay", () => res(true), {once: true});
                    a.addEventListener("error", () => res(false), {once: true});
                    setTimeout(() => res(false), 10000);
                });
                let played = false;
                if (ok) {
                    a.muted = true;
                    await a.play();
                    await new Promise(res => setTimeout(res, 150));
                    played = a.currentTime > 0 && !a.error;
                    a.pause();
                }
                out.push({src: a.getAttribute("src"), ok, played, duration: a.duration,
                          error: a.error ? a.error.code : null});
            }
            return out;
        }""")
        browser.close()
    assert len(results) == 6
    for r in results:
        assert r["ok"] and r["played"] and r["error"] is None, r
        assert r["duration"] == pytest.approx(0.8, abs=0.05), r
    assert errors == []
