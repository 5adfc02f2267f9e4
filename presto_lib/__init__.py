"""Presto companion library: an open implementation of Presto! (Novack et al., ICLR 2025).

Import graph flows one way: audio/data -> models -> diffusion -> distill -> eval.
Importing the package never touches the network: the Hugging Face hub is forced offline here.
"""
import os as _os

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    _os.environ.setdefault(_k, "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
