#!/usr/bin/env python
"""Reference vs fast inference path: per-stage latency of base / Presto-S / Presto-LS, and Presto-S training memory.

    python benchmarks/bench_inference.py --out results/gpu                 # one CUDA GPU, paper size, <= 8 min
    python benchmarks/bench_inference.py --smoke --out /tmp/bi              # CPU dry run in seconds
    OMP_NUM_THREADS=2 python benchmarks/bench_inference.py --profile cpu --device cpu --threads 2 --out results/tables

Latency (paper A.6, RTF = b * clip seconds / latency): the text encoder (all-MiniLM-L6-v2 when installed, else a
stub; included and timed), generation and VAE decode, each timed with a device synchronisation, at b = 1 and at
--max-batch. Every system is timed on both paths in interleaved rounds (one call of each per round), so load
changes hit all alike:
    reference  `TextToMusic` / `generator_sampler` as the stages use them (bf16 autocast on CUDA, fp32 on CPU);
    fast       `presto_lib.inference` with the same optimisations for every system (bf16 weights on CUDA, CUDA
               graph of the whole sampling loop, optional torch.compile of DiT trunk and VAE decoder, cached
               text K/V, host-planned noise levels and layer dropping, batched CFG, flash-attn varlen or SDPA).
Base = DPM-2S + CFG++ (w 0.8) with `base.sample_steps` steps; Presto-S / Presto-LS = 4 ping-pong steps; weights are
random (speed does not depend on them). Training memory (CUDA only, else skipped unless --train-mem on): peak
memory of one generator and one fake-score iteration of Algorithm 1 (bf16 autocast, Adam) at --train-profile,
without and with activation checkpointing of the generator's and fake score's DiT blocks.
Writes bench_inference.json, bench_inference.csv and bench_inference.md to --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from presto_lib.config import PROFILES, render_profile
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic
from presto_lib.eval.latency import synchronize
from presto_lib.inference.pipeline import FastConfig, FastVAE
from presto_lib.inference.systems import build_models, fast_system, reference_system
from presto_lib.models.layers import HAS_FLASH_ATTN

CAPTION, BPM = "an upbeat electronic track with a driving bassline and bright synth chords", 124.0


class StubText:
    """Fixed random caption embeddings (when all-MiniLM-L6-v2 is not installed); 24 real tokens."""

    def __init__(self, dim: int = 384, n: int = 24):
        self.emb = torch.randn(1, n, dim, generator=torch.Generator().manual_seed(0))

    def encode(self, captions):
        B = len(captions)
        return self.emb.expand(B, -1, -1).clone(), torch.ones(B, self.emb.shape[1], dtype=torch.bool)


def text_encoders(device: str, dtype: torch.dtype, length: int):
    """(reference encoder, fast encoder: static length, weights in dtype, eval), or stubs when MiniLM is missing."""
    try:
        from presto_lib.models.text import TextEncoder
        ref = TextEncoder(device=device)
        fast = TextEncoder(device=device, max_length=length or 64, pad_to_max_length=bool(length))
        fast.model.to(dtype)
        return ref, fast, "all-MiniLM-L6-v2"
    except Exception as e:  # noqa: BLE001 - not installed / offline: a stub keeps the benchmark running
        print(f"text encoder unavailable ({type(e).__name__}: {e}); using a stub", file=sys.stderr)
        s = StubText()
        return s, s, "stub"


# ---- latency -----------------------------------------------------------------------------------------------

def _timed(fn, device: str) -> float:
    synchronize(device)
    t = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t


def reference_stages(t2m: TextToMusic, gen, B: int, device: str, amp: bool) -> dict[str, float]:
    """Reference per-stage times: text (conditions), decode alone, generation = end to end - text - decode."""
    caps, bpms, seeds = [CAPTION] * B, [BPM] * B, list(range(B))
    z = torch.randn(B, *t2m.latent_shape, device=device)
    ac = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if amp else nullcontext()
    with torch.inference_mode(), ac:
        total = _timed(lambda: gen(caps, bpms, seeds), device)
        text = _timed(lambda: t2m.conditions(caps, bpms), device)
        dec = _timed(lambda: t2m.decode(z), device)
    return {"text_s": text, "generation_s": max(total - text - dec, 0.0), "decode_s": dec, "total_s": total}


def fast_stages(f, B: int) -> dict[str, float]:
    f.generate([CAPTION] * B, [BPM] * B, list(range(B)), timed=True)
    return {**f.last_times, "total_s": sum(f.last_times.values())}


def latency(P: dict, a: argparse.Namespace) -> list[dict]:
    """Interleaved rounds over (system, path, batch); median per-stage seconds."""
    dev, cuda = a.device, a.device.startswith("cuda")
    fcfg = FastConfig(dtype=a.dtype, compile=a.compile != "none", cuda_graphs=not a.no_graphs,
                      compile_mode=a.compile if a.compile != "none" else "default", attention=a.attention,
                      compile_scope=a.compile_scope,
                      text_length=a.text_length)
    te_ref, te_fast, te_name = text_encoders(dev, torch.bfloat16 if cuda and a.dtype != "fp32" else torch.float32,
                                             a.text_length)
    text_dim = te_ref.dim if hasattr(te_ref, "dim") else 384
    vae, base, ls, frames, sr, clip = build_models(P, text_dim, dev)
    steps = int(a.base_steps or P["base"]["sample_steps"])
    t2m = TextToMusic(base, vae, te_ref, latent_shape=(vae.latent_dim, frames), sample_rate=sr, clip_samples=clip,
                      device=dev, sampling=SamplingConfig(steps=steps))
    models = {"base": base, "presto_s": base, "presto_ls": ls}
    systems = [s for s in a.systems if s in models]
    fast_vae = FastVAE(vae, _dtype(a.dtype, dev), compile=a.compile != "none", compile_mode=fcfg.compile_mode).to(dev)
    jobs = {}
    for s in systems:
        ref_gen = reference_system(s, t2m, models[s])
        f = fast_system(s, t2m, models[s], fcfg, vae_fast=fast_vae)
        f.text_encoder = te_fast
        for B in sorted({1, a.max_batch}):
            if s == "base" and B > 1 and a.skip_base_batch:
                continue
            jobs[(s, "reference", B)] = (lambda g=ref_gen, B=B: reference_stages(t2m, g, B, dev, cuda))
            jobs[(s, "fast", B)] = (lambda f=f, B=B: fast_stages(f, B))
    t0 = time.perf_counter()
    for k, fn in jobs.items():                       # warm-up: allocation, compilation, CUDA-graph capture
        for _ in range(a.warmup):
            fn()
        print(f"  warm {k}: {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict = {k: [] for k in jobs}
    for r in range(a.repeats):
        for k, fn in jobs.items():
            times[k].append(fn())
        print(f"  round {r + 1}/{a.repeats}: {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for (s, path, B), ts in times.items():
        med = {k: statistics.median(t[k] for t in ts) for k in ts[0]}
        rows.append({"system": s, "path": path, "batch": B, **{k: round(v, 5) for k, v in med.items()},
                     "rtf": round(B * clip / sr / med["total_s"], 2), "repeats": len(ts), "text_encoder": te_name})
    for r in rows:
        b = next((x for x in rows if x["system"] == "base" and x["path"] == r["path"] and x["batch"] == r["batch"]),
                 None)
        same = next(x for x in rows if x["system"] == r["system"] and x["path"] == "reference" and
                    x["batch"] == r["batch"])
        r["speedup_vs_base"] = round(b["total_s"] / r["total_s"], 2) if b else None
        r["speedup_vs_reference"] = round(same["total_s"] / r["total_s"], 2)
    return rows


def _dtype(name: str, device: str) -> torch.dtype:
    from presto_lib.inference.dit import resolve_dtype
    return resolve_dtype(name, torch.device(device))


# ---- Presto-S training memory -------------------------------------------------------------------------------

def train_memory(P: dict, device: str, batch: int) -> list[dict]:
    """Peak memory of a generator turn and a fake turn of Algorithm 1, without / with block checkpointing."""
    import gc

    from presto_lib.diffusion.score_model import build_score_model
    from presto_lib.distill.discriminator import DiscriminatorHead
    from presto_lib.distill.presto_s import FakeScore, PrestoS, PrestoSConfig, init_from_base, optimizer_update

    cuda = device.startswith("cuda")
    hop = 1
    for s in P["vae"]["strides"]:
        hop *= int(s)
    frames = -(-int(P["common"]["sample_rate"] * P["common"]["clip_seconds"]) // hop)
    p = int(P["base"]["dit"].get("patch_size", 1))
    frames = -(-frames // p) * p
    C, L, D = int(P["vae"]["latent_dim"]), 32, 384
    rows = []
    for ckpt in (False, True):
        def make():
            with torch.device(device):      # initialise on the device (a paper-size DiT is slow to init on CPU)
                return build_score_model(P["base"]["dit"], in_channels=C, text_dim=D)
        base = make()
        state = base.state_dict()
        G = init_from_base(make, state).to(device)
        fake = FakeScore(init_from_base(make, state), DiscriminatorHead(P["base"]["dit"]["hidden_size"], n_down=2))
        fake = fake.to(device)
        for m in (G.net, fake.score.net):
            m.checkpoint_blocks = ckpt
        ps = PrestoS(G, fake, base, PrestoSConfig())
        update = optimizer_update({k: torch.optim.Adam(m.parameters(), lr=1e-6) for k, m in ps.modules().items()})
        x = torch.randn(batch, C, frames, device=device) * 0.5
        cond = {"text": torch.randn(batch, L, D, device=device), "text_mask": torch.ones(batch, L, dtype=torch.bool,
                device=device), "bpm": torch.full((batch,), 120.0, device=device)}
        ac = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        for turn, it in (("fake", 0), ("generator", ps.cfg.fake_updates)):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            with ac:
                ps.step(x, cond, it, update)
            synchronize(device)
            rows.append({"turn": turn, "checkpoint_blocks": ckpt, "batch": batch, "frames": frames,
                         "seconds": round(time.perf_counter() - t, 3),
                         "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None})
            print(f"  train memory {rows[-1]}", flush=True)
        del base, G, fake, ps, update
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return rows


# ---- report -------------------------------------------------------------------------------------------------

def to_markdown(r: dict) -> str:
    """The tables of the JSON, readable."""
    e = r["env"]
    lines = [f"# Inference latency: reference vs fast path ({e['device_name']}, torch {e['torch']})", "",
             f"Command: `{r['command']}`", "",
             f"Profile `{r['profile']}`: {r['clip_seconds']:.0f} s mono at {r['sample_rate']} Hz; fast path "
             f"{r['fast']}; flash-attn installed: {e['flash_attn']}; threads {e['threads']}. Median of "
             f"{r['repeats']} interleaved rounds; seconds.", "",
             "| system | path | batch | text | generation | decode | total | RTF | vs base | vs reference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["latency"]:
        lines.append(f"| {x['system']} | {x['path']} | {x['batch']} | {x['text_s']:.4f} | {x['generation_s']:.4f} | "
                     f"{x['decode_s']:.4f} | {x['total_s']:.4f} | {x['rtf']} | {x['speedup_vs_base'] or ''} | "
                     f"{x['speedup_vs_reference']} |")
    tm = r.get("train_memory")
    lines += ["", "## Presto-S training iteration memory", ""]
    if isinstance(tm, list):
        lines += ["| turn | checkpoint_blocks | batch | frames | s | peak GiB |", "|---|---|---|---|---|---|"]
        lines += [f"| {x['turn']} | {x['checkpoint_blocks']} | {x['batch']} | {x['frames']} | {x['seconds']} | "
                  f"{x['peak_GiB'] if x['peak_GiB'] is not None else 'n/a (CPU)'} |" for x in tm]
    else:
        lines.append(f"skipped: {tm}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="smoke profile on CPU, 1 round: a dry run in seconds")
    ap.add_argument("--profile", default="paper", choices=PROFILES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--systems", nargs="+", default=["base", "presto_s", "presto_ls"])
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--skip-base-batch", action="store_true", help="time the base model at b = 1 only")
    ap.add_argument("--base-steps", type=int, default=None, help="default: base.sample_steps of the profile")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per job (the first fast call compiles and "
                    "captures the CUDA graphs)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    ap.add_argument("--compile", default="auto",
                    help="torch.compile mode for DiT + VAE decoder, or none (auto: default on CUDA, none on CPU)")
    ap.add_argument("--compile-scope", default="blocks", choices=("blocks", "trunk"))
    ap.add_argument("--no-graphs", action="store_true", help="no CUDA graph of the sampling loop")
    ap.add_argument("--attention", default="auto", choices=("auto", "sdpa", "flash"))
    ap.add_argument("--text-length", type=int, default=64, help="static text tokens; 0: each batch's longest")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--train-mem", default="auto", choices=("auto", "on", "off"), help="auto: on for CUDA only")
    ap.add_argument("--train-profile", default="paper", choices=PROFILES)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--out", default="results/gpu")
    ap.add_argument("--name", default="bench_inference", help="output file stem")
    a = ap.parse_args(argv)
    if a.smoke:
        a.profile, a.device, a.repeats, a.warmup, a.max_batch = "smoke", "cpu", 1, 1, 2
        a.train_profile, a.train_batch = "smoke", 2
    if a.compile == "auto":
        a.compile = "default" if a.device.startswith("cuda") else "none"
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    P = render_profile(a.profile)
    cuda = a.device.startswith("cuda")
    r = {"command": " ".join(["python benchmarks/bench_inference.py", *(argv if argv is not None else sys.argv[1:])]),
         "profile": a.profile, "sample_rate": P["common"]["sample_rate"], "clip_seconds": P["common"]["clip_seconds"],
         "repeats": a.repeats,
         "fast": {"dtype": a.dtype, "compile": a.compile, "compile_scope": a.compile_scope,
                  "cuda_graphs": cuda and not a.no_graphs,
                  "attention": a.attention, "text_length": a.text_length},
         "env": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                 "device_name": torch.cuda.get_device_name() if cuda else (platform.processor() or "cpu"),
                 "flash_attn": HAS_FLASH_ATTN, "threads": torch.get_num_threads()}}
    t0 = time.perf_counter()
    r["latency"] = latency(P, a)
    print(f"latency done in {time.perf_counter() - t0:.1f} s", flush=True)
    if a.train_mem == "on" or (a.train_mem == "auto" and cuda):
        r["train_memory"] = train_memory(render_profile(a.train_profile), a.device, a.train_batch)
    else:
        r["train_memory"] = "CUDA only (run with --train-mem on to exercise it on CPU)"
    (out / f"{a.name}.json").write_text(json.dumps(r, indent=1, default=str))
    import csv
    with open(out / f"{a.name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(r["latency"][0]))
        w.writeheader()
        w.writerows(r["latency"])
    (out / f"{a.name}.md").write_text(to_markdown(r))
    print(to_markdown(r))
    return r


if __name__ == "__main__":
    main()
