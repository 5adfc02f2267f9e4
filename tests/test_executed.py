"""Executed notebooks for the repository: the size-bounded copy, the static site, and the committed copies."""
import base64
import io
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from presto_lib.config import find_root
from presto_lib.executed import Limits, build_site, compact_file, has_audio, has_image
from presto_lib.stages.registry import STAGES

ROOT = find_root()
SR_IN, F0 = 44100, 440.0


# ---- a tiny executed notebook --------------------------------------------------------------------

def _png(width: int, height: int) -> str:
    """A smooth RGB gradient PNG (compresses like a figure, not like noise), base64."""
    x = np.linspace(0, 1, width)[None, :, None] * np.linspace(0.2, 1, height)[:, None, None]
    img = (np.concatenate([x, 1 - x, x ** 2], axis=2) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _audio_html(seconds: float = 10.0) -> str:
    """What IPython.display.Audio embeds: a stereo 44.1 kHz WAV of a 440 Hz tone as a data URI."""
    from IPython.display import Audio

    t = np.arange(int(seconds * SR_IN)) / SR_IN
    tone = 0.5 * np.sin(2 * np.pi * F0 * t)
    return Audio(np.stack([tone, tone]), rate=SR_IN)._repr_html_()


def _executed(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A tiny executed notebook\ntext"),
        nbformat.v4.new_code_cell("plot()", outputs=[out("display_data", data={"image/png": _png(2400, 900),
                                                                               "text/plain": "<Figure>"})]),
        nbformat.v4.new_code_cell("listen()", outputs=[out("display_data", data={"text/html": _audio_html(),
                                                                                "text/plain": "<Audio>"})]),
        nbformat.v4.new_code_cell("train()", outputs=[
            out("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                      "text/plain": "  0%|   | 0/10"}),
            out("stream", name="stdout", text="step\n" * 20_000)]),
    ]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    d = tmp_path_factory.mktemp("nb")
    src = _executed(d / "01_tiny.ipynb")
    dst = d / "copy" / "01_tiny.ipynb"
    compact_file(src, dst)
    return src, dst


def test_copy_keeps_every_cell_and_is_much_smaller(compacted):
    src, dst = compacted
    a, b = nbformat.read(str(src), as_version=4), nbformat.read(str(dst), as_version=4)
    assert [c.source for c in a.cells] == [c.source for c in b.cells]
    assert dst.stat().st_size < 0.25 * src.stat().st_size
    assert has_image(b) and has_audio(b)


def test_figures_are_downscaled_pngs_of_the_same_picture(compacted):
    src, dst = compacted
    lim = Limits()
    raw = [Image.open(io.BytesIO(base64.b64decode(nbformat.read(str(p), as_version=4).cells[1].outputs[0]
                                                  .data["image/png"]))).convert("RGB") for p in (src, dst)]
    assert raw[1].width == lim.max_width and abs(raw[1].height - 900 * lim.max_width / 2400) <= 1
    ref = np.asarray(raw[0].resize(raw[1].size, Image.LANCZOS), dtype=float)
    assert np.abs(np.asarray(raw[1], dtype=float) - ref).mean() < 4.0         # a palette of the same image


def test_audio_players_become_short_mono_ogg_clips_of_the_same_sound(compacted):
    _, dst = compacted
    lim = Limits()
    html = nbformat.read(str(dst), as_version=4).cells[2].outputs[0].data["text/html"]
    m = re.search(r'src="data:audio/ogg;base64,([^"]+)" type="audio/ogg"', html)
    assert m and "<audio" in html
    x, sr = sf.read(io.BytesIO(base64.b64decode(m.group(1))), always_2d=True)
    assert sr == lim.audio_rate and x.shape[1] == 1
    assert abs(len(x) / sr - lim.audio_seconds) < 0.05
    spec = np.abs(np.fft.rfft(x[:, 0] * np.hanning(len(x))))
    assert abs(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()] - F0) < 2.0     # still the 440 Hz tone


def test_widgets_become_a_note_and_long_streams_are_cut(compacted):
    _, dst = compacted
    outs = nbformat.read(str(dst), as_version=4).cells[3].outputs
    assert "widget" in outs[0].text and "data" not in outs[0]
    assert len(outs[1].text) < Limits().max_text + 200 and "cut in this copy" in outs[1].text


def test_site_renders_every_notebook_and_an_index(compacted, tmp_path):
    _, dst = compacted
    index = build_site(dst.parent, tmp_path / "site")
    page = (tmp_path / "site" / "01_tiny.html").read_text()
    assert 'href="01_tiny.html"' in index.read_text() and "A tiny executed notebook" in index.read_text()
    assert "data:image/png;base64," in page and "data:audio/ogg;base64," in page
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        build_site(tmp_path / "empty", tmp_path / "site2")


# ---- the pipeline writes them; the committed ones show figures and audio -------------------------------

def test_every_notebook_stage_writes_its_copy_through_the_runner():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    books = [s for s in STAGES if s.is_notebook]
    assert books
    for spec in books:
        body = stages[spec.name]
        assert body["cmd"].startswith("python -m presto_lib.notebook_runner ")
        assert f"--copy-to {spec.notebook_copy}" in body["cmd"]
        assert {spec.notebook_copy: {"cache": False}} in body["outs"]
        assert {"presto_lib/notebook_runner.py", "presto_lib/executed.py"} <= set(body["deps"])


COMMITTED = sorted((ROOT / "results" / "notebooks").glob("*.ipynb"))


@pytest.mark.skipif(not COMMITTED, reason="no executed notebook committed yet (the next full cpu run writes them)")
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_executed_notebooks_show_figures_and_audio(path):
    nb = nbformat.read(str(path), as_version=4)
    assert has_image(nb), f"{path.name} has no image output"
    source = ROOT / "notebooks" / "src" / f"{path.stem}.py"
    if source.is_file() and "Audio(" in source.read_text():
        assert has_audio(nb), f"{path.name} plays audio in its source but has no embedded audio output"


def test_committed_executed_notebooks_stay_small():
    total = sum(p.stat().st_size for p in COMMITTED)
    assert total < 30 * 2**20, f"results/notebooks holds {total / 2**20:.1f} MiB"
