"""Offline music corpus: MIDI -> audio + caption + BPM (`build_corpus`), user audio folders (`import_audio_folder`),
and the clip dataset (`ClipDataset`). Submodules load lazily so `import presto_lib.data` stays light."""
from importlib import import_module

_EXPORTS = {"build_corpus": "corpus", "MANIFEST_COLUMNS": "corpus", "ClipDataset": "datasets",
            "import_audio_folder": "folder", "read_manifest": "datasets"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
