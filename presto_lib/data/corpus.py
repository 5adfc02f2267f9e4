"""The offline corpus builder: real MIDI (music21's bundled corpus + user folders) rendered to audio with exact
BPM labels and metadata captions, cut into fixed-length loudness-normalised clips, split by piece.

    python -m presto_lib.stages.corpus build                       # params.yaml's common + corpus groups
    python -m presto_lib.stages.corpus build --profile smoke --out /tmp/corpus --midi-dir my_midis/

Writes `<out>/manifest.csv` (see MANIFEST_COLUMNS), `<out>/audio/<style>/<piece>/rR_cJ.wav`,
`<out>/summary.json` (counts, hours, timing) and `<out>/skipped.csv` (pieces that failed, with the reason).
Audio goes to `<out>/audio.partial/` first and is moved into place only when the build completes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_text
from .select import PieceTask, assign_splits, plan_renders, select_midi_folder, select_music21, stable_hash
from .styles import STYLES, USER_STYLE

__all__ = ["build_corpus", "render_task", "prepare_clip", "MANIFEST_COLUMNS", "corpus_config", "write_csv_atomic"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "piece_id", "split", "caption", "bpm", "key", "instruments", "duration_s", "sample_rate",
                    "source", "license", "style", "title", "composer", "meter", "semitones", "tempo_factor",
                    "accompanied", "render", "clip", "group"]
BPM_LIMITS = (40.0, 208.0)   # a score's tempo mark outside this range is ignored (drawn from the style instead)


def corpus_config(params: dict) -> dict:
    """Flatten params (`common` + `corpus` groups) into the worker config."""
    if "common" not in params or "corpus" not in params:
        raise ValueError("params must hold the 'common' and 'corpus' groups (see profiles/corpus.yaml)")
    cfg = dict(params["corpus"])
    for k in ("sample_rate", "clip_seconds", "seed"):
        cfg[k] = params["common"][k]
    return cfg


# ---- one piece (runs in a worker process) ----


def _load(task: PieceTask):
    import warnings

    from .midi import load_midi_file, load_music21_piece
    warnings.filterwarnings("ignore", module="music21")   # overfull-measure notices etc. from the encodings
    warnings.filterwarnings("ignore", module="pretty_midi")
    if task.kind == "midi":
        return load_midi_file(task.path, task.piece_id, root=task.root or None)
    return load_music21_piece(task.path, task.number, task.style, task.piece_id, title=task.title,
                              composer=task.composer, region=task.region, license=task.license)


def prepare_clip(x: np.ndarray, sr: int, cfg: dict) -> tuple[np.ndarray | None, str]:
    """Loudness-normalise a mono clip -> (clip [1, T], '') or (None, 'silent' | 'near-silent').

    Silent: RMS below `silence_db` dBFS before normalisation. Near-silent: after normalisation to
    `target_lufs`, more than `max_silent_frac` of its 50 ms frames lie below `silence_db` (long rests, the
    end of a piece); sparse percussive music keeps its reverb tails above that floor.
    """
    from ..audio import loudness_normalize, rms_db
    floor = float(cfg.get("silence_db", -60.0))
    if rms_db(x) < floor:
        return None, "silent"
    y = loudness_normalize(np.asarray(x, np.float32)[None], sr, float(cfg.get("target_lufs", -20.0)))
    hop = max(1, int(0.05 * sr))
    frames = y[0, : y.shape[1] // hop * hop].reshape(-1, hop).astype(np.float64)
    level = 10 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-20))
    if np.mean(level < floor) > float(cfg.get("max_silent_frac", 0.5)):
        return None, "near-silent"
    return y, ""


def prepare_stereo_clip(x: np.ndarray, sr: int, cfg: dict) -> tuple[np.ndarray | None, str]:
    """`prepare_clip` for a stereo clip [2, T]: silence checks and loudness on the mid, one gain for both channels."""
    mid = np.asarray(x, np.float64).mean(0)
    y, why = prepare_clip(mid, sr, cfg)
    if y is None:
        return None, why
    gain = float(np.sqrt(np.mean(y.astype(np.float64) ** 2) / max(np.mean(mid ** 2), 1e-20)))
    return (np.asarray(x, np.float64) * gain).astype(np.float32), ""


def render_task(task: PieceTask, cfg: dict, audio_dir: str | os.PathLike) -> dict:
    """Parse, arrange, render and cut one piece -> {'rows': [...], 'error': str, 'dropped': {reason: n}}.

    Never raises for a bad piece: the error is returned (and the piece's clips removed) so the build goes on.
    """
    try:
        return _render_task(task, cfg, audio_dir)
    except Exception as e:
        shutil.rmtree(Path(audio_dir) / task.style / task.piece_id, ignore_errors=True)
        return {"piece_id": task.piece_id, "source": f"{task.kind}:{task.path}", "rows": [], "dropped": {},
                "error": f"arrange: {type(e).__name__}: {e}"}


def _render_task(task: PieceTask, cfg: dict, audio_dir: str | os.PathLike) -> dict:
    from ..audio import save_audio
    from .arrange import plan_performance
    from .captions import key_name, make_caption
    from .midi import beat_ql, tile
    from .render import render_performances

    out = {"piece_id": task.piece_id, "source": f"{task.kind}:{task.path}", "rows": [], "error": "", "dropped": {}}
    try:
        piece = _load(task)
    except Exception as e:
        out["error"] = f"parse: {e}"
        return out
    style = STYLES.get(task.style, USER_STYLE)
    sr, clip_s = int(cfg["sample_rate"]), float(cfg["clip_seconds"])
    rng = np.random.default_rng([int(cfg["seed"]), stable_hash("piece", task.piece_id)])
    lo, hi = style.bpm_range
    bpm0 = piece.tempo_bpm
    if bpm0 is None or not (BPM_LIMITS[0] <= bpm0 <= BPM_LIMITS[1]):
        bpm0 = float(rng.integers(lo, hi + 1))
    bpm0 = float(round(bpm0))
    # short pieces are repeated (as folk tunes are) so that at least the planned clips fit
    need_ql = task.clips_per_render * clip_s * bpm0 * beat_ql(piece.meter) / 60.0 * 1.3
    if piece.length_ql < need_ql:
        piece = tile(piece, min(int(cfg.get("max_repeats", 4)), math.ceil(need_ql / max(piece.length_ql, 1e-6))))
    t_lo, t_hi = cfg.get("transpose_range", [-3, 3])
    f_lo, f_hi = cfg.get("tempo_range", [0.85, 1.2])
    stereo = bool(cfg.get("stereo", False))   # stereo renders (the M2S model's data): clips [2, T]
    perfs = []
    for r in range(task.renders):
        shift, factor = 0, 1.0
        if r > 0:   # symbolic augmentation: transpose + tempo scale, labels recomputed exactly
            shift = int(rng.choice([s for s in range(int(t_lo), int(t_hi) + 1) if s != 0] or [0]))
            factor = float(rng.uniform(f_lo, f_hi))
        bpm = float(np.clip(round(bpm0 * factor), 30, 260))
        perf = plan_performance(piece, style, rng, bpm, task.clips_per_render, clip_s, transpose_by=shift,
                                tempo_factor=bpm / bpm0)
        if perf is not None:
            perfs.append((r, perf))
    if not perfs:
        out["error"] = f"too short for one {clip_s:g} s clip ({piece.length_ql:g} quarter notes)"
        return out
    try:
        audio = render_performances([p for _, p in perfs], sr, cfg.get("soundfont"), float(cfg.get("gain", 0.5)),
                                    stereo=stereo, pan_spread=float(cfg.get("pan_spread", 0.0)))
    except Exception as e:
        out["error"] = f"render: {e}"
        return out
    n = int(round(clip_s * sr))
    # Essen songs from outside Germany name their region ("Luxembourgish folk song")
    label = f"{piece.region} folk song" if piece.region and style.name == "german_folk" else style.label
    folder = Path(audio_dir) / task.style / task.piece_id
    for (r, perf), (x, _) in zip(perfs, audio):
        for j in range(perf.n_clips):
            clip = x[..., j * n:(j + 1) * n]
            clip, why = (prepare_stereo_clip if stereo else prepare_clip)(clip, sr, cfg) \
                if clip.shape[-1] == n else (None, "short")
            if clip is None:
                out["dropped"][why] = out["dropped"].get(why, 0) + 1
                continue
            rel = Path("audio") / task.style / task.piece_id / f"r{r}_c{j}.wav"
            save_audio(folder / rel.name, clip, sr)
            meta = dict(label=label, instruments=perf.instruments, tonic=perf.tonic, mode=perf.mode, bpm=perf.bpm,
                        meter=piece.meter, style_words=list(style.words), composer=piece.composer)
            out["rows"].append(dict(
                path=rel.as_posix(), piece_id=task.piece_id, split=task.split, caption=make_caption(meta, rng),
                bpm=perf.bpm, key=key_name(perf.tonic, perf.mode), instruments=", ".join(perf.instruments),
                duration_s=n / sr, sample_rate=sr, source=piece.source, license=piece.license or task.license,
                style=task.style, title=piece.title, composer=piece.composer, meter=f"{piece.meter[0]}/{piece.meter[1]}",
                semitones=perf.transpose, tempo_factor=round(perf.tempo_factor, 4), accompanied=perf.accompanied,
                render=r, clip=j, group=task.group))
    return out


# ---- the whole corpus ----


def write_csv_atomic(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write rows as CSV via a temp file + rename."""
    import pandas as pd
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)
    return path


def _raise_on_sigterm():
    """Turn SIGTERM (e.g. a killed `dvc repro`) into KeyboardInterrupt so the cleanup below runs."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old) -> None:
    import signal
    import threading
    if old is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, old)


def build_corpus(out_dir: str | os.PathLike, params: dict, workers: int | None = None,
                 midi_dirs: list[str] | None = None, progress: bool = True) -> Path:
    """Build the corpus into `out_dir` from params (`common` + `corpus` groups) -> Path of manifest.csv."""
    from tqdm import tqdm

    from .render import find_fluidsynth, find_soundfont

    cfg = corpus_config(params)
    find_fluidsynth(), find_soundfont(cfg.get("soundfont"))   # fail early, with an install hint
    t0, cpu0 = time.time(), _cpu_seconds()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_pieces = min(int(cfg["max_pieces_per_style"]), int(cfg["max_clips_per_style"]))   # >= 1 clip per piece
    tasks = select_music21(cfg.get("styles") or None, max_pieces, int(cfg.get("max_notes", 10**9)),
                           int(cfg.get("min_notes", 16)), int(cfg["seed"])) if cfg.get("music21", True) else []
    for d in list(cfg.get("midi_dirs") or []) + list(midi_dirs or []):
        tasks += select_midi_folder(d, cfg.get("max_pieces_per_style"))
    if not tasks:
        raise ValueError("no pieces selected: check corpus.styles / corpus.midi_dirs")
    assign_splits(tasks, cfg.get("splits", {}), int(cfg["seed"]))
    plan_renders(tasks, int(cfg["max_clips_per_style"]), int(cfg["max_clips_per_render"]), int(cfg.get("augmentations", 1)),
                 int(cfg.get("max_renders_per_piece", 4)), list(cfg.get("augment_splits", ["train"])))
    partial = out_dir / "audio.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    n_workers = int(workers or cfg.get("workers") or 0) or os.cpu_count() or 1
    results: dict[str, dict] = {}
    pool = None
    old_term = _raise_on_sigterm()
    try:
        if n_workers == 1:
            for t in tqdm(tasks, desc="rendering pieces", disable=not progress, mininterval=3):
                results[t.piece_id] = render_task(t, cfg, partial)
        else:
            import multiprocessing as mp
            # spawn, not fork: safe in a process that already runs threads (torch, tqdm, Jupyter)
            pool = ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"))
            # biggest jobs first balances the pool; results are re-ordered below, so output is deterministic
            order = sorted(tasks, key=lambda t: -t.renders * t.clips_per_render)
            futs = [pool.submit(render_task, t, cfg, partial) for t in order]
            for f in tqdm(as_completed(futs), total=len(futs), desc="rendering pieces", disable=not progress,
                          mininterval=3):
                r = f.result()
                results[r["piece_id"]] = r
            pool.shutdown()
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(partial, ignore_errors=True)   # nothing half-built is left behind
        raise
    finally:
        _restore_sigterm(old_term)
    rows, skipped, dropped = [], [], Counter()
    for t in tasks:
        r = results[t.piece_id]
        dropped.update(r["dropped"])
        if r["error"]:
            log.warning("skipped %s (%s): %s", t.piece_id, r["source"], r["error"])
            skipped.append({"piece_id": t.piece_id, "source": r["source"], "reason": r["error"]})
        rows += r["rows"]
    if not rows:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"corpus build produced no clips ({len(skipped)} pieces skipped); see the log")
    shutil.rmtree(out_dir / "audio", ignore_errors=True)
    os.replace(partial, out_dir / "audio")
    write_csv_atomic(out_dir / "skipped.csv", skipped, ["piece_id", "source", "reason"])
    manifest = write_csv_atomic(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    summary = _summary(rows, tasks, skipped, dropped, time.time() - t0, cfg, n_workers)
    summary["cpu_seconds"] = round(_cpu_seconds() - cpu0, 1)   # this process + workers + FluidSynth
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    log.info("corpus: %d clips, %.2f h, %d pieces skipped, %.0f s", len(rows), summary["hours"], len(skipped),
             summary["build_seconds"])
    return manifest


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children (pool workers, FluidSynth)."""
    import resource
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _summary(rows, tasks, skipped, dropped, seconds, cfg, n_workers) -> dict:
    """Counts for summary.json."""
    clips = Counter(r["split"] for r in rows)
    return {
        "clips": len(rows), "hours": round(sum(r["duration_s"] for r in rows) / 3600, 4),
        "pieces_selected": len(tasks), "pieces_used": len({r["piece_id"] for r in rows}),
        "pieces_skipped": len(skipped), "skip_reasons": dict(Counter(s["reason"].split(":")[0] for s in skipped)),
        "clips_dropped": dict(dropped), "clips_per_split": dict(clips),
        "clips_per_style": dict(Counter(r["style"] for r in rows)),
        "sample_rate": int(cfg["sample_rate"]), "clip_seconds": float(cfg["clip_seconds"]),
        "build_seconds": round(seconds, 1), "workers": n_workers,
    }
