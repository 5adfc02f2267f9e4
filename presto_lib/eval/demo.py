"""The listening page: a static `index.html` with short OGG clips of every system for the same prompts.

    build_demo({"reference": "data/corpus/manifest.csv", "base": "data/samples/base",
                "presto_ls": "data/samples/presto_ls"}, "results/demo", n_prompts=4, seconds=5.0)

A system is a samples folder (`samples.csv` + wavs, the `write_samples` layout) or a CSV with `path`, `caption`,
`bpm` columns (the corpus manifest: only its test split is used, so its rows are the evaluation prompts). The page
shows the prompts every system shares, in the first system's order, one row per prompt with its caption and BPM
and one player per system (`plotting.DISPLAY_NAMES`). Clips are mono, resampled to `sample_rate`, cropped to
`seconds` with a short fade-out, written as OGG Vorbis; the whole folder must stay under `max_mb`. Missing
systems are skipped (and listed on the page), as in the listening test.

    results/demo/index.html     results/demo/demo.json     results/demo/audio/<system>/<NN>.ogg
"""
from __future__ import annotations

import html
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from presto_lib.eval.plotting import display_name

__all__ = ["read_system", "shared_prompts", "write_clip", "build_demo"]

log = logging.getLogger(__name__)
FADE_S = 0.05


# ---- inputs --------------------------------------------------------------------------------------

def read_system(source: str | os.PathLike) -> pd.DataFrame | None:
    """(path absolute, caption, bpm) rows of a samples folder or prompts CSV; None when it does not exist."""
    source = Path(source)
    csv = source / "samples.csv" if source.is_dir() else source
    if not csv.is_file():
        return None
    df = pd.read_csv(csv)
    missing = {"path", "caption", "bpm"} - set(df.columns)
    if missing:
        raise ValueError(f"{csv} lacks columns {sorted(missing)}")
    if "split" in df.columns:                          # a corpus manifest: the test split = the prompts
        df = df[df["split"] == "test"]
    df = df.assign(path=[str(csv.parent / p) for p in df["path"]], caption=df["caption"].astype(str),
                   bpm=df["bpm"].astype(float))
    return df[["path", "caption", "bpm"]].reset_index(drop=True)


def shared_prompts(tables: Mapping[str, pd.DataFrame], n: int) -> list[tuple[str, float]]:
    """The first n (caption, bpm) pairs, in the first system's order, that every system has."""
    if not tables:
        raise ValueError("no system has samples")
    keys = [set(zip(t["caption"], t["bpm"])) for t in tables.values()]
    common = set.intersection(*keys)
    first = next(iter(tables.values()))
    out = [k for k in dict.fromkeys(zip(first["caption"], first["bpm"])) if k in common][:n]
    if not out:
        raise ValueError(f"the systems {', '.join(tables)} share no prompt (caption and BPM)")
    return out


# ---- clips ---------------------------------------------------------------------------------------

def write_clip(src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int, seconds: float,
               quality: float = 0.3) -> float:
    """A mono OGG Vorbis excerpt (first `seconds`, fade-out, no clipping) at `sample_rate`; its duration in s."""
    import soundfile as sf

    from presto_lib.audio import load_audio

    wav, _ = load_audio(src, sample_rate=sample_rate, mono=True)
    x = wav[0, : int(round(seconds * sample_rate))].astype(np.float32)
    fade = min(int(FADE_S * sample_rate), len(x))
    if fade:
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0.99:                                   # keep the level; only stop clipping
        x *= 0.99 / peak
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # soundfile's compression_level for Vorbis: 0 = best quality ... 1 = smallest
    sf.write(dst, x, int(sample_rate), format="OGG", subtype="VORBIS", compression_level=1.0 - quality)
    return len(x) / sample_rate


# ---- the page ------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:90rem}
table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.5rem;vertical-align:top;text-align:left}
td.prompt{max-width:22rem}.bpm{color:#666;font-size:.9em}audio{width:14rem}.note{color:#666;font-size:.9em}"""


def _page(title: str, intro: str, systems: list[str], prompts: list[tuple[str, float]],
          clips: dict[tuple[str, int], str], skipped: list[str]) -> str:
    """The HTML of the page (escaped captions, one <audio> per system and prompt)."""
    head = "".join(f"<th>{html.escape(display_name(s))}</th>" for s in systems)
    rows = []
    for i, (caption, bpm) in enumerate(prompts):
        cells = "".join(f'<td><audio controls preload="metadata" src="{clips[(s, i)]}" '
                        f'data-system="{html.escape(s)}"></audio></td>' for s in systems)
        rows.append(f'<tr><td class="prompt">{html.escape(caption)}<div class="bpm">{bpm:g} BPM</div></td>{cells}</tr>')
    note = (f'<p class="note">Not built yet (skipped): {html.escape(", ".join(skipped))}.</p>' if skipped else "")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1><p>{intro}</p>{note}\n"
            f"<table><thead><tr><th>Prompt</th>{head}</tr></thead><tbody>\n" + "\n".join(rows) +
            "\n</tbody></table></body></html>\n")


def build_demo(systems: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, *, n_prompts: int = 4,
               seconds: float = 5.0, sample_rate: int = 16000, max_mb: float = 10.0,
               title: str = "Presto! listening examples", intro: str | None = None) -> Path:
    """Write out_dir/index.html + clips of every existing system for their shared prompts; returns the page."""
    if n_prompts < 1 or seconds <= 0 or sample_rate < 1000:
        raise ValueError(f"need n_prompts >= 1, seconds > 0, sample_rate >= 1000; got {n_prompts}, {seconds}, "
                         f"{sample_rate}")
    tables, skipped = {}, []
    for name, src in systems.items():
        t = read_system(src)
        if t is None or t.empty:
            log.warning("demo page: skipping %r: %s has no samples", name, src)
            skipped.append(display_name(name))
        else:
            tables[name] = t
    prompts = shared_prompts(tables, n_prompts)
    out = Path(out_dir)
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")                 # clips of a previous, larger page must not linger
    clips, meta = {}, []
    for s, t in tables.items():
        first = {k: p for p, k in reversed(list(zip(t["path"], zip(t["caption"], t["bpm"]))))}
        for i, key in enumerate(prompts):
            rel = f"audio/{s}/{i:02d}.ogg"
            dur = write_clip(first[key], out / rel, sample_rate, seconds)
            clips[(s, i)] = rel
            meta.append({"system": s, "name": display_name(s), "prompt": i, "caption": key[0], "bpm": key[1],
                         "file": rel, "seconds": round(dur, 3), "source": str(first[key])})
    intro = intro or (f"The same {len(prompts)} prompts for every system; the first {seconds:g} s of each clip, "
                      f"mono, {sample_rate / 1000:g} kHz OGG.")
    page = out / "index.html"
    page.write_text(_page(title, intro, list(tables), prompts, clips, skipped))
    (out / "demo.json").write_text(json.dumps({"systems": list(tables), "skipped": skipped, "clips": meta},
                                              indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > max_mb * 2**20:
        raise ValueError(f"{out} holds {size / 2**20:.1f} MB, over max_mb={max_mb}: use fewer prompts, shorter "
                         "clips or a lower sample rate")
    return page
