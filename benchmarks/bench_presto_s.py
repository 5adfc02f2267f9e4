#!/usr/bin/env python
"""Peak memory and step time of a Presto-S iteration vs a plain DSM step of the same DiT.

    python benchmarks/bench_presto_s.py                       # the cpu profile's DiT and latent size
    python benchmarks/bench_presto_s.py --profile gpu --batch 8 --device cuda

DSM step: the base model's update (eq. 3, forward + backward + Adam). Presto-S: one cycle of Algorithm 1 (five
fake-score turns and one generator turn), reported per iteration and per cycle (= per generator update). Memory:
the real, fake and generator DiTs and the head each live once (generator and fake are fresh modules loaded with the
base weights; the teacher is the base model itself, frozen), so Presto-S holds ~3 DiTs of weights + 2 Adam states.
Peak memory is CUDA's max allocated on GPU; on CPU each measurement runs in its own process and reports its peak
RSS above the RSS after imports. Weights are random (speed and memory do not depend on them).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from presto_lib.config import PROFILES, render_profile

DEFAULT_DIT = dict(hidden_size=256, depth=8, num_heads=4, mlp_ratio=4.0)   # when the profile has no `base.dit`


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def _measure(kind: str, a: dict, out: "mp.Queue") -> None:
    """Build the models, run warm-up + timed steps of `kind` ("dsm" or "presto_s"); report time and memory."""
    from presto_lib.diffusion.edm import dsm_loss
    from presto_lib.diffusion.score_model import build_score_model
    from presto_lib.distill.discriminator import DiscriminatorHead
    from presto_lib.distill.presto_s import FakeScore, PrestoS, PrestoSConfig, init_from_base, optimizer_update

    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    dev = torch.device(a["device"])
    rss0 = _rss_mb()
    make = lambda: build_score_model(a["dit"], in_channels=a["channels"], text_dim=a["text_dim"])
    base = make().to(dev)
    B, L = a["batch"], 16
    x = torch.randn(B, a["channels"], a["frames"], device=dev) * 0.5
    cond = {"text": torch.randn(B, L, a["text_dim"], device=dev), "text_mask": torch.ones(B, L, dtype=torch.bool,
            device=dev), "bpm": torch.full((B,), 120.0, device=dev)}
    if kind == "dsm":
        opt = torch.optim.Adam(base.parameters(), lr=1e-5)

        def step(i):
            loss = dsm_loss(base, x, cond)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        n_steps = a["repeats"]
    else:
        state = base.state_dict()
        head = DiscriminatorHead(a["dit"]["hidden_size"], n_down=2)
        ps = PrestoS(init_from_base(make, state).to(dev), FakeScore(init_from_base(make, state), head).to(dev),
                     base, PrestoSConfig())
        update = optimizer_update({k: torch.optim.Adam(m.parameters(), lr=1e-5) for k, m in ps.modules().items()})
        step = lambda i: ps.step(x, cond, i, update)
        n_steps = a["repeats"] * (ps.cfg.fake_updates + 1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(n_steps if kind == "presto_s" else 1):      # warm-up: one step / one whole cycle
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for i in range(n_steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    n_params = sum(p.numel() for p in base.parameters()) / 1e6
    cycle = ps.cfg.fake_updates + 1 if kind == "presto_s" else 1
    out.put({"kind": kind, "cycle": cycle, "s_per_step": (time.perf_counter() - t0) / n_steps, "peak_mb": peak, "params_m": n_params})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=PROFILES)
    ap.add_argument("--batch", type=int, default=None, help="default: presto_s.train.batch_size")
    ap.add_argument("--frames", type=int, default=None, help="latent frames (default: crop or the clip's length)")
    ap.add_argument("--repeats", type=int, default=2, help="timed DSM steps / Presto-S cycles")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    P = render_profile(args.profile)
    pt = P.get("presto_s", {}).get("train", {})
    hop = 1
    for s in P.get("vae", {}).get("strides", [320]):
        hop *= s
    frames = args.frames or pt.get("crop_frames") or int(P["common"]["sample_rate"] * P["common"]["clip_seconds"] / hop)
    a = {"dit": dict(P.get("base", {}).get("dit") or DEFAULT_DIT), "channels": int(P.get("vae", {}).get("latent_dim", 16)),
         "text_dim": 384, "frames": int(frames), "batch": args.batch or int(pt.get("batch_size", 4)),
         "repeats": args.repeats, "threads": args.threads, "device": args.device}
    print(f"profile {args.profile}, device {args.device}, threads {args.threads}, batch {a['batch']}, "
          f"latents [{a['channels']}, {a['frames']}], DiT {a['dit']}")
    ctx = mp.get_context("spawn")
    res = {}
    for kind in ("dsm", "presto_s"):
        q = ctx.Queue()
        p = ctx.Process(target=_measure, args=(kind, a, q))
        p.start()
        res[kind] = q.get()
        p.join()
    d, s = res["dsm"], res["presto_s"]
    print(f"DiT parameters: {d['params_m']:.2f} M")
    print(f"{'':26} {'s/step':>8} {'peak MB':>9}")
    print(f"{'DSM step':26} {d['s_per_step']:8.3f} {d['peak_mb']:9.0f}")
    print(f"{'Presto-S iteration':26} {s['s_per_step']:8.3f} {s['peak_mb']:9.0f}")
    print(f"{'Presto-S cycle (1 G update)':26} {s['cycle'] * s['s_per_step']:8.3f}")
    print(f"ratios: iteration / DSM step = {s['s_per_step'] / d['s_per_step']:.2f}x time, "
          f"{s['peak_mb'] / max(d['peak_mb'], 1e-9):.2f}x peak memory")


if __name__ == "__main__":
    main()
