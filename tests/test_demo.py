"""The demo page builder on a tiny synthetic samples folder: same prompts across systems, OGG clips, size bound."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from presto_lib.config import find_root
from presto_lib.eval.demo import _page, build_demo, shared_prompts

ROOT = find_root(Path(__file__).parent)


def _synth():
    spec = importlib.util.spec_from_file_location("listening_synth", ROOT / "tests/fixtures/listening_synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """reference (corpus manifest) + presto_ls + base, where base misses prompt 0 and has a caption with markup."""
    tmp = tmp_path_factory.mktemp("demo")
    manifest, systems = _synth().make_corpus(tmp, n_prompts=4, sr=8000, seconds=1.5, systems=("presto_ls", "base"))
    base = Path(systems["base"])
    df = pd.read_csv(base / "samples.csv")
    df = pd.concat([df.iloc[1:], pd.DataFrame([{"path": "0000.wav", "caption": "<b>bold</b> & loud", "bpm": 60,
                                                "seed": 9}])], ignore_index=True)
    df.to_csv(base / "samples.csv", index=False)
    src = {"reference": manifest, "presto_ls": systems["presto_ls"], "base": systems["base"],
           "presto_l": tmp / "samples" / "presto_l"}                 # not built: skipped
    page = build_demo(src, tmp / "demo", n_prompts=2, seconds=1.0, sample_rate=8000, max_mb=1.0)
    return page, src


def test_page_has_the_shared_prompts_of_every_system_with_caption_and_bpm(demo):
    page, src = demo
    meta = json.loads((page.parent / "demo.json").read_text())
    assert meta["systems"] == ["reference", "presto_ls", "base"] and meta["skipped"] == ["Presto-L"]
    clips = pd.DataFrame(meta["clips"])
    # prompt 0 is missing from base, so the page shows prompts 1 and 2 for every system, in the manifest's order
    for s, g in clips.groupby("system"):
        assert list(g.caption) == ["piano piece number 1", "piano piece number 2"] and list(g.bpm) == [91.0, 92.0]
    ref = clips[clips.system == "base"].source.tolist()
    assert [Path(p).name for p in ref] == ["0001.wav", "0002.wav"]             # base's own files for those prompts
    text = page.read_text()
    assert text.count("<audio") == 6 and "Base (DPM-2S)" in text and "Presto-LS" in text and "Reference" in text
    assert "piano piece number 1" in text and "91 BPM" in text and "piano piece number 0" not in text
    assert "<b>bold" not in text and "Not built yet (skipped): Presto-L" in text
    for src_attr in re.findall(r'src="([^"]+)"', text):
        assert (page.parent / src_attr).is_file()


def test_clips_are_short_mono_ogg_of_the_source_audio(demo):
    page, src = demo
    meta = json.loads((page.parent / "demo.json").read_text())
    for c in meta["clips"]:
        info = sf.info(str(page.parent / c["file"]))
        assert info.format == "OGG" and info.subtype == "VORBIS" and info.channels == 1 and info.samplerate == 8000
        assert info.duration == pytest.approx(1.0, abs=0.01)
    # the clip is the source's first second (lossy codec: compare the spectra's peak frequency, not samples)
    c = next(c for c in meta["clips"] if c["system"] == "presto_ls" and c["prompt"] == 1)
    clip, sr = sf.read(page.parent / c["file"])
    orig, _ = sf.read(c["source"])
    f = np.fft.rfftfreq(sr, 1 / sr)
    assert abs(f[np.abs(np.fft.rfft(clip[:sr])).argmax()] - f[np.abs(np.fft.rfft(orig[:sr])).argmax()]) <= 2
    assert np.abs(clip[-20:]).max() < 0.05                              # faded out


def test_size_bound_and_no_shared_prompt_are_errors(demo, tmp_path):
    _, src = demo
    with pytest.raises(ValueError, match="max_mb"):
        build_demo(src, tmp_path / "big", n_prompts=2, seconds=1.0, sample_rate=8000, max_mb=0.001)
    with pytest.raises(ValueError, match="share no prompt"):
        shared_prompts({"a": pd.DataFrame({"caption": ["x"], "bpm": [1.0]}),
                        "b": pd.DataFrame({"caption": ["x"], "bpm": [2.0]})}, 3)


def test_captions_are_escaped():
    text = _page("t", "", ["base"], [("<b>x</b> & y", 90.0)], {("base", 0): "audio/base/00.ogg"}, [])
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in text and "<b>x" not in text


def test_the_demo_stage_reads_the_sample_folders_the_pipeline_writes():
    """Every system of the demo page is an output of a stage (or the corpus manifest), for every profile."""
    import yaml

    from presto_lib.config import PROFILES, find_root, render_profile
    from presto_lib.stages import demo
    from presto_lib.stages.registry import PRESTO_L_VARIANTS, STAGES

    root = find_root()
    outs = {o for s in STAGES for o in s.outs}
    spec = next(s for s in STAGES if s.name == "demo")
    for prof in PROFILES:
        P = render_profile(prof, root)
        for name, src in demo.systems(P).items():
            if name == "reference":
                assert src == P["base"]["manifest"] and "data/corpus" in spec.deps
                continue
            items = set(P["presto_s"]["runs"]) | set(PRESTO_L_VARIANTS)          # the foreach stages' items
            made = {o.replace("${item}", k) for o in outs for k in items} | outs
            assert src in made, (prof, name, src)
            dep = src.replace(P["presto_s"]["presto_s_run"], "${presto_s.presto_s_run}").replace(
                P["presto_s"]["dmd_gan_run"], "${presto_s.dmd_gan_run}") if "presto_s_" in src else src
            assert dep in spec.deps, (name, dep)
    assert yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["demo"]["outs"] == [
        {"${common.results}/demo": {"cache": False}}]
