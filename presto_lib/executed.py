"""Executed notebooks for reading without running: a size-bounded copy for the repository, and a static site.

    python -m presto_lib.executed compact data/executed/01_data.ipynb results/notebooks/01_data.ipynb
    python -m presto_lib.executed site results/notebooks results/site        # `make site`

`compact_notebook` keeps every cell and output GitHub renders, but small: PNG figures are downscaled to at most
`max_width` pixels and palette-quantised (kept only when smaller), embedded audio players (IPython `Audio`) are
re-encoded as short mono OGG Vorbis clips (`audio_seconds` at `audio_rate`), long text streams are cut, and
outputs that cannot render outside a live kernel (widget views) or stay huge are replaced by a one-line note.
The notebook stages write one such copy next to their executed notebook (`notebook_runner --copy-to`).

`build_site` renders every notebook of a folder to HTML with nbconvert (no network needed) plus an index page.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Limits", "compact_notebook", "compact_file", "has_image", "has_audio", "build_site", "main"]

AUDIO_SRC = re.compile(r'src="data:(audio/[\w.+-]+);base64,([A-Za-z0-9+/=\s]+)"(\s*type="[^"]*")?')
WIDGET = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Limits:
    """How small the copy is kept."""
    max_width: int = 1200            # px of a figure
    audio_seconds: float = 5.0       # per embedded player
    audio_rate: int = 16000          # Hz, mono
    max_text: int = 4000             # characters of one text output
    max_output: int = 1_500_000      # bytes of one output after compaction (else replaced by a note)


# ---- one output ----------------------------------------------------------------------------------

def _png(b64: str, lim: Limits) -> str:
    """A PNG (base64) downscaled to max_width and palette-quantised, if that is smaller."""
    from PIL import Image

    raw = base64.b64decode(b64)
    img = Image.open(io.BytesIO(raw))
    if img.width > lim.max_width:
        img = img.resize((lim.max_width, round(img.height * lim.max_width / img.width)), Image.LANCZOS)
    img = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    out = buf.getvalue()
    return base64.b64encode(out).decode() if len(out) < len(raw) else b64


def _ogg(mime: str, b64: str, lim: Limits) -> tuple[str, str]:
    """An embedded clip (any format soundfile reads) -> (audio/ogg, base64 of a short mono OGG Vorbis clip)."""
    import numpy as np
    import soundfile as sf

    from presto_lib.audio import resample

    data, sr = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float32", always_2d=True)
    x = data.mean(axis=1)[None]
    if sr != lim.audio_rate:
        x = resample(x, sr, lim.audio_rate)
    x = x[0, : int(lim.audio_seconds * lim.audio_rate)].astype(np.float32)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 0.99:
        x *= 0.99 / peak
    buf = io.BytesIO()
    sf.write(buf, x, lim.audio_rate, format="OGG", subtype="VORBIS", compression_level=0.7)
    return "audio/ogg", base64.b64encode(buf.getvalue()).decode()


def _audio_html(text: str, lim: Limits) -> str:
    """Every data: audio source of an HTML output re-encoded as a short OGG clip."""
    def sub(m: re.Match) -> str:
        try:
            mime, b64 = _ogg(m.group(1), m.group(2), lim)
        except Exception:                               # an unreadable clip stays as it was
            return m.group(0)
        return f'src="data:{mime};base64,{b64}" type="{mime}"'
    return AUDIO_SRC.sub(sub, text)


def _cut(text: str, n: int) -> str:
    """A text output shortened to n characters (head and tail kept)."""
    if len(text) <= n:
        return text
    return f"{text[: n // 2]}\n... [{len(text) - n} characters cut in this copy] ...\n{text[-n // 2:]}"


def _note(text: str) -> dict[str, Any]:
    import nbformat

    return nbformat.v4.new_output("stream", name="stdout", text=f"[{text}]\n")


def _size(out: Any) -> int:
    import json

    return len(json.dumps(out))


def compact_output(out: Any, lim: Limits) -> Any:
    """One output made small (see the module docstring); returns the output to keep."""
    if out.get("output_type") == "stream":
        out["text"] = _cut("".join(out.get("text", "")), lim.max_text)
        return out
    if out.get("output_type") == "error":
        out["traceback"] = [_cut(t, lim.max_text) for t in out.get("traceback", [])]
        return out
    data = out.get("data", {})
    if WIDGET in data:
        data.pop(WIDGET)
        if not set(data) - {"text/plain"}:
            return _note("interactive widget: open the notebook in JupyterLab to see it")
    if "image/png" in data:
        data["image/png"] = _png("".join(data["image/png"]).replace("\n", ""), lim)
    if "text/html" in data and "data:audio/" in "".join(data["text/html"]):
        data["text/html"] = _audio_html("".join(data["text/html"]), lim)
    for k in ("text/plain", "text/markdown"):
        if k in data:
            data[k] = _cut("".join(data[k]), lim.max_text)
    if _size(out) > lim.max_output:
        return _note(f"output of {_size(out) // 1024} KiB left out of this copy ({', '.join(data)})")
    return out


# ---- a notebook ----------------------------------------------------------------------------------

def compact_notebook(nb: Any, lim: Limits = Limits()) -> Any:
    """The notebook with every code cell's outputs compacted (cells, sources and order unchanged)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [compact_output(o, lim) for o in cell.get("outputs", [])]
    return nb


def compact_file(src: str | Path, dst: str | Path, lim: Limits = Limits()) -> int:
    """Write the compacted copy of notebook `src` to `dst`; returns its size in bytes."""
    import nbformat

    from presto_lib.atomic import write_text

    nb = compact_notebook(nbformat.read(str(src), as_version=4), lim)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(dst), nbformat.writes(nb) + "\n")
    return Path(dst).stat().st_size


def has_image(nb: Any) -> bool:
    """Whether any output of the notebook is an image."""
    return any(k.startswith("image/") for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []) for k in o.get("data", {}))


def has_audio(nb: Any) -> bool:
    """Whether any output of the notebook embeds an audio player with its data."""
    return any("<audio" in "".join(o.get("data", {}).get("text/html", "")) and
               "data:audio/" in "".join(o.get("data", {}).get("text/html", ""))
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# ---- the static site -----------------------------------------------------------------------------

def _title(nb: Any, fallback: str) -> str:
    """The first markdown heading of a notebook."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def build_site(src: str | Path, out: str | Path) -> Path:
    """HTML of every notebook in `src` (nbconvert, lab template) plus out/index.html; returns the index."""
    import nbformat
    from nbconvert import HTMLExporter

    src, out = Path(src), Path(out)
    books = sorted(src.glob("*.ipynb"))
    if not books:
        raise FileNotFoundError(f"{src} holds no executed notebook: the notebook stages write them "
                                "(`dvc repro`), the committed ones come with the next full cpu run")
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    rows = []
    for p in books:
        nb = nbformat.read(str(p), as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        (out / f"{p.stem}.html").write_text(body, encoding="utf-8")
        rows.append(f'<li><a href="{p.stem}.html">{html.escape(_title(nb, p.stem))}</a> '
                    f'<span class="f">{p.name}</span></li>')
    index = out / "index.html"
    index.write_text('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Presto notebooks</title>'
                     "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:50rem}"
                     "li{margin:.4rem 0}.f{color:#888;font-size:.85em}</style></head><body>"
                     "<h1>Presto: executed notebooks</h1><p>The pipeline's notebooks with their outputs, in "
                     "pipeline order. The listening page is <a href=\"../demo/index.html\">demo/index.html</a>."
                     f"</p><ol>{''.join(rows)}</ol></body></html>\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    """CLI: compact one notebook, or build the site."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.executed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compact", help="write a size-bounded copy of an executed notebook")
    c.add_argument("src")
    c.add_argument("dst")
    s = sub.add_parser("site", help="render a folder of executed notebooks to HTML with an index page")
    s.add_argument("src", nargs="?", default="results/notebooks")
    s.add_argument("out", nargs="?", default="results/site")
    a = ap.parse_args(argv)
    try:
        if a.command == "compact":
            n = compact_file(a.src, a.dst)
            print(f"{a.dst}: {n / 2**20:.2f} MiB", file=sys.stderr)
        else:
            print(build_site(a.src, a.out))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
