"""The evaluator every evaluating stage uses, built one way from the params (`metrics` group + a stage's paths).

It also owns the per-clip evaluation data the claims ledger reads: every folder an evaluating stage scores with
`evaluate_dir` is saved as data/evaluations/<stage>/<eval_key(folder)>.npz (backbone embeddings, per-clip CLAP,
prompts, seeds; `eval.evaluate.clip_data`), a declared output of that stage (`StageSpec.evaluates`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from presto_lib.eval.evaluate import Evaluator, eval_key, load_clip_data

__all__ = ["EVALUATIONS", "evaluation_dir", "make_evaluator", "find_evaluation", "load_evaluation"]

EVALUATIONS = Path("data/evaluations")


def evaluation_dir(stage: str) -> Path:
    """Where a stage's per-clip evaluation data lands (the dvc out `data/evaluations/<stage>`)."""
    return EVALUATIONS / stage.split(".")[0].split("@")[0]


def make_evaluator(P: dict[str, Any], group: str, *, save: bool = True) -> Evaluator:
    """`eval.evaluate.Evaluator` on `P[group]`'s manifest and metrics cache, with the `metrics` group's settings
    (reference split, backbone, k, musicnn hop; the corpus CLAP unless `metrics.clap_path` names LAION-CLAP).
    With `save` (inside a stage), every evaluated folder's per-clip data goes to `evaluation_dir(stage)`."""
    from presto_lib.stages.common import current_stage
    M, G = P["metrics"], P[group]
    stage = current_stage()
    clip_dir = evaluation_dir(stage) if save and stage else None
    if clip_dir is not None:
        clip_dir.mkdir(parents=True, exist_ok=True)
    return Evaluator(G["manifest"], M["reference_split"], G["metrics_dir"], clap=M["clap_path"] or "corpus",
                     backbone=M["backbone"], k=int(M["k"]), hop_s=float(M["musicnn_hop_s"]), clip_dir=clip_dir)


def find_evaluation(samples_dir: str | Path, root: str | Path = EVALUATIONS) -> Path | None:
    """The saved per-clip data of a samples folder (any stage's), or None."""
    hits = sorted(Path(root).glob(f"*/{eval_key(samples_dir)}.npz"))
    return hits[0] if hits else None


def load_evaluation(samples_dir: str | Path, ev: Evaluator | None = None,
                    root: str | Path = EVALUATIONS) -> dict[str, Any] | None:
    """Per-clip data of a samples folder: the saved file, else computed with `ev` when the folder exists."""
    hit = find_evaluation(samples_dir, root)
    if hit is not None:
        return load_clip_data(hit)
    if ev is not None and (Path(samples_dir) / "samples.csv").is_file():
        return ev.clips(samples_dir)
    return None
