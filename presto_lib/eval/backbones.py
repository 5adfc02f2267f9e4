"""Embedding backbones by name: the one place that knows every embedder (so `embeddings`, `clap` and
`corpus_clap` never import each other in a cycle: they sit below this module).
"""
from __future__ import annotations

from presto_lib.eval.clap import ClapEmbedder
from presto_lib.eval.corpus_clap import load_corpus_clap
from presto_lib.eval.embeddings import AudioEmbedder, MusicnnEmbedder

__all__ = ["get_embedder"]


def get_embedder(name: str = "musicnn", **kwargs) -> AudioEmbedder:
    """An embedder by name: 'musicnn' (default, offline), 'musicnn-<layer>', 'clap' (path=local LAION-CLAP
    folder) or 'corpus_clap' (path=a trained corpus CLAP checkpoint folder)."""
    if name == "musicnn":
        return MusicnnEmbedder(**kwargs)
    if name.startswith("musicnn-"):
        return MusicnnEmbedder(layer=name.split("-", 1)[1], **kwargs)
    if name == "clap":
        return ClapEmbedder(**kwargs)
    if name == "corpus_clap":
        return load_corpus_clap(**kwargs)
    raise ValueError(f"unknown embedding backbone {name!r}; use 'musicnn', 'musicnn-<layer>', 'clap' or "
                     "'corpus_clap'")
