"""Import any folder of audio + a CSV of captions (e.g. Song Describer) into the corpus manifest format.

    python -m presto_lib.stages.corpus folder AUDIO_DIR captions.csv --out data/corpus_user [--profile cpu] [--skip-bad]

The CSV needs `path` (relative to AUDIO_DIR; `file`/`filename` also accepted) and `caption`; optional
columns `bpm` (estimated with librosa's tempo estimator when empty), `piece_id`, `split`, `key`,
`instruments`, `license`, `source`. It is read strictly: in the declared `--encoding` (UTF-8 by default), and a
row with more or fewer fields than the header is an error naming its line.

Files are streamed in blocks (bounded memory, however long the file), downmixed, resampled, cut into
fixed-length clips (`common.clip_seconds`), loudness-normalised, and near-silent clips dropped. Each file's
clips go to `audio/<id>/c<j>.wav` where `<id>` is a safe slug of its path plus a short hash of its content,
so no two files share a folder and nothing is written outside `--out`; a second file with the same content
is dropped as a duplicate. A `piece_id` with path parts ('/', '\\', leading '.') is rejected, any other is
slugified. A BPM must be a finite number in [20, 400].

A bad row (unreadable or missing audio, path leaving AUDIO_DIR, bad BPM, split, caption or encoding, wrong
field count) raises a ValueError naming the CSV line, or with `--skip-bad` is logged and skipped. Every
skipped row and every dropped file or clip (silent, too short, duplicate) is listed with its reason in
`<out>/skipped.csv`.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import math
import os
import re
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

import numpy as np

from ..audio import crop_or_pad, save_audio
from .corpus import MANIFEST_COLUMNS, prepare_clip, write_csv_atomic
from .midi import slugify
from .select import stable_hash

__all__ = ["import_audio_folder", "estimate_bpm", "read_captions", "parse_bpm", "BPM_RANGE", "SKIPPED_COLUMNS"]

log = logging.getLogger(__name__)

BPM_RANGE = (20.0, 400.0)             # accepted tempi (BPM), inclusive
BLOCK_FRAMES = 1 << 18                # frames read per block (~6 s at 44.1 kHz): memory stays bounded
BPM_SECONDS = 60.0                    # an empty BPM is estimated on the first minute
SKIPPED_COLUMNS = ["line", "piece_id", "source", "clip", "reason"]


class RowError(ValueError):
    """A captions row that cannot be imported (the reason, without the file/line prefix)."""


def estimate_bpm(wav: np.ndarray, sample_rate: int) -> float:
    """Global tempo (BPM) of mono audio: librosa's onset-strength autocorrelation tempo estimate."""
    import librosa
    tempo = librosa.feature.tempo(y=np.asarray(wav, np.float32).reshape(-1), sr=sample_rate, aggregate=np.median)
    return float(np.round(np.atleast_1d(tempo)[0], 1))


def _split_for(piece_id: str, fractions: dict, seed: int) -> str:
    u = stable_hash(seed, "folder-split", piece_id) / 2.0 ** 63
    f_test, f_valid = float(fractions.get("test", 0.1)), float(fractions.get("valid", 0.1))
    return "test" if u < f_test else "valid" if u < f_test + f_valid else "train"


# ---- the captions CSV: declared encoding, strict field counts ----


def read_captions(path: str | os.PathLike, encoding: str = "utf-8") -> tuple[list[str], list[tuple[int, object]]]:
    """(header, [(line, {column: value} | RowError)]) of a captions CSV; a broken file raises naming the line."""
    path = Path(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} for {path}") from None
    # undecodable bytes become lone surrogates, so the rows they sit in can be named (and skipped) one by one
    text = path.read_bytes().decode(encoding, errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        records = [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
    except StopIteration:
        raise ValueError(f"{path} is empty") from None
    except csv.Error as e:
        raise ValueError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from e
    if _undecodable(header) or len(set(header)) != len(header):
        raise ValueError(f"{path}, line 1: header {header!r} is not valid {encoding} or repeats a column")
    out: list[tuple[int, object]] = []
    for line, fields in records:
        if len(fields) != len(header):
            out.append((line, RowError(f"{len(fields)} fields, the header has {len(header)} (unquoted comma?)")))
            continue
        bad = [h for h, f in zip(header, fields) if _undecodable([f])]
        out.append((line, RowError(f"field {bad[0]!r} is not valid {encoding} (declare the file's encoding)")
                    if bad else dict(zip(header, fields))))
    return header, out


def _undecodable(fields: list[str]) -> bool:
    return any(re.search("[\udc80-\udcff]", f) for f in fields)


def parse_bpm(text: str) -> float | None:
    """A BPM cell -> float in BPM_RANGE, None when empty (estimate it); RowError otherwise."""
    t = text.strip()
    if not t:
        return None
    try:
        v = float(t)
    except ValueError:
        raise RowError(f"bpm {t!r} is not a number") from None
    lo, hi = BPM_RANGE
    if not math.isfinite(v) or not lo <= v <= hi:
        raise RowError(f"bpm {t!r} is outside {lo:g}-{hi:g}")
    return v


def _safe_piece_id(given: str) -> str:
    """A user piece_id as a folder-safe id; RowError when it has path parts."""
    if any(len(P(given).parts) > 1 for P in (PurePosixPath, PureWindowsPath)) or given.startswith(".") \
            or ":" in given:
        raise RowError(f"piece_id {given!r} has path parts")
    slug = slugify(given)[:80]
    # a changed slug gets a hash of the original, so two distinct piece_ids never merge
    return slug if slug == given else f"{slug}-{hashlib.sha256(given.encode()).hexdigest()[:6]}"


def _audio_path(audio_dir: Path, rel: str) -> Path:
    """The audio file a CSV path names; RowError when it is empty or leaves `audio_dir`."""
    rel = rel.strip()
    p = PurePosixPath(rel.replace("\\", "/"))
    if not rel or p.is_absolute() or ".." in p.parts or PureWindowsPath(rel).drive:
        raise RowError(f"path {rel!r} is empty or leaves the audio folder")
    return audio_dir / p


# ---- audio, streamed ----


def _sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _mono_blocks(path: Path, sample_rate: int, block_frames: int | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks of an audio file at `sample_rate`: read, downmixed and resampled block by block."""
    import soundfile as sf
    import soxr
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise RowError(f"cannot read audio file {path}: {e}") from e
    with f:
        stream = (soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
                  if f.samplerate != sample_rate else None)
        try:
            for block in f.blocks(blocksize=block_frames or BLOCK_FRAMES, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise RowError(f"audio file {path} contains NaN or Inf samples")
                mono = block.mean(axis=1)
                yield stream.resample_chunk(mono) if stream is not None else mono
        except (RuntimeError, sf.LibsndfileError) as e:
            raise RowError(f"cannot read audio file {path}: {e}") from e
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _cut_clips(path: Path, sr: int, n: int, max_clips: int | None, need_bpm: bool) -> Iterator[object]:
    """Yield (j, clip [n]) for each full clip (one padded clip for a file shorter than one), then head audio.

    The last item is a dict {samples, head} with the total length and the first BPM_SECONDS for tempo estimation.
    """
    buf, head, total, j = np.zeros(0, np.float32), [], 0, 0
    head_n = int(BPM_SECONDS * sr) if need_bpm else 0
    for block in _mono_blocks(path, sr):
        if total < head_n:
            head.append(block[: head_n - total])
        total += len(block)
        buf = np.concatenate([buf, block])
        while len(buf) >= n and (max_clips is None or j < max_clips):
            yield j, buf[:n]
            buf, j = buf[n:], j + 1
        if max_clips is not None and j >= max_clips:
            buf = buf[:0]
            if total >= head_n:
                break
    if j == 0 and total >= n // 4:
        yield 0, crop_or_pad(buf, n)
    yield {"samples": total, "head": np.concatenate(head) if head else np.zeros(0, np.float32)}


# ---- the import ----


def import_audio_folder(audio_dir: str | os.PathLike, captions_csv: str | os.PathLike, out_dir: str | os.PathLike,
                        params: dict, max_clips_per_file: int | None = None, on_error: str = "raise",
                        progress: bool = True, encoding: str = "utf-8") -> Path:
    """Clips + manifest.csv + skipped.csv in `out_dir` from `audio_dir` and its captions CSV -> manifest path."""
    from tqdm import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"audio folder {audio_dir} not found")
    header, records = read_captions(captions_csv, encoding)
    col = next((c for c in ("path", "file", "filename") if c in header), None)
    if col is None or "caption" not in header:
        raise ValueError(f"{captions_csv} needs a 'path' (or 'file'/'filename') column and a 'caption' column; "
                         f"it has {header}")
    common, cfg = params["common"], params.get("corpus", {})
    sr, clip_s, seed = int(common["sample_rate"]), float(common["clip_seconds"]), int(common["seed"])
    n = int(round(clip_s * sr))
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = (out_dir / "audio.partial").resolve()
    shutil.rmtree(partial, ignore_errors=True)
    rows: list[dict] = []
    skipped: list[dict] = []
    seen: dict[str, int] = {}                                  # content hash -> line that imported it

    def drop(line: int, source: str, reason: str, piece_id: str = "", clip: object = "") -> None:
        log.warning("%s, line %d: dropped %s: %s", captions_csv, line, source, reason)
        skipped.append(dict(line=line, piece_id=piece_id, source=source, clip=clip, reason=reason))

    try:
        for line, rec in tqdm(records, desc="importing audio", disable=not progress, mininterval=3):
            source = rec.get(col, "") if isinstance(rec, dict) else ""
            try:
                if isinstance(rec, RowError):
                    raise rec
                new = _import_row(rec, line, col, audio_dir, partial, sr, n, cfg, seed, max_clips_per_file,
                                  seen, drop)
            except RowError as e:
                if on_error == "raise":
                    raise ValueError(f"{captions_csv}, line {line}: {e}") from None
                drop(line, source, str(e))
                continue
            rows += new
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not rows:
        shutil.rmtree(partial, ignore_errors=True)
        write_csv_atomic(out_dir / "skipped.csv", skipped, SKIPPED_COLUMNS)
        raise RuntimeError(f"no usable clips in {audio_dir} (reasons in {out_dir / 'skipped.csv'})")
    shutil.rmtree(out_dir / "audio", ignore_errors=True)
    os.replace(partial, out_dir / "audio")
    write_csv_atomic(out_dir / "skipped.csv", skipped, SKIPPED_COLUMNS)
    return write_csv_atomic(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)


def _import_row(rec: dict, line: int, col: str, audio_dir: Path, partial: Path, sr: int, n: int, cfg: dict,
                seed: int, max_clips: int | None, seen: dict[str, int], drop) -> list[dict]:
    """Check one captions row and cut its file into clips under `partial` -> manifest rows; RowError if bad."""
    file = _audio_path(audio_dir, rec[col])
    if not file.is_file():
        raise RowError(f"audio file not found: {file}")
    caption = rec["caption"].strip()
    if not caption:
        raise RowError("caption is empty")
    bpm = parse_bpm(rec.get("bpm", ""))
    digest = _sha256(file)
    file_id = f"{slugify(rec[col].strip())[:60]}-{digest[:12]}"
    piece_id = _safe_piece_id(rec["piece_id"].strip()) if rec.get("piece_id", "").strip() else file_id
    split = rec.get("split", "").strip() or _split_for(piece_id, cfg.get("splits", {}), seed)
    if split not in ("train", "valid", "test"):
        raise RowError(f"unknown split {split!r} (train, valid or test)")
    if digest in seen:
        drop(line, rec[col], f"duplicate: same audio content as line {seen[digest]}", piece_id)
        return []
    dest = partial / file_id
    if partial not in dest.resolve().parents:                 # file_id is a slug; this never fires
        raise RuntimeError(f"refusing to write {dest} outside {partial}")
    kept, info = [], {}
    try:
        for item in _cut_clips(file, sr, n, max_clips, need_bpm=bpm is None):
            if isinstance(item, dict):
                info = item
                continue
            j, x = item
            clip, why = prepare_clip(x, sr, cfg)
            if clip is None:
                drop(line, rec[col], f"{why} clip", piece_id, j)
                continue
            save_audio(dest / f"c{j}.wav", clip, sr)
            kept.append(j)
        if info["samples"] < n // 4:
            raise _Dropped(f"too short: {info['samples'] / sr:.2f} s, under a quarter clip ({n / 4 / sr:.2f} s)")
        if not kept:
            raise _Dropped("silent: every clip silent or near-silent")
        if bpm is None:
            bpm = estimate_bpm(info["head"], sr)
            lo, hi = BPM_RANGE
            if not lo <= bpm <= hi:
                raise RowError(f"estimated bpm {bpm:g} is outside {lo:g}-{hi:g}: give it in the bpm column")
    except _Dropped as e:
        shutil.rmtree(dest, ignore_errors=True)
        drop(line, rec[col], str(e), piece_id)
        return []
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    seen[digest] = line
    return [dict(path=f"audio/{file_id}/c{j}.wav", piece_id=piece_id, split=split, caption=caption, bpm=bpm,
                 key=rec.get("key", ""), instruments=rec.get("instruments", ""), duration_s=n / sr, sample_rate=sr,
                 source=rec.get("source") or f"audio:{rec[col]}", license=rec.get("license") or "user-supplied",
                 style="user_audio", title="", composer="", meter="", semitones=0, tempo_factor=1.0,
                 accompanied=False, render=0, clip=j, group=piece_id) for j in kept]


class _Dropped(Exception):
    """A readable file that yields no clip (silent, too short): dropped, never an error."""
