"""What the artefact stages share (Fig. 9, Fig. 13, the 79-NFE base row, Tables 3-4): loading the trained systems.

    t2m, G, cfg, steps = presto_ls_generator(P, device)      # Presto-LS + its pipeline, ping-pong steps
    systems = trained_systems(P, device)                     # name -> (model, kind) for Tables 3-4
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PRESTO_LS_DIR", "presto_ls_steps", "base_pipeline", "presto_ls_generator", "load_m2s"]

PRESTO_LS_DIR = Path("data/presto_ls/presto_ls/generator")     # stage presto_ls_distill


def presto_ls_steps(P: dict[str, Any]) -> int:
    """Ping-pong steps of the Presto-LS Table 2 samples (presto_ls.table_steps, else presto_s.table_steps)."""
    return int(P["presto_ls"]["table_steps"] or P["presto_s"]["table_steps"])


def base_pipeline(P: dict[str, Any], device: str = "cpu"):
    """The base model's TextToMusic (DPM-2S + CFG++ of the base row) with the VAE decoder."""
    from presto_lib.diffusion.pipeline import TextToMusic
    from presto_lib.stages.base import sampling_config

    t2m = TextToMusic.from_checkpoints(P["presto_s"]["base_model"], P["presto_s"]["vae"], device=device,
                                       sampling=sampling_config(P))
    t2m.model.eval()
    return t2m


def presto_ls_generator(P: dict[str, Any], device: str = "cpu"):
    """(t2m, Presto-LS generator, its PrestoSConfig, ping-pong steps): the system Figs 9 and 13 sample."""
    from presto_lib.distill.generator import load_generator
    from presto_lib.stages.presto_s import run_config

    G, _ = load_generator(PRESTO_LS_DIR, device)
    return base_pipeline(P, device), G.eval(), run_config(P["presto_ls"]["presto_s_run"], P), presto_ls_steps(P)


def load_m2s(path_dir: str | Path, device: str = "cpu"):
    """The trained mono-to-stereo model saved by stage `m2s` (EMA weights + M2SConfig)."""
    from presto_lib.checkpoint import load_checkpoint
    from presto_lib.models.m2s import M2SConfig, MonoToStereo

    tensors, cfg = load_checkpoint(path_dir, "cpu")
    model = MonoToStereo(M2SConfig(**cfg["m2s"]))
    model.load_state_dict(tensors)
    return model.to(device).eval()
