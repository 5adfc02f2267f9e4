"""Stage `tables34` (paper A.6, Tables 3 and 4): latency and RTF of the trained systems, mono and stereo.

    python -m presto_lib.stages.tables34

Every system is timed in one run, in interleaved rounds after a warm-up (`eval.latency.component_table`):
generation, VAE decoding, mono-to-stereo (the `m2s` stage's model), mono / stereo latency and RTF. Systems: the
base model at the paper's budget (DPM-2S `artefacts.base_paper_steps` steps + CFG++) and at the base row's steps,
ASE and Presto-L (the same sampler and budget as the paper's base), Presto-S and Presto-LS (ping-pong, their
Table 2 step counts). Table 3 at b = 1; Table 4 at each system's largest batch (doubling then bisection up to
`artefacts.batch_limit`) whose peak memory (process RSS on CPU, CUDA max allocated on a GPU) stays under
`artefacts.memory_cap_gb`, which the table states. Text encoding is not timed. The same tables with random weights
at the `paper` size: `python benchmarks/bench_tables.py --profile paper ...`. Writes
<results>/tables/table3_latency.{csv,md}, table4_max_batch.{csv,md}, <results>/metrics/tables34.json. The CSVs also
keep every round's raw timings (`latency_runs_s`: mono latency, `generation_runs_s`: generation only; seconds,
space-separated) for the speed-up intervals of claim C10 (`stages.claims`).
"""
from __future__ import annotations

import argparse
import copy
import platform
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from presto_lib.stages.common import start, write_text

__all__ = ["systems", "main"]


def systems(P: dict[str, Any], device: str) -> tuple[dict[str, Callable[[int], Any]], Any, dict[str, Any]]:
    """(name -> generate(b) returning latents, the base TextToMusic (decoder), info per system)."""
    import torch

    from presto_lib.distill.generator import load_generator
    from presto_lib.distill.presto_l import load_layer_drop_model
    from presto_lib.distill.presto_s import sample_generator
    from presto_lib.stages.artefacts import PRESTO_LS_DIR, base_pipeline, presto_ls_steps
    from presto_lib.stages.presto_s import run_config

    A, PS, PL = P["artefacts"], P["presto_s"], P["presto_l"]
    t2m = base_pipeline(P, device)
    paper, row = int(A["base_paper_steps"]), int(P["base"]["sample_steps"])
    cap, bpm = "a piece of music", 120.0

    def score_sampler(model, steps: int):
        t = copy.copy(t2m)
        t.model = model
        return lambda b: t.sample_latents([cap] * b, [bpm] * b, list(range(b)), steps=steps)

    def generator(G, cfg, steps: int):
        def run(b: int):
            cond, _ = t2m.conditions([cap] * b, [bpm] * b)
            with torch.no_grad():
                return sample_generator(G, t2m.initial_noise(list(range(b)), 1.0), cond, steps, cfg,
                                        generator=torch.Generator(device=device).manual_seed(0))
        return run

    variant = lambda v: load_layer_drop_model(Path(PL["out_dir"]) / v / "model", device)[0].eval()   # noqa: E731
    g_s = load_generator(Path(PS["out_dir"]) / PS["presto_s_run"] / "generator", device)[0].eval()
    g_ls = load_generator(PRESTO_LS_DIR, device)[0].eval()
    s_steps, ls_steps = int(PS["table_steps"]), presto_ls_steps(P)
    gens = {f"Base DM ({2 * paper - 1} NFE)": score_sampler(t2m.model, paper),
            f"Base DM ({2 * row - 1} NFE)": score_sampler(t2m.model, row),
            "ASE": score_sampler(variant("ase"), paper),
            "Presto-L": score_sampler(variant("presto_l"), paper),
            "Presto-S": generator(g_s, run_config(PS["presto_s_run"], P), s_steps),
            "Presto-LS": generator(g_ls, run_config(P["presto_ls"]["presto_s_run"], P), ls_steps)}
    nfe = [2 * paper - 1, 2 * row - 1, 2 * paper - 1, 2 * paper - 1, s_steps, ls_steps]
    return gens, t2m, dict(zip(gens, nfe))


def main(argv: list[str] | None = None) -> int:
    """Time the systems at b = 1, search their max batch, time again at it; write Tables 3 and 4."""
    import torch

    from presto_lib.eval.latency import TABLE_COLUMNS, component_table, max_batch_size, peak_memory
    from presto_lib.stages.artefacts import load_m2s

    ap = argparse.ArgumentParser(prog="python -m presto_lib.stages.tables34", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    S = start("tables34", a.params)
    A, dev = S.P["artefacts"], S.device
    gens, t2m, nfe = systems(S.P, dev)
    m2s = load_m2s(Path(S.P["m2s"]["out_dir"]) / "model", dev)
    sec, reps, warm = t2m.seconds, int(A["latency_repeats"]), int(A["latency_warmup"])
    machine = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or platform.machine()
    note = (f"Profile `{S.profile}`, trained weights, {dev} ({machine}, {torch.get_num_threads()} threads), "
            f"{sec:g} s clips at {t2m.sample_rate} Hz; median of {reps} interleaved rounds after {warm} warm-up; "
            "text encoding not timed; stereo = mono + the M2S model (stage `m2s`).")

    def finish(t: pd.DataFrame) -> pd.DataFrame:
        t.insert(1, "NFE", t["system"].map(nfe))
        t["speedup_vs_base_paper_nfe"] = t["mono_rtf"] / t["mono_rtf"].iloc[0]     # = latency ratio at b = 1
        return t

    t3 = finish(component_table(gens, t2m.decode, sec, m2s, 1, reps, warm, dev))
    t3.to_csv(S.tables / "table3_latency.csv", index=False)
    cols = ["system", "NFE", *TABLE_COLUMNS[1:], "speedup_vs_base_paper_nfe"]
    write_text(S.tables / "table3_latency.md", "## Table 3: latency (ms) and RTF, batch size 1\n\n" + note + "\n\n"
               + t3[cols].to_markdown(index=False, floatfmt=".4g") + "\n")
    cap_gb = float(A["memory_cap_gb"])
    found = {}
    for name, g in gens.items():
        full = lambda b, g=g: m2s(t2m.decode(g(b)))      # noqa: E731
        found[name] = max_batch_size(lambda b: peak_memory(lambda: full(b), dev), cap_gb * 2**30,
                                     limit=int(A["batch_limit"]))
        if found[name].batch_size == 0:
            raise RuntimeError(f"{name}: even batch 1 exceeds the {cap_gb:g} GiB cap (artefacts.memory_cap_gb)")
    t4 = finish(component_table(gens, t2m.decode, sec, m2s, {k: r.batch_size for k, r in found.items()}, reps, warm,
                                dev))
    t4["peak_memory_GiB"] = t4["system"].map({k: r.peak_bytes / 2**30 for k, r in found.items()})
    t4["memory_cap_GiB"] = cap_gb
    t4["stopped_at_search_limit"] = t4["system"].map({k: r.hit_limit for k, r in found.items()})
    t4.to_csv(S.tables / "table4_max_batch.csv", index=False)
    mem = "CUDA max allocated" if dev.startswith("cuda") else "process peak RSS"
    write_text(S.tables / "table4_max_batch.md", "## Table 4: latency (ms) and RTF at the maximum batch size\n\n"
               + note + f" Max batch: the largest b <= {A['batch_limit']} whose peak memory ({mem}) stays within "
               f"{cap_gb:g} GiB.\n\n" + t4[cols + ["peak_memory_GiB", "memory_cap_GiB", "stopped_at_search_limit"]]
               .to_markdown(index=False, floatfmt=".4g") + "\n")
    S.write_metrics("tables34", {"mono_rtf_b1": dict(zip(t3.system, t3.mono_rtf)),
                                 "stereo_rtf_b1": dict(zip(t3.system, t3.stereo_rtf)),
                                 "speedup_vs_base_paper_nfe_b1": dict(zip(t3.system, t3.speedup_vs_base_paper_nfe)),
                                 "max_batch": {k: r.batch_size for k, r in found.items()}, "memory_cap_GiB": cap_gb})
    print(t3[cols].to_markdown(index=False, floatfmt=".4g"))
    print(t4[cols].to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
