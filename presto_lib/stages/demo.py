"""The `demo` stage: the listening page results/<...>/demo/index.html with short clips of every built system.

    python -m presto_lib.stages.demo --prompts 4 --seconds 5

Systems (in this order; one that is not built yet is skipped and named on the page): the real reference (the
corpus test split), the base model, ASE, Presto-L, Presto-S, DMD-GAN and Presto-LS, from their Table 2 sample
folders under data/samples/. Same prompts (caption and BPM) for every system (`eval.demo.build_demo`).
"""
from __future__ import annotations

import argparse
from typing import Any

from presto_lib.eval.demo import build_demo
from presto_lib.stages.common import start

__all__ = ["systems", "main"]


def systems(P: dict[str, Any]) -> dict[str, str]:
    """{system id: samples folder or prompts CSV} of the page, in column order."""
    ps = P["presto_s"]
    return {"reference": str(P["base"]["manifest"]),
            "base": "data/samples/base",
            "ase": "data/samples/ase",
            "presto_l": "data/samples/presto_l",
            "presto_s": f"data/samples/presto_s_{ps['presto_s_run']}",
            "dmd_gan": f"data/samples/presto_s_{ps['dmd_gan_run']}",
            "presto_ls": "data/samples/presto_ls"}


def main(argv: list[str] | None = None) -> int:
    """Write <results>/demo/ (index.html, demo.json, audio/<system>/NN.ogg)."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=4, help="prompts (rows) on the page")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    a = ap.parse_args(argv)
    S = start("demo", a.params)
    rate = min(16000, int(S.P["common"]["sample_rate"]))
    page = build_demo(systems(S.P), S.results / "demo", n_prompts=a.prompts, seconds=a.seconds, sample_rate=rate)
    S.log.info("wrote %s", page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
