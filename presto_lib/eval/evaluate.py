"""Generated audio + reference split + captions -> one table row (FAD, MMD, CLAP score, P/R/D/C), section 4.1.

Generated audio comes in the CONTRIBUTING layout `data/samples/<system>/` (NNNN.wav + samples.csv with
`path, caption, bpm, seed`). The reference is a split of `data/corpus/manifest.csv` (the paper: Song Describer;
here: our test split). Reference embeddings are cached by the `metrics` stage under `data/metrics/reference/`
(a DVC output; later stages only read it).

Backbones (`presto_lib.eval.embeddings`): FAD / MMD / PRDC on MSD-musicnn 'penultimate' features by default
(`backbone="clap"` with a local LAION-CLAP folder gives the paper's setting); the CLAP score from the corpus
CLAP (column "CLAP (corpus)") or LAION-CLAP ("CLAP (LAION)"). MMD bandwidth: median pairwise distance of the
reference embeddings for musicnn (cached with them, so every system shares the kernel); CMMD's sigma = 10 for
unit-norm LAION-CLAP embeddings.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from presto_lib.audio import load_audio
from presto_lib.eval import metrics as M
from presto_lib.eval.embeddings import MusicnnEmbedder, as_clips

SAMPLE_COLUMNS = ("path", "caption", "bpm", "seed")
CLIP_KEYS = ("audio", "clap", "prompt", "seed")      # per-clip evaluation data (`clip_data`, eval.claims_cells)


# ---- reading audio ----

def spread_indices(n: int, k: int | None) -> np.ndarray:
    """`k` indices evenly spread over range(n) (all of them when k is 0/None or >= n)."""
    if not k or k >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, k).round().astype(int)


def read_samples(samples_dir: str | Path) -> tuple[list[np.ndarray], int, pd.DataFrame]:
    """A system's generated clips (mono, float32) from `samples_dir/samples.csv`, in file order."""
    d = Path(samples_dir)
    if not (d / "samples.csv").is_file():
        raise FileNotFoundError(f"{d} holds no samples.csv (expected columns {', '.join(SAMPLE_COLUMNS)})")
    df = pd.read_csv(d / "samples.csv")
    missing = set(SAMPLE_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{d / 'samples.csv'} lacks columns {sorted(missing)}")
    return _load_all([d / p for p in df["path"]], df)


def read_split(manifest: str | Path, split: str, max_clips: int | None = None
               ) -> tuple[list[np.ndarray], int, pd.DataFrame]:
    """Clips of one manifest split in manifest order (`max_clips`: that many, evenly spread over the split)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"corpus manifest {manifest} not found: build the corpus first")
    df = pd.read_csv(manifest)
    df = df[df["split"] == split].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"split {split!r} is empty in {manifest}")
    df = df.iloc[spread_indices(len(df), max_clips)].reset_index(drop=True)
    return _load_all([manifest.parent / p for p in df["path"]], df)


def _load_all(paths: list[Path], df: pd.DataFrame) -> tuple[list[np.ndarray], int, pd.DataFrame]:
    """Load mono clips; all must share one sample rate."""
    waves, rates = [], set()
    for p in tqdm(paths, desc="loading audio", leave=False, disable=len(paths) < 50):
        w, sr = load_audio(p, mono=True)
        waves.append(w[0])
        rates.add(sr)
    if len(rates) != 1:
        raise ValueError(f"clips have mixed sample rates {sorted(rates)}")
    return waves, rates.pop(), df


# ---- embeddings of a set of clips ----

def _is_corpus(clap) -> bool:
    return clap is not None and getattr(clap, "name", "") == "corpus_clap"


def window_features(waves: list[np.ndarray], sample_rate: int, musicnn: MusicnnEmbedder | None = None,
                    clap=None, layers: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Per-window musicnn features of every clip: the backbone layer, the corpus CLAP's audio layer, `layers`."""
    musicnn = musicnn or MusicnnEmbedder()
    layers = [musicnn.layer] + ([clap.cfg["audio_layer"]] if _is_corpus(clap) else []) + list(layers or [])
    return musicnn.window_layers(as_clips(waves, sample_rate, musicnn.sample_rate), list(dict.fromkeys(layers)))


def embeddings_from_features(feats: dict[str, list[np.ndarray]], clap=None, layer: str = "penultimate"
                             ) -> dict[str, np.ndarray]:
    """{'audio': clip means of `layer` windows, 'clap_audio': corpus CLAP clip embeddings (when given)}."""
    out = {"audio": np.stack([w.mean(0) for w in feats[layer]])}
    if _is_corpus(clap):
        out["clap_audio"] = clap.from_features(feats[clap.cfg["audio_layer"]])
    return out


def embed_set(waves: list[np.ndarray], sample_rate: int, clap=None, musicnn: MusicnnEmbedder | None = None,
              backbone: str = "musicnn") -> dict[str, np.ndarray]:
    """{'audio': [N, D] backbone embeddings, 'clap_audio': [N, Dc]}, one musicnn pass where possible."""
    musicnn = musicnn or MusicnnEmbedder()
    if backbone == "clap" and (clap is None or _is_corpus(clap)):
        raise ValueError("backbone='clap' needs a LAION-CLAP embedder (clap=ClapEmbedder(path))")
    out = {}
    if backbone == "musicnn" or _is_corpus(clap):
        feats = window_features(waves, sample_rate, musicnn, clap)
        out = embeddings_from_features(feats, clap, musicnn.layer)
        if backbone != "musicnn":
            out.pop("audio")
    if clap is not None and not _is_corpus(clap):
        out["clap_audio"] = clap.embed_audio(waves, sample_rate)
    if backbone == "clap":
        out["audio"] = out["clap_audio"]
    return out


# ---- scoring ----

def clap_label(clap) -> str:
    """Column name of the CLAP score, naming the model that gave it."""
    return "CLAP (corpus)" if getattr(clap, "name", "") == "corpus_clap" else "CLAP (LAION)"


def score(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray], text_emb: np.ndarray | None = None,
          mmd_sigma: float | None = None, k: int = 5, clap_name: str = "CLAP (corpus)", n_boot: int = 0,
          seed: int = 0) -> dict[str, float]:
    """One table row from embeddings: FAD, MMD, CLAP score (if text given), precision/recall/density/coverage.

    With `n_boot > 0` adds `<metric>_lo` / `<metric>_hi` 95% bootstrap intervals (generated set resampled).
    """
    g, r = gen["audio"], ref["audio"]
    row = {"n": len(g), "FAD": M.fad(g, r), "MMD": M.mmd(g, r, sigma=mmd_sigma)}
    if text_emb is not None and "clap_audio" in gen:
        row[clap_name] = M.clap_score(gen["clap_audio"], text_emb)
    kk = min(k, len(g) - 2, len(r) - 2)          # prdc needs k + 1 neighbours besides each point
    p = M.prdc(r, g, k=kk) if kk >= 1 else dict.fromkeys(("precision", "density", "recall", "coverage"), np.nan)
    row.update({"Precision": p["precision"], "Density": p["density"], "Recall": p["recall"],
                "Coverage": p["coverage"]})
    if n_boot:
        cis = {"FAD": lambda x: M.fad(x, r), "MMD": lambda x: M.mmd(x, r, sigma=mmd_sigma)}
        for name, fn in cis.items():
            _, row[f"{name}_lo"], row[f"{name}_hi"] = M.bootstrap_ci(fn, g, n_boot=n_boot, seed=seed)
        if clap_name in row:
            _, row[f"{clap_name}_lo"], row[f"{clap_name}_hi"] = M.bootstrap_ci(
                M.clap_score, gen["clap_audio"], text_emb, n_boot=n_boot, seed=seed, paired=True)
    return row


# ---- per-clip evaluation data (the claims ledger's input) ----

def eval_key(samples_dir: str | Path) -> str:
    """File stem naming a samples folder's evaluation: its path below data/ with '/' -> '__'."""
    parts = tuple(q for q in Path(samples_dir).parts if q != Path(samples_dir).anchor)
    if "data" in parts:
        parts = parts[len(parts) - parts[::-1].index("data"):]
    if not parts:
        raise ValueError(f"no evaluation key for {samples_dir!r}")
    return "__".join(parts)


def clip_data(gen: dict[str, np.ndarray], text_emb: np.ndarray | None, prompts: list[str],
              seeds: list[int] | None = None) -> dict[str, np.ndarray]:
    """{'audio' [N, D], 'clap' [N] per-clip CLAP (NaN without text), 'prompt' [N], 'seed' [N]} of one set."""
    from presto_lib.eval.claims_cells import per_clip_clap
    n = len(gen["audio"])
    clap = (per_clip_clap(gen["clap_audio"], text_emb) if text_emb is not None and "clap_audio" in gen
            else np.full(n, np.nan))
    return {"audio": np.asarray(gen["audio"], np.float32), "clap": np.asarray(clap, np.float64),
            "prompt": np.asarray([str(p) for p in prompts]),
            "seed": np.asarray(seeds if seeds is not None else np.full(n, -1), np.int64)}


def save_clip_data(path: str | Path, data: dict[str, np.ndarray]) -> Path:
    """Write per-clip evaluation data as an .npz (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{k: data[k] for k in CLIP_KEYS})
    tmp.replace(path)
    return path


def load_clip_data(path: str | Path) -> dict[str, np.ndarray]:
    """Per-clip evaluation data saved by `save_clip_data`."""
    with np.load(path, allow_pickle=False) as z:
        missing = set(CLIP_KEYS) - set(z.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        return {k: z[k] for k in CLIP_KEYS}


# ---- cached reference ----

def _split_key(df: pd.DataFrame, root: Path, extra: dict) -> str:
    """Hash of what the reference embeddings depend on: clip paths, sizes, captions, embedder settings."""
    h = hashlib.sha1(json.dumps(extra, sort_keys=True).encode())
    for p, c in zip(df["path"], df["caption"]):
        f = root / p
        h.update(f"{p}|{f.stat().st_size if f.exists() else -1}|{c}\n".encode())
    return h.hexdigest()


def _clip_key(wave: np.ndarray, sample_rate: int) -> str:
    """Hash of a clip's samples and rate (the `Evaluator.embed` memo key)."""
    w = np.ascontiguousarray(wave, dtype=np.float32)
    return hashlib.sha1(f"{sample_rate}|{w.shape}|".encode() + w.tobytes()).hexdigest()


class Evaluator:
    """Scores sets of clips against a cached reference split; `evaluate_dir(samples_dir)` -> table row."""

    def __init__(self, manifest: str | Path = "data/corpus/manifest.csv", reference_split: str = "test",
                 cache_dir: str | Path = "data/metrics", clap: str | Path | None = "corpus",
                 backbone: str = "musicnn", k: int = 5, hop_s: float = 3.0, write_cache: bool = False,
                 clip_dir: str | Path | None = None):
        from presto_lib.eval.backbones import get_embedder
        if backbone not in ("musicnn", "clap"):
            raise ValueError(f"backbone must be 'musicnn' or 'clap', got {backbone!r}")
        self.manifest, self.split, self.cache_dir = Path(manifest), reference_split, Path(cache_dir)
        self.backbone, self.k, self.write_cache = backbone, k, write_cache
        self.clip_dir = Path(clip_dir) if clip_dir else None   # evaluate_dir saves per-clip data here
        self.musicnn = MusicnnEmbedder(hop_s=hop_s)
        if clap == "corpus":
            self.clap = get_embedder("corpus_clap", path=self.cache_dir / "corpus_clap")
        elif clap is None:
            self.clap = None
        else:
            self.clap = get_embedder("clap", path=clap)
        self.clap_name = clap_label(self.clap)
        self._ref = None
        self._text: dict[str, np.ndarray] = {}                # caption -> CLAP text embedding
        self._clips: dict[str, dict[str, np.ndarray]] = {}    # clip hash -> its embeddings (`embed`)

    def embed(self, waves: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        """Backbone + CLAP audio embeddings of a set of clips, memoised per clip: a clip scored twice (a curve
        folder that is the head of a Table 2 folder, a system in two tables) is embedded once."""
        if not waves:
            return embed_set(waves, sample_rate, self.clap, self.musicnn, self.backbone)
        keys = [_clip_key(w, sample_rate) for w in waves]
        new: dict[str, int] = {}                              # clip hash -> first index, clips not seen yet
        for i, k in enumerate(keys):
            if k not in self._clips and k not in new:
                new[k] = i
        if new:
            out = embed_set([waves[i] for i in new.values()], sample_rate, self.clap, self.musicnn, self.backbone)
            for j, k in enumerate(new):
                self._clips[k] = {name: a[j] for name, a in out.items()}
        return {name: np.stack([self._clips[k][name] for k in keys]) for name in self._clips[keys[0]]}

    def reference(self) -> dict[str, np.ndarray]:
        """Reference embeddings + MMD bandwidth, from the cache when it matches the manifest, else computed."""
        if self._ref is not None:
            return self._ref
        df = pd.read_csv(self.manifest)
        df = df[df["split"] == self.split].reset_index(drop=True)
        settings = {"backbone": self.backbone, "hop_frames": self.musicnn.hop_frames, "clap": self.clap_name,
                    "clap_weights": getattr(self.clap, "fingerprint", str(getattr(self.clap, "path", None)))}
        key = _split_key(df, self.manifest.parent, settings)
        path = self.cache_dir / "reference" / f"{self.split}-{self.backbone}.npz"
        if path.is_file():
            z = dict(np.load(path, allow_pickle=False))
            if str(z.get("key")) == key:
                self._ref = z
                return z
            warnings.warn(f"{path} is stale (corpus or settings changed); recomputing it")
        waves, sr, df = read_split(self.manifest, self.split)
        ref = self.embed(waves, sr)
        ref["sigma"] = np.float64(M.CMMD_SIGMA if self.backbone == "clap" else M.median_bandwidth(ref["audio"]))
        ref["key"] = np.array(key)
        if self.write_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **ref)
            tmp.replace(path)
        self._ref = ref
        return ref

    def score_embeddings(self, gen: dict[str, np.ndarray], captions: list[str] | None = None,
                         n_boot: int = 0, seed: int = 0) -> dict[str, float]:
        """A row from generated embeddings (and the captions they were prompted with)."""
        ref = self.reference()
        return score(gen, ref, self.text_embeddings(captions), float(ref["sigma"]), self.k, self.clap_name, n_boot,
                     seed)

    def text_embeddings(self, captions: list[str] | None) -> np.ndarray | None:
        """CLAP text embeddings of captions (memoised per caption); None without captions or a CLAP model."""
        if self.clap is None or captions is None:
            return None
        new = sorted(set(map(str, captions)) - set(self._text))
        if new:
            self._text.update(zip(new, self.clap.embed_text(new)))
        return np.stack([self._text[str(c)] for c in captions])

    def evaluate_audio(self, waves: list[np.ndarray], sample_rate: int, captions: list[str] | None = None,
                       system: str = "", n_boot: int = 0, seed: int = 0) -> dict:
        """A row for clips in memory."""
        row = self.score_embeddings(self.embed(waves, sample_rate), captions, n_boot, seed)
        return {"system": system, "backbone": self.backbone, **row}

    def clips(self, samples_dir: str | Path) -> dict[str, np.ndarray]:
        """Per-clip evaluation data (`clip_data`) of a samples folder."""
        waves, sr, df = read_samples(samples_dir)
        captions = list(df["caption"].astype(str))
        return clip_data(self.embed(waves, sr), self.text_embeddings(captions), captions, list(df["seed"]))

    def evaluate_dir(self, samples_dir: str | Path, system: str | None = None, n_boot: int = 0,
                     seed: int = 0) -> dict:
        """A row for a `data/samples/<system>/` folder; with `clip_dir`, also its per-clip data
        (`clip_dir/<eval_key(samples_dir)>.npz`: backbone embeddings, per-clip CLAP, prompts, seeds)."""
        waves, sr, df = read_samples(samples_dir)
        captions = list(df["caption"].astype(str))
        gen = self.embed(waves, sr)
        text = self.text_embeddings(captions)
        if self.clip_dir is not None and Path(samples_dir).resolve().is_relative_to(Path.cwd().resolve()):
            save_clip_data(self.clip_dir / f"{eval_key(samples_dir)}.npz",
                           clip_data(gen, text, captions, list(df["seed"])))
        row = self.score_embeddings(gen, captions, n_boot, seed)
        return {"system": system or Path(samples_dir).name, "backbone": self.backbone, **row}


def evaluate(samples_dir: str | Path, manifest: str | Path = "data/corpus/manifest.csv",
             reference_split: str = "test", cache_dir: str | Path = "data/metrics",
             clap: str | Path | None = "corpus", backbone: str = "musicnn", k: int = 5, n_boot: int = 0) -> dict:
    """One table row (FAD, MMD, CLAP score, precision, density, recall, coverage) for a samples folder."""
    ev = Evaluator(manifest, reference_split, cache_dir, clap, backbone, k)
    return ev.evaluate_dir(samples_dir, n_boot=n_boot)
