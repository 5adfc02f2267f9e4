#!/usr/bin/env python
"""Tables 3 and 4 of the paper (A.6) with random weights at a profile's sizes: latency of generation, decoding and
mono-to-stereo, mono / stereo latency and RTF, at b = 1 (Table 3) and at each system's maximum batch size under a
stated memory cap (Table 4).

    python benchmarks/bench_tables.py --smoke                                    # seconds, CPU, smoke sizes
    python benchmarks/bench_tables.py --profile paper --device cuda --amp        # the GPU run (A100 in the paper)
    python benchmarks/bench_tables.py --profile paper --device cpu --systems presto_ls --clip-seconds 32 \\
        --no-max-batch                                                           # sec. 4.7: CPU RTF, 32 s mono

Systems (speed does not depend on the weights, so random ones are used): the base model (DPM-2S, `--base-steps`
steps = 2n - 1 NFE, CFG++), ASE and Presto-L (the same sampler with the D3 layer-dropping schedule; ASE drops from
the last block, Presto-L shifted and budget-conditioned), Presto-S and Presto-LS (`--distilled-steps` ping-pong
steps, no CFG; Presto-LS with the reduced schedule). Decoding: the profile's VAE; M2S: `presto_lib.models.m2s`.
Every system's parts are timed in interleaved rounds after a warm-up (`presto_lib.eval.latency.component_table`).
The max batch is searched (doubling, then bisection) on the whole mono + stereo pipeline: peak memory is CUDA's
max_memory_allocated on a GPU and the process's peak RSS on CPU; the cap is written into the table. Text encoding
is not timed (a fixed random caption embedding stands in for it). Writes `table3_latency.{csv,md}`,
`table4_max_batch.{csv,md}` and `bench_tables.json` to `--out`.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import pandas as pd
import torch

from presto_lib.config import PROFILES, render_profile
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic
from presto_lib.diffusion.sampling import sample_pingpong
from presto_lib.diffusion.score_model import build_score_model
from presto_lib.distill.presto_l import LayerDropModel, variant_config, with_schedule
from presto_lib.distill.presto_s import PrestoSConfig, generator_sigmas
from presto_lib.eval.latency import TABLE_COLUMNS, component_table, max_batch_size, peak_memory
from presto_lib.models.m2s import M2SConfig, MonoToStereo
from presto_lib.models.vae import VAE, VAEConfig

TEXT_DIM, TEXT_TOKENS = 384, 32          # all-MiniLM-L6-v2 width; a typical caption length
SYSTEMS = ("base", "ase", "presto_l", "presto_s", "presto_ls")
LABELS = {"base": "Base DM", "ase": "ASE", "presto_l": "Presto-L", "presto_s": "Presto-S", "presto_ls": "Presto-LS"}


class StubText:
    """Fixed random caption embeddings [B, L, D] (text encoding is not part of Tables 3-4)."""

    def __init__(self):
        self.emb = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(0))
        self.mask = torch.arange(TEXT_TOKENS)[None] < TEXT_TOKENS * 3 // 4

    def encode(self, captions: list[str]):
        n = len(captions)
        return self.emb.expand(n, -1, -1).clone(), self.mask.expand(n, -1).clone()


def build(P: dict, a: argparse.Namespace) -> tuple[dict, TextToMusic, MonoToStereo, float]:
    """generate(b) -> latents for each system, a TextToMusic (decoder), the M2S model, clip seconds."""
    dev, sr = a.device, int(P["common"]["sample_rate"])
    sec = float(a.clip_seconds or P["common"]["clip_seconds"])
    torch.manual_seed(0)
    vae = VAE(VAEConfig.from_params({**P["vae"], "sample_rate": sr})).to(dev).eval()
    frames = -(-int(sr * sec) // vae.hop_length)
    base = build_score_model(P["base"]["dit"], in_channels=vae.latent_dim, text_dim=TEXT_DIM).to(dev).eval()
    t2m_of = lambda model, cfg: TextToMusic(model, vae, StubText(), latent_shape=(vae.latent_dim, frames),
                                            sample_rate=sr, clip_samples=int(sr * sec), device=dev, sampling=cfg)
    base_cfg = SamplingConfig(steps=a.base_steps)              # DPM-2S + CFG++ w = 0.8 (A.1)
    models = {"base": base,
              "ase": LayerDropModel(base, variant_config("ase")),
              "presto_l": LayerDropModel(base, variant_config("presto_l")),
              "presto_s": base,
              "presto_ls": LayerDropModel(base, with_schedule(variant_config("presto_l"), "presto_ls"))}
    ps_cfg, t2m = PrestoSConfig(), t2m_of(base, base_cfg)

    def score_sampler(t: TextToMusic):
        return lambda b: t.sample_latents(["x"] * b, [120.0] * b, list(range(b)))

    def generator(model):                                      # ping-pong, no CFG (distilled in), per-seed noise
        def run(b: int) -> torch.Tensor:
            cond, _ = t2m.conditions(["x"] * b, [120.0] * b)
            sig = generator_sigmas(ps_cfg, a.distilled_steps).to(dev)
            x = t2m.initial_noise(range(b), float(sig[0]))
            return sample_pingpong(lambda xx, s: model(xx, s, cond), x, sig, disable=True,
                                   generator=torch.Generator(device=dev).manual_seed(0))
        return run
    gens = {k: (generator(m.to(dev).eval()) if k in ("presto_s", "presto_ls")
                else score_sampler(t2m_of(m.to(dev).eval(), base_cfg))) for k, m in models.items()}
    m2s = MonoToStereo(M2SConfig()).to(dev).eval()
    return {k: gens[k] for k in a.systems}, t2m, m2s, sec


def autocast(fn, device: str, amp: bool):
    """fn under bf16 autocast when `amp` (the paper's GPU setting); as is otherwise."""
    def run(*args):
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            return fn(*args)
    return run


def to_md(df: pd.DataFrame, title: str, note: str) -> str:
    """A Markdown table in the paper's layout (ms and RTF)."""
    cols = [c for c in (*TABLE_COLUMNS, "peak_memory_GiB", "memory_cap_GiB", "stopped_at_search_limit") if c in df]
    return f"## {title}\n\n{note}\n\n" + df[cols].to_markdown(index=False, floatfmt=".4g") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=PROFILES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--base-steps", type=int, default=40, help="DPM-2S steps of base/ASE/Presto-L (40 = 79 NFE)")
    ap.add_argument("--distilled-steps", type=int, default=4)
    ap.add_argument("--clip-seconds", type=float, default=None, help="override the profile's clip length")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--memory-cap-gb", type=float, default=None,
                    help="Table 4's cap (GiB); default: the GPU's total memory, or 8 GiB on CPU")
    ap.add_argument("--batch-limit", type=int, default=512, help="largest batch the search tries")
    ap.add_argument("--no-max-batch", action="store_true", help="Table 3 only")
    ap.add_argument("--no-m2s", action="store_true", help="leave the stereo columns empty")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="smoke sizes on CPU, 2 base steps, 1 repeat: seconds")
    ap.add_argument("--out", default="results/bench_tables")
    a = ap.parse_args()
    if a.smoke:
        a.profile, a.device, a.base_steps, a.repeats, a.batch_limit = "smoke", "cpu", 2, 1, 4
        a.memory_cap_gb = a.memory_cap_gb or 64.0
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    P = render_profile(a.profile)
    cuda = a.device.startswith("cuda")
    cap_gb = a.memory_cap_gb or (torch.cuda.get_device_properties(a.device).total_memory / 2**30 if cuda else 8.0)
    gens, t2m, m2s, sec = build(P, a)
    gens = {LABELS[k]: autocast(g, a.device, a.amp) for k, g in gens.items()}
    decode = autocast(t2m.decode, a.device, a.amp)
    stereo = None if a.no_m2s else autocast(m2s, a.device, a.amp)
    meta = {"profile": a.profile, "device": a.device, "amp_bf16": a.amp, "clip_s": sec,
            "sample_rate": t2m.sample_rate, "base_steps": a.base_steps, "base_nfe": 2 * a.base_steps - 1,
            "distilled_steps": a.distilled_steps, "repeats": a.repeats, "warmup": a.warmup,
            "memory_cap_GiB": cap_gb, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": torch.cuda.get_device_name(a.device) if cuda else platform.processor() or platform.machine(),
            "m2s_params_M": sum(p.numel() for p in m2s.parameters()) / 1e6}
    t3 = component_table(gens, decode, sec, stereo, 1, a.repeats, a.warmup, a.device)
    t3.to_csv(out / "table3_latency.csv", index=False)
    note = (f"Random weights, profile `{a.profile}`, {a.device} ({meta['machine']}), {sec:g} s clips; base / ASE / "
            f"Presto-L: DPM-2S {a.base_steps} steps ({meta['base_nfe']} NFE) + CFG++; Presto-S / LS: "
            f"{a.distilled_steps} steps; median of {a.repeats} interleaved rounds.")
    md = to_md(t3, "Table 3: latency (ms) and RTF, batch size 1", note)
    if not a.no_max_batch:
        cap = cap_gb * 2**30
        batches, peaks, at_limit = {}, {}, {}
        for name, g in gens.items():
            full = (lambda b, g=g: stereo(decode(g(b))) if stereo else decode(g(b)))
            r = max_batch_size(lambda b: peak_memory(lambda: full(b), a.device), cap, limit=a.batch_limit)
            if r.batch_size == 0:
                raise SystemExit(f"{name}: even batch 1 exceeds the {cap_gb:g} GiB cap")
            batches[name], peaks[name], at_limit[name] = r.batch_size, r.peak_bytes / 2**30, r.hit_limit
            print(f"[max batch] {name}: {r.batch_size}{' (search limit)' if r.hit_limit else ''}, "
                  f"peak {peaks[name]:.2f} GiB, probes {[b for b, _ in r.probes]}", flush=True)
        t4 = component_table(gens, decode, sec, stereo, batches, a.repeats, a.warmup, a.device)
        t4["peak_memory_GiB"], t4["memory_cap_GiB"] = t4["system"].map(peaks), cap_gb
        t4["stopped_at_search_limit"] = t4["system"].map(at_limit)
        t4.to_csv(out / "table4_max_batch.csv", index=False)
        md += "\n" + to_md(t4, "Table 4: latency (ms) and RTF at the maximum batch size",
                           note + f" Max batch: largest b (<= {a.batch_limit}) whose peak memory "
                           f"({'CUDA max allocated' if cuda else 'process peak RSS'}) stays within {cap_gb:g} GiB.")
    (out / "tables.md").write_text(md)
    (out / "table3_latency.md").write_text(md.split("\n## Table 4")[0])
    if not a.no_max_batch:
        (out / "table4_max_batch.md").write_text("## Table 4" + md.split("\n## Table 4")[1])
    (out / "bench_tables.json").write_text(json.dumps(meta, indent=1))
    print(md)


if __name__ == "__main__":
    main()
