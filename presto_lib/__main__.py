"""Command line: generate music from a pretrained folder, export one from the pipeline's outputs, check one.

    python -m presto_lib generate --prompt "lo-fi piano, soft drums" --bpm 90 --model presto_ls --out out.wav
    python -m presto_lib export --out pretrained/cpu            # after `dvc repro`
    python -m presto_lib check pretrained/cpu                   # files and dvc.lock still in sync?

Progress goes to stderr, the written path to stdout; a missing model or bad input is one `error:` line (exit 2).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from presto_lib.pretrained import MODELS

WEIGHTS_HELP = ("a pretrained folder (manifest.json), a profile name (pretrained/<profile> of the repository: "
                "smoke, cpu, gpu, paper), or 'outputs' for the pipeline's DVC outputs under data/ (default: cpu)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m presto_lib", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text + BPM -> a wav file", description="Generate one clip from a caption.")
    g.add_argument("--prompt", required=True, help="the caption, e.g. 'calm piano in C major'")
    g.add_argument("--bpm", type=float, default=120.0, help="tempo in beats per minute (default 120)")
    g.add_argument("--model", default="presto_ls", choices=MODELS, help="which model (default presto_ls)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the model's Table 2 count, 4 for presto_s / presto_ls)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    g.add_argument("--out", required=True, help="the wav file to write")
    g.add_argument("--weights", default="cpu", help=WEIGHTS_HELP)
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    e = sub.add_parser("export", help="write a half-precision pretrained folder from data/",
                       description="Export the pipeline's final models (safetensors, float16) with a manifest.")
    e.add_argument("--out", required=True, help="the folder to write, e.g. pretrained/cpu")
    e.add_argument("--models", nargs="+", default=None, choices=["vae", *MODELS],
                   help="which models (default: every one whose output exists)")
    e.add_argument("--params", default="params.yaml", help="params for default steps and sampler")
    c = sub.add_parser("check", help="is a pretrained folder in sync with its files and dvc.lock?")
    c.add_argument("folder")
    c.add_argument("--lock", default="dvc.lock")
    return ap


def _log(msg: str) -> None:
    print(f"[presto] {msg}", file=sys.stderr, flush=True)


def _generate(a: argparse.Namespace) -> int:
    import torch

    from presto_lib.api import PrestoPipeline
    from presto_lib.audio import save_audio

    torch.set_num_threads(min(torch.get_num_threads(), int(os.environ.get("PRESTO_THREADS", "2"))))
    if a.weights == "outputs":
        pipe = PrestoPipeline.from_outputs(device=a.device, verbose=True)
    else:
        pipe = PrestoPipeline.from_pretrained(a.weights, device=a.device, verbose=True)
    audio, sr = pipe(a.prompt, bpm=a.bpm, steps=a.steps, seed=a.seed, model=a.model)
    out = save_audio(a.out, audio[0], sr)
    _log(f"wrote {audio.shape[-1] / sr:.1f} s at {sr} Hz")
    print(out)
    return 0


def _export(a: argparse.Namespace) -> int:
    from presto_lib.api import PrestoPipeline
    from presto_lib.config import find_root
    from presto_lib.pretrained import default_sources, export_pretrained

    root = find_root()
    os.chdir(root)
    pipe = PrestoPipeline.from_outputs(root, a.params)       # steps and sampler of the params the outputs used
    src = {k: s.path for k, s in default_sources().items() if (Path(s.path) / "model.safetensors").is_file()}
    if a.models:
        src = {k: v for k, v in src.items() if k in a.models}
    _log(f"exporting {', '.join(src)} to {a.out}")
    manifest = export_pretrained(src, a.out, root=root, steps=pipe.default_steps, sampling=pipe.sampling_opts)
    size = sum(p.stat().st_size for p in Path(a.out).rglob("*") if p.is_file())
    _log(f"{size / 2**20:.1f} MiB")
    print(manifest)
    return 0


def _check(a: argparse.Namespace) -> int:
    from presto_lib.pretrained import check_pretrained

    problems = check_pretrained(a.folder, a.lock)
    for p in problems:
        print(p)
    _log("in sync" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m presto_lib`."""
    a = _parser().parse_args(argv)
    try:
        return {"generate": _generate, "export": _export, "check": _check}[a.command](a)
    except (FileNotFoundError, ValueError) as err:     # ModelNotFoundError is a FileNotFoundError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
