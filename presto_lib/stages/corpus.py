"""Corpus commands (the `corpus` DVC stage itself is notebooks/01_data, which calls `data.build_corpus`).

    python -m presto_lib.stages.corpus build [--profile smoke] [--out DIR] [--midi-dir DIR ...] [--no-music21]
    python -m presto_lib.stages.corpus folder AUDIO_DIR captions.csv --out DIR [--profile cpu] [--skip-bad]

`build` renders the MIDI corpus (`data.corpus`); `folder` imports a folder of audio + a captions CSV into the same
manifest format (`data.folder`).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from presto_lib.config import load_params, render_profile

__all__ = ["main"]


def _params(a: argparse.Namespace) -> dict[str, Any]:
    """A profile's params (--profile) or params.yaml's (--params)."""
    return render_profile(a.profile) if a.profile else load_params(a.params)


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    from presto_lib.data.corpus import build_corpus
    from presto_lib.data.folder import import_audio_folder

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render the MIDI corpus")
    f = sub.add_parser("folder", help="import a folder of audio + captions CSV")
    for p in (b, f):
        p.add_argument("--params", help="params file (default: the project's params.yaml)")
        p.add_argument("--profile", help="use this profile's values instead of params.yaml")
    b.add_argument("--out", help="output folder (default: corpus.out_dir)")
    b.add_argument("--midi-dir", action="append", default=[], help="extra folder of .mid files (repeatable)")
    b.add_argument("--no-music21", action="store_true", help="only the --midi-dir pieces")
    b.add_argument("--workers", type=int, default=None)
    f.add_argument("audio_dir")
    f.add_argument("captions_csv")
    f.add_argument("--out", required=True)
    f.add_argument("--max-clips-per-file", type=int)
    f.add_argument("--encoding", default="utf-8", help="text encoding of the captions CSV (default utf-8)")
    f.add_argument("--skip-bad", action="store_true", help="log and skip bad rows instead of stopping")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = _params(a)
    if a.cmd == "build":
        if a.no_music21:
            params["corpus"]["music21"] = False
        manifest = build_corpus(a.out or params["corpus"]["out_dir"], params, workers=a.workers,
                                midi_dirs=a.midi_dir)
        print(json.dumps(json.loads((Path(manifest).parent / "summary.json").read_text()), indent=2))
        return 0
    import pandas as pd

    m = import_audio_folder(a.audio_dir, a.captions_csv, a.out, params, a.max_clips_per_file,
                            on_error="skip" if a.skip_bad else "raise", encoding=a.encoding)
    df = pd.read_csv(m)
    n_skipped = len(pd.read_csv(m.parent / "skipped.csv"))
    print(json.dumps({"manifest": str(m), "clips": len(df), "hours": round(df.duration_s.sum() / 3600, 4),
                      "per_split": df.split.value_counts().to_dict(), "skipped": n_skipped}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
