"""The `pretrained` stage: export the final models half precision to pretrained/<profile>/ (committed for cpu).

    python -m presto_lib.stages.pretrained          # after presto_ls_distill

Writes `pretrained/<profile>/{manifest.json, vae/, base/, presto_ls/}` with `pretrained.export_pretrained`:
safetensors in float16, the manifest holding each file's sha256 and the `dvc.lock` md5 of the output it came
from (so `python -m presto_lib check pretrained/cpu` and tests/test_api.py see when the weights drift from the
pipeline). Steps and sampler are the ones the outputs were evaluated with (`PrestoPipeline.from_outputs`), so
`PrestoPipeline.from_pretrained("cpu")` generates as Table 2 did.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from presto_lib.stages.common import require, start

__all__ = ["MODELS", "out_dir", "main"]

MODELS = ("vae", "base", "presto_ls")           # what a fresh clone needs to generate (base and Presto-LS)


def out_dir(profile: str) -> Path:
    """pretrained/<profile> (the path registry.PRETRAINED renders)."""
    return Path("pretrained") / profile


def main(argv: list[str] | None = None) -> int:
    """Export MODELS of the active profile's outputs to pretrained/<profile>/."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.pretrained", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("pretrained", a.params)
    from presto_lib.api import PrestoPipeline
    from presto_lib.pretrained import default_sources, export_pretrained

    sources = default_sources(S.P)
    src = {m: str(require(Path(sources[m].path) / "model.safetensors", sources[m].stage).parent) for m in MODELS}
    pipe = PrestoPipeline.from_outputs(S.root, a.params)      # the steps and sampler the outputs were evaluated with
    out = out_dir(S.profile)
    if out.exists():
        shutil.rmtree(out)                                   # nothing of an older export may linger
    manifest = export_pretrained(src, out, torch.float16, root=S.root, steps=pipe.default_steps,
                                 sampling=pipe.sampling_opts)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    S.log.info("exported %s to %s: %.1f MiB (%s)", ", ".join(src), out, size / 2**20, manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
