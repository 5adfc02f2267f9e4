"""Shared test fixtures."""
import json

import pytest
import torch


@pytest.fixture
def tiny_world():
    """make(root, splits=("train",)): a saved tiny base model (root/base) and a 12-clip latent cache (root/latents)
    with the given splits, the inputs of the Presto-S stage and of the learning-curve validators."""

    def make(root, splits=("train",)):
        from safetensors.torch import save_file

        from presto_lib.diffusion.score_model import build_score_model, save_score_model
        torch.manual_seed(0)
        base = build_score_model(dict(hidden_size=16, depth=2, num_heads=2, mlp_ratio=2.0, patch_size=2),
                                 in_channels=4, text_dim=8)
        save_score_model(root / "base", base, {"latent_frames": 16, "sample_rate": 8000, "clip_samples": 2560})
        N, L = 12, 3
        lat = root / "latents"
        lat.mkdir()
        for split in splits:
            save_file({"latents": torch.randn(N, 4, 16) * 0.5, "latents_std": torch.zeros(N, 4, 16),
                       "text": torch.randn(N, L, 8), "text_mask": torch.ones(N, L, dtype=torch.bool),
                       "bpm": torch.full((N,), 100.0)}, str(lat / f"{split}.safetensors"))
            (lat / f"{split}.json").write_text(json.dumps({"captions": ["x"] * N,
                                                           "piece_ids": [str(i) for i in range(N)]}))
        (lat / "meta.json").write_text(json.dumps({"latent_dim": 4, "latent_frames": 16, "text_dim": 8}))
        return root

    return make
