#!/usr/bin/env python
"""The GPU paths in one run: bf16 autocast accuracy, attention back-ends, the training loop on CUDA, and the
end-to-end latency of base / Presto-S / Presto-LS at the paper's size (A.6), b = 1.

    python benchmarks/gpu_check.py --out results/gpu                      # one CUDA GPU, random weights
    python benchmarks/gpu_check.py --profile smoke --train-profile smoke --device cpu --out /tmp/g   # dry run

Weights are random: speed does not depend on them, and the accuracy checks compare two numerics of the same
network. Text encoding is left out of the latency (a stub returns fixed embeddings), as the paper's RTF includes
it but its T5 encoder is not part of this project. Writes `gpu_check.json` and `gpu_check.md` to --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from presto_lib.config import PROFILES, render_profile
from presto_lib.diffusion.pipeline import SamplingConfig, TextToMusic
from presto_lib.diffusion.score_model import DSMStep, build_score_model
from presto_lib.distill.presto_l import LayerDropModel
from presto_lib.distill.presto_ls import reduced_layer_config
from presto_lib.distill.presto_s import PrestoSConfig
from presto_lib.distill.generator import generator_sampler
from presto_lib.eval.latency import measure_latency, synchronize, time_systems
from presto_lib.models.layers import HAS_FLASH_ATTN
from presto_lib.models.vae import VAE, VAEConfig
from presto_lib.train import TrainConfig, train

TEXT_DIM, TEXT_TOKENS = 384, 32          # all-MiniLM-L6-v2 width; a typical caption length


class StubText:
    """Fixed random caption embeddings [B, L, D] with the last quarter of tokens padded (text encoding is not timed)."""

    def __init__(self, device: str):
        g = torch.Generator().manual_seed(0)
        self.emb = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=g)
        self.mask = torch.arange(TEXT_TOKENS)[None] < TEXT_TOKENS * 3 // 4

    def encode(self, captions: list[str]):
        n = len(captions)
        return self.emb.expand(n, -1, -1).clone(), self.mask.expand(n, -1).clone()


class RandomLatents(Dataset):
    """Seeded random latents + conditions in the latent cache's item format."""

    def __init__(self, n: int, channels: int, frames: int):
        g = torch.Generator().manual_seed(1)
        self.z = torch.randn(n, channels, frames, generator=g)
        self.text = torch.randn(n, TEXT_TOKENS, TEXT_DIM, generator=g)

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> dict:
        return {"latents": self.z[i], "text": self.text[i], "text_mask": torch.ones(TEXT_TOKENS, dtype=torch.bool),
                "bpm": torch.tensor(60.0 + i)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def timed(fn, device: str, repeats: int = 3) -> float:
    """Median seconds of fn() after one warm-up."""
    return measure_latency(fn, warmup=1, repeats=repeats, device=device).median_s


# ---- 1. bf16 autocast and attention back-ends on the paper-size DiT ----------------------------------------

@torch.no_grad()
def check_numerics(P: dict, device: str, channels: int, frames: int) -> dict:
    """fp32 vs bf16 autocast DiT outputs; every SDPA back-end that accepts our masked joint attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = build_score_model(P["base"]["dit"], in_channels=channels, text_dim=TEXT_DIM).to(device).eval()
    for p in model.parameters():      # zero-init layers (AdaLN, final layer) would make the DiT output 0 in any dtype
        if not p.any():
            p.normal_(0.0, 0.02)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, channels, frames, generator=g).to(device)
    mask = torch.ones(2, TEXT_TOKENS, dtype=torch.bool)
    mask[1, TEXT_TOKENS // 2:] = False                    # one padded caption: the masked attention path
    cond = {"text": torch.randn(2, TEXT_TOKENS, TEXT_DIM, generator=g).to(device), "text_mask": mask.to(device),
            "bpm": torch.tensor([90.0, 120.0], device=device)}
    sigma = torch.tensor([0.5, 5.0], device=device)
    ref = model(x, sigma, cond)
    out = {"dit_params_M": sum(p.numel() for p in model.parameters()) / 1e6, "tokens": frames,
           "fwd_fp32_ms": 1e3 * timed(lambda: model(x, sigma, cond), device)}
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        bf = model(x, sigma, cond)
        out["fwd_bf16_ms"] = 1e3 * timed(lambda: model(x, sigma, cond), device)
    out["bf16_rel_err"] = rel_err(bf, ref)
    backends = {"math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    for name, be in backends.items():
        try:
            with sdpa_kernel([be]), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                y = model(x, sigma, cond)
                ms = 1e3 * timed(lambda: model(x, sigma, cond), device)
            out[f"sdpa_{name}"] = {"ok": True, "bf16_ms": ms, "rel_err_vs_fp32": rel_err(y, ref)}
        except RuntimeError as e:                         # a back-end that rejects the mask / dtype / device
            out[f"sdpa_{name}"] = {"ok": False, "error": str(e).splitlines()[0][:160]}
    out["flash_attn_installed"] = HAS_FLASH_ATTN
    return out


# ---- 2. the training loop on the device: bf16 autocast, checkpoint, exact resume ----------------------------

def check_train(P: dict, device: str, channels: int, frames: int, steps: int = 8) -> dict:
    """DSM steps through `presto_lib.train` (amp auto = bf16 on CUDA), straight vs killed halfway and resumed."""
    ds = RandomLatents(64, channels, frames)
    bs = 8
    res: dict = {"dit": P["base"]["dit"], "batch": bs, "steps": steps}

    def run(run_dir: Path, stop_after: int | None) -> tuple[torch.nn.Module, float]:
        torch.manual_seed(0)
        model = build_score_model(P["base"]["dit"], in_channels=channels, text_dim=TEXT_DIM)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cfg = TrainConfig(run_dir=str(run_dir), max_steps=steps, batch_size=bs, ckpt_every=steps // 2,
                          log_every=1, stop_after=stop_after, desc="gpu-check")
        t0 = time.perf_counter()
        ctx = train(DSMStep(), modules={"score": model}, optimizers={"score": opt}, dataset=ds, cfg=cfg,
                    ema=["score"])
        synchronize(device)
        return ctx.raw["score"], time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        straight, t_straight = run(Path(tmp) / "a", None)
        res["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
        run(Path(tmp) / "b", steps // 2)                   # "killed" after half the steps (checkpoint written)
        resumed, _ = run(Path(tmp) / "b", None)
        with open(Path(tmp) / "a" / "log.csv") as f:
            losses = [float(row["loss"]) for row in csv.DictReader(f)]
    diffs = [float((p - q).detach().abs().max()) for p, q in zip(straight.parameters(), resumed.parameters())]
    res.update(wall_s=t_straight, resume_max_abs_diff=max(diffs), losses=losses)
    return res


# ---- 3. end-to-end latency (A.6): base 2N-1 NFE DPM-2S + CFG++, Presto-S / Presto-LS 4 steps, VAE decode ---------

@torch.no_grad()
def check_latency(P: dict, device: str, repeats: int, amp: bool) -> dict:
    """Median latency of generation + VAE decode at b = 1 for each system; RTF = clip seconds / latency."""
    sr, sec = P["common"]["sample_rate"], P["common"]["clip_seconds"]
    vae = VAE(VAEConfig.from_params({**P["vae"], "sample_rate": sr})).to(device).eval()
    frames = -(-int(sr * sec) // vae.hop_length)
    base = build_score_model(P["base"]["dit"], in_channels=vae.latent_dim, text_dim=TEXT_DIM).to(device).eval()
    steps = int(P["base"]["sample_steps"])
    t2m = TextToMusic(base, vae, StubText(device), latent_shape=(vae.latent_dim, frames), sample_rate=sr,
                      clip_samples=int(sr * sec), device=device, sampling=SamplingConfig(steps=steps))
    ls = LayerDropModel(base, reduced_layer_config()).to(device).eval()    # budget modules zero-init: base speed
    ps_cfg = PrestoSConfig()
    gen_s, gen_ls = generator_sampler(t2m, base, ps_cfg, 4), generator_sampler(t2m, ls, ps_cfg, 4)
    z = torch.randn(1, vae.latent_dim, frames, device=device)
    kind = device.split(":")[0]

    def ac(fn):
        def run():
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=amp):
                return fn()
        return run
    systems = {f"base DPM-2S {steps} steps + CFG++": ac(lambda: t2m.generate(["x"], [120.0], [0])),
               "Presto-S 4 steps": ac(lambda: gen_s(["x"], [120.0], [0])),
               "Presto-LS 4 steps": ac(lambda: gen_ls(["x"], [120.0], [0]))}
    t2m.sample_latents(["x"], [120.0], [0])
    nfe = t2m.nfe
    df = time_systems(systems, ac(lambda: t2m.decode(z)), sec, repeats=repeats)
    df["speedup_vs_base"] = df["latency_s"].iloc[0] / df["latency_s"]
    return {"amp_bf16": amp, "clip_s": sec, "sample_rate": sr, "latent_frames": frames, "base_nfe": nfe,
            "vae_M": sum(p.numel() for p in vae.parameters()) / 1e6, "rows": df.round(5).to_dict("records")}


def to_markdown(r: dict) -> str:
    """A readable summary of the JSON."""
    e, n, t = r["env"], r["numerics"], r["train"]
    lines = [f"# GPU check ({e['gpu']}, torch {e['torch']}, CUDA {e['cuda']})", "",
             f"Profile `{r['profile']}` (DiT {n['dit_params_M']:.0f} M params, {n['tokens']} latent frames); "
             f"random weights; flash-attn installed: {n['flash_attn_installed']}.", "",
             "## bf16 autocast and attention back-ends (DiT forward, batch 2, one padded caption)", "",
             f"- fp32 forward {n['fwd_fp32_ms']:.1f} ms, bf16 autocast {n['fwd_bf16_ms']:.1f} ms; "
             f"relative error of bf16 vs fp32 output {n['bf16_rel_err']:.2e}", ""]
    lines += ["| SDPA back-end | runs | bf16 ms | rel. err vs fp32 |", "|---|---|---|---|"]
    for k, v in n.items():
        if k.startswith("sdpa_"):
            lines.append(f"| {k[5:]} | {v['ok']} | {v.get('bf16_ms', float('nan')):.1f} | "
                         f"{v.get('rel_err_vs_fp32', float('nan')):.2e} |" if v["ok"] else
                         f"| {k[5:]} | no: {v['error']} | | |")
    lines += ["", f"## Training loop on the GPU (`presto_lib.train`, amp auto = bf16; DiT {t['dit']})", "",
              f"- {t['steps']} DSM steps of batch {t['batch']}: {t['wall_s']:.1f} s incl. start-up and checkpoints, "
              f"peak memory {t['peak_mem_GiB'] or float('nan'):.2f} GiB", f"- losses {[round(x, 4) for x in t['losses']]}",
              f"- killed at step {t['steps'] // 2} and resumed vs straight: max |weight diff| "
              f"{t['resume_max_abs_diff']:.3g}", ""]
    for lat in r["latency"]:
        lines += [f"## End-to-end latency, b = 1, {lat['clip_s']:.0f} s at {lat['sample_rate']} Hz "
                  f"({'bf16 autocast' if lat['amp_bf16'] else 'fp32'}; VAE {lat['vae_M']:.0f} M params, "
                  f"base NFE {lat['base_nfe']})", "",
                  "| system | latency s | decode s | RTF | speed-up vs base |", "|---|---|---|---|---|"]
        lines += [f"| {x['system']} | {x['latency_s']:.4f} | {x['decode_s']:.4f} | {x['rtf']:.1f} | "
                  f"{x['speedup_vs_base']:.1f}x |" for x in lat["rows"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper", choices=PROFILES, help="sizes for numerics and latency")
    ap.add_argument("--train-profile", default="gpu", choices=PROFILES, help="DiT size for the training check")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="results/gpu")
    ap.add_argument("--only", nargs="+", choices=("numerics", "train", "latency"), default=None,
                    help="run only these checks (the others are read back from --out/gpu_check.json)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = a.device.startswith("cuda")
    P, PT = render_profile(a.profile), render_profile(a.train_profile)
    r = {"profile": a.profile, "env": {"torch": torch.__version__, "cuda": torch.version.cuda,
                                       "gpu": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
                                       "python": platform.python_version()}}
    sr, sec = P["common"]["sample_rate"], P["common"]["clip_seconds"]
    hop = 1
    for s in P["vae"]["strides"]:
        hop *= int(s)
    frames = -(-int(sr * sec) // hop)
    steps = [("numerics", lambda: check_numerics(P, a.device, int(P["vae"]["latent_dim"]), frames)),
             ("train", lambda: check_train(PT, a.device, int(PT["vae"]["latent_dim"]), 256)),
             ("latency", lambda: [check_latency(P, a.device, a.repeats, amp) for amp in (True, False)])]
    old = out / "gpu_check.json"
    if a.only and old.is_file():
        r = {**json.loads(old.read_text()), **r}
    for name, fn in steps:
        if a.only and name not in a.only:
            continue
        t0 = time.perf_counter()
        r[name] = fn()
        print(f"[{name}] {time.perf_counter() - t0:.1f} s: {json.dumps(r[name], default=str)[:2000]}", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(r, indent=1, default=str))
        if cuda:
            torch.cuda.empty_cache()
    (out / "gpu_check.md").write_text(to_markdown(r) + "\n")
    print(to_markdown(r))


if __name__ == "__main__":
    main()
