"""The `latents` stage: encode the corpus with the trained VAE into the latent cache (paths: params `base`).

Each channel is standardised to std `base.latent_std` (0.5 = sigma_data, A.1 / EDM2), the spread measured by
`base.latent_spread` (std: the plain std, as EDM2; mad: robust). Tempo-free captions are encoded too (BPM).

    python -m presto_lib.stages.latents
"""
from __future__ import annotations

import argparse
import json

from presto_lib.data.latents import build_latent_cache, read_meta
from presto_lib.models.text import get_text_encoder
from presto_lib.models.vae import load_vae
from presto_lib.stages.common import start

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """CLI: data/corpus + data/vae -> data/latents (`data.latents.build_latent_cache`)."""
    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.latents", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("latents", a.params)
    B = S.P["base"]
    out = build_latent_cache(B["manifest"], load_vae(B["vae"]), get_text_encoder(device=S.device), B["latents"],
                             batch_size=int(B["encode_batch_size"]), store_std=bool(B["sample_posterior"]),
                             target_std=float(B["latent_std"]), spread=str(B["latent_spread"]),   # sigma_data (A.1)
                             device=S.device)
    print(json.dumps(read_meta(out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
