"""The one training loop every stage uses (VAE, base DiT, Presto-S/L/LS and the baselines).

The caller owns the maths; the loop owns the plumbing. You hand it named modules, their optimisers and a
step function; it does DDP, bf16 autocast, gradient clipping, EMA, checkpoint/exact resume, a NaN guard,
tqdm and `<run_dir>/log.csv`:

    def step_fn(ctx, batch, step):                    # batch: this rank's share of the global batch
        loss = F.mse_loss(ctx.modules["net"](batch["x"]), batch["y"])
        ctx.backward_and_step(loss, "net")             # zero_grad, backward, clip, NaN check, step, EMA
        return {"loss": loss}                          # averaged over ranks, logged, shown in tqdm

    cfg = TrainConfig(run_dir="data/run", max_steps=1000, batch_size=32)
    ctx = train(step_fn, modules={"net": net}, optimizers={"net": AdamW(net.parameters())},
                dataset=ds, cfg=cfg, ema=["net"])
    ctx.ema["net"]                                     # the EMA weights, ready for export

Several players fit without forking the loop. A GAN (the VAE, paper A.1) steps "disc" then "gen" inside one
`step_fn`; Presto-S (Algorithm 1) alternates turns by `step` (e.g. 5 fake-score/discriminator steps per
generator step) and passes its frozen real score model as `frozen=` (moved to the device, never saved or
updated). Use `ctx.modules[name]` (DDP-wrapped when distributed) for the forward whose loss updates `name`,
and `ctx.raw[name]` to use a module inside another player's loss (e.g. the discriminator in the generator loss).

Launch (the same code path for one process and many):

    python my_stage.py                                  # one process (CPU or one GPU)
    torchrun --standalone --nproc_per_node 4 my_stage.py   # DDP: NCCL on GPU, gloo on CPU

(`cfg.batch_size` is the global batch, so both commands train the same model; end a torchrun script with
`cleanup_distributed()`. Notebooks call `train()` in-process, i.e. the one-process path.)

Exact resume: a rerun with the same `run_dir` continues from `<run_dir>/checkpoints/latest.json` (modules,
EMA, optimisers, per-rank RNG, step, `ctx.extra`) and ends with the same weights as an uninterrupted run on the
same machine and world size. Data order is a pure function of (seed, step): global step s reads positions
[s*B, (s+1)*B) of an endless sequence of seeded epoch permutations, rank r takes the r-th slice, and item i at
position p is fetched under RNG seeded from (seed, p), so random crops inside a dataset resume exactly too.

Layout: this module is the loop (TrainConfig, Context, EMA, checkpoint save/load, `train`); the plumbing under
it (distributed set-up, StepSampler/SeededDataset, CSVLog) lives in `presto_lib.train_utils` and is re-exported.
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from presto_lib import checkpoint as ckpt
from presto_lib.train_utils import (CSVLog, MetricWindow, SeededDataset, StepSampler, _barrier, cleanup_distributed,
                                    seeded, setup_distributed)

__all__ = ["TrainConfig", "Context", "NonFiniteLossError", "train", "update_ema",
           # re-exported from presto_lib.train_utils
           "setup_distributed", "cleanup_distributed", "StepSampler", "seeded", "SeededDataset", "CSVLog",
           "MetricWindow"]


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf; the run stopped (the message says which checkpoint, if any, is on disk)."""


@dataclass
class TrainConfig:
    """Flat loop settings (model/optimiser hyperparameters belong to the caller)."""
    run_dir: str                                 # checkpoints/ and log.csv go here
    max_steps: int                               # total optimisation steps (calls of step_fn)
    batch_size: int                              # global batch, split evenly over ranks
    ckpt_every: int = 500                        # also saved at the end and when stopping
    log_every: int = 10                          # log.csv row = mean of each metric over the steps of this
                                                 # many that returned it (empty when none did)
    grad_clip: float | dict[str, float] | None = 1.0   # max grad norm (per optimiser name when a dict)
    ema_decay: float = 0.999                     # with warm-up min(decay, (1+s)/(10+s))
    amp: str = "auto"                            # "auto" (bf16 on CUDA), "bf16" or "none"
    seed: int = 0
    num_workers: int = 0
    keep_checkpoints: int = 2
    stop_after: int | None = None                # stop (with a checkpoint) after this many steps of this call
    find_unused_parameters: bool = False
    desc: str = "train"
    validate_every: int = 0                      # > 0: call `validate` every this many steps (and at 0 and the
                                                 # end); its row goes to <run_dir>/validation.csv (learning curve)

    def __post_init__(self):
        if self.max_steps < 0 or self.batch_size < 1 or self.ckpt_every < 1 or self.log_every < 1:
            raise ValueError(f"bad TrainConfig: {self}")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', not {self.amp!r}")



# ---------------------------------------------------------------------------------------------
# The context a step function sees
# ---------------------------------------------------------------------------------------------

@dataclass
class Context:
    """Modules, optimisers and helpers handed to `step_fn(ctx, batch, step)`."""
    cfg: TrainConfig
    modules: dict[str, nn.Module]                # DDP-wrapped (when distributed) trainable modules
    raw: dict[str, nn.Module]                    # the same modules unwrapped
    ema: dict[str, nn.Module]                    # EMA copies (eval mode, no grad)
    frozen: dict[str, nn.Module]                 # on device, eval, never saved or updated
    optimizers: dict[str, torch.optim.Optimizer]
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    step: int = 0                                # completed steps
    extra: dict[str, Any] = field(default_factory=dict)   # JSON-able state saved with checkpoints
    _opt_modules: dict[str, list[str]] = field(default_factory=dict)
    _stepped: set = field(default_factory=set)
    _resumed_from: int | None = None             # the step this call resumed from (None: fresh start)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp_enabled(self) -> bool:
        return self.cfg.amp == "bf16" or (self.cfg.amp == "auto" and self.device.type == "cuda")

    def autocast(self, enabled: bool = True):
        """bf16 autocast on the loop's device when AMP is on (`autocast(False)` for an fp32 island)."""
        if not self.amp_enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def backward_and_step(self, loss: torch.Tensor, opt: str, retain_graph: bool = False) -> float:
        """zero_grad -> backward (fp32) -> clip -> NaN check -> optimiser step -> mark EMA; returns grad norm."""
        if opt not in self.optimizers:
            raise ValueError(f"unknown optimiser {opt!r}; have {sorted(self.optimizers)}")
        o = self.optimizers[opt]
        o.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            loss.backward(retain_graph=retain_graph)
        params = [p for g in o.param_groups for p in g["params"] if p.grad is not None]
        clip = self.cfg.grad_clip.get(opt) if isinstance(self.cfg.grad_clip, dict) else self.cfg.grad_clip
        # DDP has already averaged the gradients, so every rank sees the same norm and stops together
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf) if params else torch.zeros(())
        if not torch.isfinite(norm):
            raise NonFiniteLossError(
                f"non-finite loss/gradient for optimiser {opt!r} at step {self.step + 1} "
                f"(loss={loss.item():.4g}, grad norm={norm.item():.4g}); {self._nonfinite_note(self.step + 1)}")
        o.step()
        o.zero_grad(set_to_none=True)
        self._stepped.update(self._opt_modules.get(opt, []))
        return float(norm)

    def _nonfinite_note(self, failed_step: int) -> str:
        """What a NaN stop leaves: the newest verified checkpoint on disk (or none), and whether it is suspect."""
        d = Path(self.cfg.run_dir) / "checkpoints"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latest = ckpt.latest_training_state(d)
        if latest is None:
            return f"the run stopped before any complete checkpoint was written in {d}; a rerun starts from step 0"
        step = int(latest.name.removeprefix("step_"))
        note = f"the run stopped; the newest complete checkpoint (step {step}, checksums verified) is {latest}"
        if self._resumed_from == step and failed_step == step + 1:
            note += (" - but this run resumed from it and failed on its first step, so that checkpoint (or the "
                     "data) may itself be the cause")
        if any(not torch.isfinite(p).all() for m in self.raw.values() for p in m.parameters()):
            note += "; the in-memory weights hold non-finite values"
        return note

    def all_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (identity for one process)."""
        if self.world_size > 1:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world_size
        return x

    def state_dict(self, name: str, ema: bool = True) -> dict[str, torch.Tensor]:
        """Weights of module `name` (its EMA when it has one and `ema`)."""
        m = self.ema[name] if ema and name in self.ema else self.raw[name]
        return m.state_dict()


# ---------------------------------------------------------------------------------------------
# EMA and checkpoint plumbing
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _save(ctx: Context, meta: dict) -> Path | None:
    """Every rank writes its RNG; rank 0 writes the rest and publishes (latest.json moves last)."""
    d = Path(ctx.cfg.run_dir) / "checkpoints"
    tmp = d / f".step_{ctx.step:08d}.tmp"
    if ctx.is_main:
        ckpt.begin_training_state(d, ctx.step)
    _barrier(ctx.world_size)
    ckpt.write_rng(tmp, ctx.rank)
    out = None
    if ctx.is_main:
        ckpt.write_training_state(
            tmp, step=ctx.step, modules={k: m.state_dict() for k, m in ctx.raw.items()},
            ema={k: m.state_dict() for k, m in ctx.ema.items()},
            optimizers={k: o.state_dict() for k, o in ctx.optimizers.items()}, meta=meta)
    _barrier(ctx.world_size)
    if ctx.is_main:
        out = ckpt.commit_training_state(d, tmp, ctx.step, keep=ctx.cfg.keep_checkpoints)
    _barrier(ctx.world_size)
    return out


def _load(ctx: Context, path: Path, st: dict, data_spec: dict) -> dict:
    """Restore modules, EMA, optimisers, this rank's RNG and extras from a (verified) training state."""
    for k, m in ctx.raw.items():
        if k not in st["modules"]:
            raise ValueError(f"checkpoint {path} has no module {k!r} (has {sorted(st['modules'])})")
        m.load_state_dict(st["modules"][k])
    for k, m in ctx.ema.items():
        m.load_state_dict(st["ema"][k])
    for k, o in ctx.optimizers.items():
        o.load_state_dict(st["optimizers"][k])
    meta = st["meta"]
    if meta.get("data") != data_spec:
        warnings.warn(f"resuming with a different data spec {data_spec} (checkpoint: {meta.get('data')}); "
                      "the data order will differ from an uninterrupted run")
    if ctx.rank in st["rng"] and meta.get("world_size") == ctx.world_size:
        ckpt.set_rng_state(st["rng"][ctx.rank])
    else:
        why = (f"world size changed since the checkpoint ({meta.get('world_size')} -> {ctx.world_size})"
               if meta.get("world_size") != ctx.world_size else
               f"{path / f'rng_rank{ctx.rank}.json'} is missing")
        warnings.warn(f"{why}: RNG streams reseeded, resume is not bit-exact")
        torch.manual_seed(ctx.cfg.seed + 7919 * st["step"] + ctx.rank)
    ctx.step, ctx.extra, ctx._resumed_from = st["step"], meta.get("extra", {}), st["step"]
    return meta


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def train(step_fn: Callable[[Context, Any, int], dict[str, float]], *, modules: dict[str, nn.Module],
          optimizers: dict[str, torch.optim.Optimizer], dataset: Dataset, cfg: TrainConfig,
          ema: Sequence[str] = (), frozen: dict[str, nn.Module] | None = None,
          collate_fn: Callable | None = None, resume: bool = True,
          lr_schedules: dict[str, Callable[[int], float]] | None = None,
          validate: Callable[[Context], dict[str, float]] | None = None) -> Context:
    """Run (or resume) `cfg.max_steps` calls of `step_fn(ctx, batch, step)`; returns the final Context.

    `lr_schedules[opt](step)` multiplies that optimiser's initial lr (stateless, so resume stays exact).
    `validate(ctx) -> {metric: value}` (main rank, no grad, its own seeded RNG so training is unchanged) runs
    every `cfg.validate_every` steps, before the first step and at the end: <run_dir>/validation.csv.
    """
    rank, world, device = setup_distributed()
    unknown = [k for k in ema if k not in modules] + [k for k in (lr_schedules or {}) if k not in optimizers]
    if unknown:
        raise ValueError(f"ema / lr_schedules names {unknown} are not among modules {sorted(modules)} "
                         f"/ optimizers {sorted(optimizers)}")
    for o in optimizers.values():
        for g in o.param_groups:
            g.setdefault("initial_lr", g["lr"])
    for m in modules.values():
        m.to(device).train()  # parameters keep their identity, so the caller's optimisers stay valid
    frozen = {k: m.to(device).eval().requires_grad_(False) for k, m in (frozen or {}).items()}
    ema_mods = {k: copy.deepcopy(modules[k]).float().eval().requires_grad_(False) for k in ema}
    owner = {id(p): k for k, m in modules.items() for p in m.parameters()}
    opt_modules = {n: sorted({owner[id(p)] for g in o.param_groups for p in g["params"] if id(p) in owner})
                   for n, o in optimizers.items()}
    ctx = Context(cfg=cfg, modules=dict(modules), raw=dict(modules), ema=ema_mods, frozen=frozen,
                  optimizers=dict(optimizers), rank=rank, world_size=world, device=device,
                  _opt_modules=opt_modules)
    run_dir = Path(cfg.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    data_spec = {"batch_size": cfg.batch_size, "dataset_len": len(dataset), "seed": cfg.seed}

    # ---- resume or start fresh ----
    found = ckpt.load_training_state(run_dir / "checkpoints") if resume else None   # verified; falls back
    latest = found[0] if found else None
    meta = _load(ctx, latest, found[1], data_spec) if found else {}
    if not latest:
        torch.manual_seed(cfg.seed + rank)  # per-rank streams for noise drawn inside step_fn
        random.seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
    start, wall0 = ctx.step, float(meta.get("wall_s", 0.0))
    if ctx.is_main and latest:
        print(f"[{cfg.desc}] resumed from {latest} (step {start}/{cfg.max_steps})")
    if world > 1:
        # a module that may leave parameters unused in a step (layer dropping: `skips_parameters`) needs DDP to
        # look for them, or its reduction never finishes
        ctx.modules = {k: DDP(m, device_ids=[device.index] if device.type == "cuda" else None,
                              find_unused_parameters=cfg.find_unused_parameters or skips_parameters(m))
                       if any(p.requires_grad for p in m.parameters()) else m for k, m in modules.items()}
    log = CSVLog(run_dir / "log.csv", start) if ctx.is_main else None
    vlog = CSVLog(run_dir / "validation.csv", start) if ctx.is_main and validate and cfg.validate_every else None

    def validation() -> None:
        if vlog is None:
            return
        with seeded(cfg.seed), torch.no_grad():
            row = validate(ctx)
        for m in modules.values():
            m.train()
        vlog.append({"step": ctx.step, **{k: _scalar(v) for k, v in row.items()}})
    stop = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, start + cfg.stop_after)
    sampler = StepSampler(len(dataset), cfg.batch_size, rank, world, cfg.seed, start, stop)
    loader = DataLoader(SeededDataset(dataset, cfg.seed), batch_sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=collate_fn, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched

    def meta_now() -> dict:
        return {"data": data_spec, "world_size": world, "extra": ctx.extra, "wall_s": wall0 + time.time() - t0,
                "train_config": asdict(cfg)}

    # ---- train ----
    t0 = t_log = time.time()
    window = MetricWindow()
    bar = tqdm(total=cfg.max_steps, initial=start, desc=cfg.desc, disable=not ctx.is_main, dynamic_ncols=True,
               mininterval=1.0)
    if start == 0 and stop > 0:
        validation()                      # the curve's first point: the initial weights
    try:
        for step, batch in zip(range(start, stop), loader):
            batch = _to_device(batch, device)
            ctx._stepped = set()
            for name, f in (lr_schedules or {}).items():
                for g in optimizers[name].param_groups:
                    g["lr"] = g["initial_lr"] * f(step)
            with ctx.autocast():
                metrics = step_fn(ctx, batch, step)
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for k in ctx._stepped & set(ctx.ema):
                update_ema(ctx.ema[k], ctx.raw[k], decay)
            ctx.step = step + 1
            # ---- metrics: mean over ranks, NaN guard, log ----
            keys = sorted(metrics)        # same keys on every rank at a step (turn-only metrics follow `step`)
            vals = ctx.all_mean(torch.tensor([_scalar(metrics[k]) for k in keys], dtype=torch.float64))
            if not torch.isfinite(vals).all():
                bad = [k for k, v in zip(keys, vals.tolist()) if not math.isfinite(v)]
                raise NonFiniteLossError(f"non-finite {bad} at step {ctx.step}; {ctx._nonfinite_note(ctx.step)}")
            window.add(dict(zip(keys, vals.tolist())))
            bar.update(1)
            if ctx.step % cfg.log_every == 0 or ctx.step == stop:
                now = time.time()
                row = window.means()              # per metric, over the steps that returned it
                sps = window.steps * cfg.batch_size / max(now - t_log, 1e-9)
                if ctx.is_main:
                    log.append({"step": ctx.step, "wall_s": wall0 + now - t0, "samples_per_s": sps, **row})
                    shown = sorted(row, key=lambda k: ("loss" not in k, k))[:4]   # losses first
                    bar.set_postfix({**{k: f"{row[k]:.3g}" for k in shown}, "samples/s": f"{sps:.1f}"})
                window, t_log = MetricWindow(), now
            if cfg.validate_every and (ctx.step % cfg.validate_every == 0 or ctx.step == stop):
                validation()
            if ctx.step % cfg.ckpt_every == 0 or ctx.step == stop:
                _save(ctx, meta_now())
    finally:
        bar.close()
    if latest and start == stop == ctx.step and ctx.is_main:
        print(f"[{cfg.desc}] already at step {ctx.step}: nothing to do")
    return ctx


def skips_parameters(m: nn.Module) -> bool:
    """True when a module declares that a forward may leave some of its parameters unused (e.g. dropped blocks)."""
    return bool(getattr(m, "skips_parameters", False))


def _scalar(v: Any) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
