"""Corpus CLAP: a small contrastive audio-text model trained on our corpus, so the CLAP score works offline.

The paper's CLAP score (and Presto-LS's CLAP rejection sampling, Fig. 13) needs a joint audio-text space. The
LAION-CLAP checkpoint is not available offline, so we train a small one on the corpus's train split:
  audio tower  frozen MSD-musicnn window features (`audio_layer`, default the 1506-d max+mean pooled mid-end)
               -> LayerNorm -> MLP -> `embed_dim`
  text tower   frozen text encoder (presto_lib.models.text, all-MiniLM-L6-v2 by default), mean-pooled over
               real tokens (MiniLM's sentence embedding) -> LayerNorm -> MLP -> `embed_dim`
  loss         symmetric InfoNCE with a learnt temperature (CLIP / CLAP), where clips with identical captions
               count as positives of each other (corpus captions repeat across clips of a piece).
It only knows what our captions say (instruments, tempo, key, style), so every table labels its score
"CLAP (corpus)" - it is not comparable with LAION-CLAP numbers.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import trange

from presto_lib.checkpoint import load_checkpoint, save_checkpoint
from presto_lib.eval.embeddings import AudioEmbedder, MusicnnEmbedder

DEFAULTS = dict(audio_layer="pooled", embed_dim=128, hidden=256, dropout=0.1, steps=600, batch_size=128,
                lr=1e-3, weight_decay=1e-2, text_kind="minilm", text_path=None, hop_s=3.0, seed=0)


# ---- model ----

def _tower(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear."""
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, d_out))


class CorpusClap(nn.Module):
    """Two projection towers into one unit-norm space plus CLIP's learnt logit scale."""

    def __init__(self, audio_dim: int, text_dim: int, embed_dim: int = 128, hidden: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.audio_tower = _tower(audio_dim, hidden, embed_dim, dropout)
        self.text_tower = _tower(text_dim, hidden, embed_dim, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))   # CLIP's initial temperature

    def audio(self, feats: torch.Tensor) -> torch.Tensor:
        """Unit-norm audio embeddings of musicnn features [..., audio_dim]."""
        return F.normalize(self.audio_tower(feats), dim=-1)

    def text(self, feats: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embeddings of pooled text features [..., text_dim]."""
        return F.normalize(self.text_tower(feats), dim=-1)


def contrastive_loss(a: torch.Tensor, t: torch.Tensor, logit_scale: torch.Tensor,
                     groups: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; pairs (i, j) with groups[i] == groups[j] share the positive mass."""
    logits = logit_scale.clamp(max=math.log(100)).exp() * a @ t.T
    target = (groups[:, None] == groups[None, :]).float()
    target = target / target.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# ---- text features ----

@torch.no_grad()
def text_features(captions: list[str], encoder, batch_size: int = 64) -> np.ndarray:
    """Mean of the text encoder's token embeddings over real tokens: [N, encoder.dim]."""
    out = []
    for i in range(0, len(captions), batch_size):
        emb, mask = encoder.encode(list(captions[i:i + batch_size]))
        m = mask[..., None].float()
        out.append(((emb * m).sum(1) / m.sum(1).clamp(min=1)).cpu())
    return torch.cat(out).numpy()


# ---- retrieval diagnostics ----

def retrieval_at_k(audio_emb: np.ndarray, text_emb: np.ndarray, captions: list[str], k: int = 1) -> float:
    """Text -> audio recall@k: share of queries whose top-k clips include one with the query's caption."""
    sim = np.asarray(text_emb) @ np.asarray(audio_emb).T
    top = np.argsort(-sim, axis=1)[:, :k]
    caps = np.asarray(captions, dtype=object)
    return float(np.mean([(caps[top[i]] == caps[i]).any() for i in range(len(caps))]))


# ---- training ----

def train_corpus_clap(audio_windows: list[np.ndarray], text_feats: np.ndarray, captions: list[str],
                      cfg: dict | None = None, valid: tuple | None = None, progress: bool = True
                      ) -> tuple[CorpusClap, list[dict]]:
    """Train on per-clip musicnn window features (one random window per clip per step) and caption features.

    `valid` = (audio_windows, text_feats, captions) adds validation loss and text->audio R@1 to the log.
    Returns the model (eval mode) and a log: one dict per logged step. Runs on one thread: the matrices are tiny,
    and extra threads only spin.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(audio_windows, text_feats, captions, {**DEFAULTS, **(cfg or {})}, valid, progress)
    finally:
        torch.set_num_threads(threads)


def _train(audio_windows: list[np.ndarray], text_feats: np.ndarray, captions: list[str], cfg: dict,
           valid: tuple | None, progress: bool) -> tuple[CorpusClap, list[dict]]:
    """The training loop of `train_corpus_clap`."""
    if len(audio_windows) != len(text_feats) or len(captions) != len(text_feats):
        raise ValueError(f"need one caption and text feature per clip: {len(audio_windows)} clips, "
                         f"{len(text_feats)} text features, {len(captions)} captions")
    if len(audio_windows) < 2:
        raise ValueError("contrastive training needs at least 2 clips")
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    torch.manual_seed(int(cfg["seed"]))
    wins = [torch.as_tensor(w, dtype=torch.float32) for w in audio_windows]
    txt = torch.as_tensor(text_feats, dtype=torch.float32)
    _, groups = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
    groups = torch.as_tensor(groups)
    model = CorpusClap(wins[0].shape[-1], txt.shape[-1], cfg["embed_dim"], cfg["hidden"], cfg["dropout"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.1)
    bs = min(int(cfg["batch_size"]), len(wins))
    log, every = [], max(1, cfg["steps"] // 20)
    for step in trange(1, cfg["steps"] + 1, desc="corpus CLAP", disable=not progress, leave=False):
        model.train()
        idx = torch.randperm(len(wins), generator=gen)[:bs]
        a = torch.stack([wins[i][torch.randint(len(wins[i]), (1,), generator=gen)].squeeze(0) for i in idx])
        loss = contrastive_loss(model.audio(a), model.text(txt[idx]), model.logit_scale, groups[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == cfg["steps"]:
            row = {"step": step, "train_loss": float(loss.detach()),
                   "temperature": float(1 / model.logit_scale.detach().exp())}
            if valid is not None:
                row.update(evaluate_corpus_clap(model, *valid))
            log.append(row)
    return model.eval(), log


@torch.no_grad()
def evaluate_corpus_clap(model: CorpusClap, audio_windows: list[np.ndarray], text_feats: np.ndarray,
                         captions: list[str]) -> dict[str, float]:
    """Validation loss (all clips in one batch), R@1 / R@5, and the matched-minus-shuffled cosine gap x 100."""
    model.eval()
    a = model.audio(torch.stack([torch.as_tensor(w, dtype=torch.float32).mean(0) for w in audio_windows]))
    t = model.text(torch.as_tensor(text_feats, dtype=torch.float32))
    _, groups = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
    loss = contrastive_loss(a, t, model.logit_scale, torch.as_tensor(groups))
    a, t = a.numpy(), t.numpy()
    matched = float((a * t).sum(1).mean())
    shuffled = float((a * t[np.random.default_rng(0).permutation(len(t))]).sum(1).mean())
    return {"valid_loss": float(loss), "valid_r1": retrieval_at_k(a, t, captions, 1),
            "valid_r5": retrieval_at_k(a, t, captions, 5), "valid_gap": 100 * (matched - shuffled)}


# ---- the embedder ----

class CorpusClapEmbedder(AudioEmbedder):
    """Audio and text embeddings in the corpus CLAP space (16 kHz input, musicnn windowing)."""

    name = "corpus_clap"
    sample_rate = 16000

    def __init__(self, model: CorpusClap, cfg: dict):
        self.model, self.cfg = model.eval(), {**DEFAULTS, **cfg}
        self.musicnn = MusicnnEmbedder(layer=self.cfg["audio_layer"], hop_s=self.cfg["hop_s"])
        self.dim = int(self.cfg["embed_dim"])
        self._text = None
        h = hashlib.sha1()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode() + v.detach().cpu().numpy().tobytes())
        self.fingerprint = h.hexdigest()                       # identifies the weights (reference cache key)

    @torch.no_grad()
    def from_features(self, windows: list[np.ndarray]) -> np.ndarray:
        """Clip embeddings from precomputed musicnn window features (mean of window embeddings)."""
        return np.stack([self.model.audio(torch.as_tensor(w, dtype=torch.float32)).mean(0).numpy()
                         for w in windows])

    @torch.no_grad()
    def embed_clip_windows(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Per-window corpus CLAP audio embeddings."""
        return [self.model.audio(torch.as_tensor(w)).numpy() for w in self.musicnn.embed_clip_windows(clips)]

    @torch.no_grad()
    def embed_text(self, captions: list[str]) -> np.ndarray:
        """Unit-norm text embeddings [N, dim]."""
        if isinstance(captions, str) or len(captions) == 0:
            raise ValueError("captions must be a non-empty list of strings")
        if self._text is None:
            from presto_lib.models.text import get_text_encoder
            self._text = get_text_encoder(self.cfg["text_kind"], self.cfg["text_path"])
        feats = torch.as_tensor(text_features(list(captions), self._text))
        return self.model.text(feats).numpy()


def save_corpus_clap(path: str | Path, model: CorpusClap, cfg: dict) -> Path:
    """Weights + config (dims included) via presto_lib.checkpoint."""
    dims = {"audio_dim": model.audio_tower[0].normalized_shape[0], "text_dim": model.text_tower[0].normalized_shape[0]}
    return save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()},
                           {**DEFAULTS, **cfg, **dims})


def load_corpus_clap(path: str | Path) -> CorpusClapEmbedder:
    """A trained corpus CLAP (from `save_corpus_clap`) as an embedder with `embed_audio` and `embed_text`."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no corpus CLAP checkpoint at {path}: run the `metrics` stage "
                                "(notebooks/04_metrics.ipynb) to train it")
    tensors, cfg = load_checkpoint(path)
    model = CorpusClap(cfg["audio_dim"], cfg["text_dim"], cfg["embed_dim"], cfg["hidden"], cfg["dropout"])
    model.load_state_dict(tensors)
    return CorpusClapEmbedder(model, cfg)
