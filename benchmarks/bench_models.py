#!/usr/bin/env python
"""VAE encode/decode and DiT forward throughput at each profile's size on this machine, and the RTF they imply.

    python benchmarks/bench_models.py                                  # smoke, cpu, gpu (+ paper on CUDA)
    python benchmarks/bench_models.py --profiles paper --device cuda --batch 1 --train

Weights are random (speed does not depend on them); sizes come from profiles/{common,vae,base}.yaml. The DiT is
timed at batch 2b, the batch a CFG / CFG++ step runs (conditional + null condition together), with a text
condition of `--text-tokens` tokens. "est. RTF" = clip seconds / (NFE x DiT forward + VAE decode) at the
profile's DPM-2S step count (NFE = 2 steps - 1), i.e. the paper's A.6 RTF without text encoding.
`--train` also times one DSM training step (forward + backward + Adam) at the profile's batch size.
"""
from __future__ import annotations

import argparse
import math

import torch

from presto_lib.config import PROFILES, render_profile
from presto_lib.diffusion.score_model import DSMStep, build_score_model
from presto_lib.eval.latency import measure_latency
from presto_lib.models.vae import VAE, VAEConfig

TEXT_DIM = 384      # all-MiniLM-L6-v2


def bench_profile(p: str, batch: int, repeats: int, device: str, text_tokens: int, train: bool,
                  train_batch: int | None = None) -> dict:
    """Times for one profile: VAE encode/decode, DiT forward at batch 2b, optionally a training step."""
    P = render_profile(p)
    sr, sec = P["common"]["sample_rate"], P["common"]["clip_seconds"]
    vae = VAE(VAEConfig.from_params({**P["vae"], "sample_rate": sr})).to(device).eval()
    wav = torch.randn(batch, 1, int(sec * sr), device=device) * 0.1
    kw = dict(warmup=1, repeats=repeats, device=device)
    z = vae.encode(wav)[0]
    enc, dec = measure_latency(lambda: vae.encode(wav), **kw), measure_latency(lambda: vae.decode(z), **kw)
    B = P["base"]
    model = build_score_model(B["dit"], in_channels=vae.latent_dim, text_dim=TEXT_DIM).to(device).eval()
    n2 = 2 * batch
    x = torch.randn(n2, vae.latent_dim, z.shape[-1], device=device)
    cond = {"text": torch.randn(n2, text_tokens, TEXT_DIM, device=device),
            "text_mask": torch.ones(n2, text_tokens, dtype=torch.bool, device=device),
            "bpm": torch.full((n2,), 120.0, device=device)}
    sigma = torch.full((n2,), 1.0, device=device)
    fwd = measure_latency(lambda: model(x, sigma, cond), **kw)
    nfe = 2 * int(B["sample_steps"]) - 1
    row = {"profile": p, "dit_M": model.net.num_params() / 1e6, "vae_M": sum(q.numel() for q in vae.parameters()) / 1e6,
           "sr": sr, "clip_s": sec, "frames": z.shape[-1], "tokens": z.shape[-1] // B["dit"].get("patch_size", 1),
           "enc_xrt": batch * sec / enc.median_s, "dec_xrt": batch * sec / dec.median_s,
           "fwd_ms": 1e3 * fwd.median_s, "nfe": nfe, "est_rtf": batch * sec / (nfe * fwd.median_s + dec.median_s)}
    if train:
        bs = int(train_batch or B["batch_size"])
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        data = {"latents": torch.randn(bs, vae.latent_dim, z.shape[-1], device=device),
                "text": torch.randn(bs, text_tokens, TEXT_DIM, device=device),
                "text_mask": torch.ones(bs, text_tokens, dtype=torch.bool, device=device),
                "bpm": torch.full((bs,), 120.0, device=device)}
        step = DSMStep()

        def one() -> None:
            with torch.inference_mode(False), torch.enable_grad():   # measure_latency runs in inference mode
                loss, _ = step.loss(model, data)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        t = measure_latency(one, **kw)
        row.update(train_batch=bs, train_step_s=t.median_s, train_samples_s=bs / t.median_s)
    return row


def main() -> None:
    default = list(PROFILES) if torch.cuda.is_available() else [p for p in PROFILES if p != "paper"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+", default=default, choices=PROFILES)
    ap.add_argument("--batch", type=int, default=1, help="generation batch b (the DiT runs 2b for guidance)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text-tokens", type=int, default=32)
    ap.add_argument("--train", action="store_true", help="also time a DSM training step at the profile's batch")
    ap.add_argument("--train-batch", type=int, default=None,
                    help="batch of the timed training step (default: the profile's global batch_size; the paper's "
                         "448 is over 32 GPUs, i.e. 14 per GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, generation batch {a.batch}")
    head = (f"{'profile':8} {'DiT':>8} {'VAE':>7} {'sr':>6} {'clip s':>6} {'tokens':>6} {'enc xRT':>8} "
            f"{'dec xRT':>8} {'DiT fwd ms':>10} {'NFE':>4} {'est. RTF':>8}")
    print(head + ("  train step s  samples/s" if a.train else ""))
    for p in a.profiles:
        r = bench_profile(p, a.batch, a.repeats, a.device, a.text_tokens, a.train, a.train_batch)
        line = (f"{p:8} {r['dit_M']:7.2f}M {r['vae_M']:6.2f}M {r['sr']:6d} {r['clip_s']:6.1f} {r['tokens']:6d} "
                f"{r['enc_xrt']:8.1f} {r['dec_xrt']:8.1f} {r['fwd_ms']:10.1f} {r['nfe']:4d} {r['est_rtf']:8.2f}")
        if a.train:
            line += f"  {r['train_step_s']:12.3f} {r['train_samples_s']:10.1f}"
        print(line, flush=True)
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
