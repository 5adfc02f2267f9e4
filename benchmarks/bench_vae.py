#!/usr/bin/env python
"""VAE encode / decode throughput (x real time) at each profile's size on this machine.

    python benchmarks/bench_vae.py                          # every profile, its own clip length, batch 1
    python benchmarks/bench_vae.py --profiles cpu paper --seconds 4 --batch 4 --device cuda

x real time = seconds of audio processed per second of wall time (> 1 is faster than real time). Weights are
random (speed does not depend on them); widths, strides and sample rate come from profiles/vae.yaml.
"""
from __future__ import annotations

import argparse

import torch

from presto_lib.config import PROFILES, render_profile
from presto_lib.eval.latency import measure_latency
from presto_lib.models.vae import VAE, VAEConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default: the profile's)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, batch {a.batch}")
    print(f"{'profile':8} {'params':>8} {'sr':>6} {'hop':>4} {'dim':>4} {'clip s':>6} {'encode xRT':>11} "
          f"{'decode xRT':>11}")
    for p in a.profiles:
        P = render_profile(p)
        sr, sec = P["common"]["sample_rate"], a.seconds or P["common"]["clip_seconds"]
        vae = VAE(VAEConfig.from_params({**P["vae"], "sample_rate": sr})).to(a.device).eval()
        wav = torch.randn(a.batch, 1, int(sec * sr), device=a.device) * 0.1
        z = vae.encode(wav)[0]
        kw = dict(warmup=1, repeats=a.repeats, audio_seconds=sec, batch_size=a.batch, device=a.device)
        enc = measure_latency(lambda: vae.encode(wav), **kw)
        dec = measure_latency(lambda: vae.decode(z), **kw)
        n = sum(q.numel() for q in vae.parameters()) / 1e6
        print(f"{p:8} {n:7.2f}M {sr:6d} {vae.hop_length:4d} {vae.latent_dim:4d} {sec:6.1f} {enc.rtf:11.1f} "
              f"{dec.rtf:11.1f}", flush=True)


if __name__ == "__main__":
    main()
