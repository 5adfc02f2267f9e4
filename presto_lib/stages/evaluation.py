"""The evaluator every evaluating stage uses, built one way from the params (`metrics` group + a stage's paths)."""
from __future__ import annotations

from typing import Any

from presto_lib.eval.evaluate import Evaluator

__all__ = ["make_evaluator"]


def make_evaluator(P: dict[str, Any], group: str) -> Evaluator:
    """`eval.evaluate.Evaluator` on `P[group]`'s manifest and metrics cache, with the `metrics` group's settings
    (reference split, backbone, k, musicnn hop; the corpus CLAP unless `metrics.clap_path` names LAION-CLAP)."""
    M, G = P["metrics"], P[group]
    return Evaluator(G["manifest"], M["reference_split"], G["metrics_dir"], clap=M["clap_path"] or "corpus",
                     backbone=M["backbone"], k=int(M["k"]), hop_s=float(M["musicnn_hop_s"]))
