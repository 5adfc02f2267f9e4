"""The Presto score-model backbone: a DiT over VAE latents [B, C, T] (paper A.1).

Llama-style blocks (one attention, one feed-forward), AdaLN-zero conditioning on the sum of a noise-level
embedding (EDM's c_noise = ln(sigma)/4, sinusoidal) and a BPM embedding (learned null for bpm <= 0),
and text tokens concatenated to the audio keys/values at every attention layer. The pieces are public so layer
dropping (Presto-L, Sec. 3.3) and the Presto-S discriminator head can compose them without copying the model:

    h, c, ctx = model.embed(x, c_noise, bpm, text, text_mask, extra_emb)
    for i in [*range(k), model.depth - 1]:     # Presto-L shifted dropping
        h = model.blocks[i](h, c, ctx)
    out = model.unembed(h, c)

BPM embedding (`bpm_emb`): "number" (default) follows Stable Audio's NumberConditioner: the BPM is clamped to
[bpm_min, bpm_max] and normalised to t in [0, 1], then embedded by learned Fourier features [t, sin 2 pi w t,
cos 2 pi w t] (w ~ N(0, 1), learned) and an MLP, so nearby tempi get nearby embeddings. "sinusoidal" (the
earlier choice, kept for its checkpoints) feeds the raw BPM to DiT's timestep sinusoids, whose frequencies up to
1 rad per BPM alias: 80 and 81 BPM are as far apart as 80 and 150. A saved config without `bpm_emb` is one of
those earlier checkpoints and loads as "sinusoidal".
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.utils.checkpoint
import torch.nn as nn

from presto_lib.fields import reject_unknown

from .layers import AttnContext, DiTBlock, FinalLayer, ScalarEmbedder, rope_tables

BlocksArg = Union[None, Sequence[int], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
#                                   Config
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class DiTConfig:
    """Sizes and options of a DiT; stored as JSON next to its weights."""

    in_channels: int = 32           # VAE latent dim (paper: 32)
    hidden_size: int = 1152         # paper: DiT-XL-like
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    text_dim: int = 384             # all-MiniLM-L6-v2; a T5 encoder gives its d_model
    patch_size: int = 1             # tokens = T / patch_size
    out_channels: Optional[int] = None  # default: in_channels
    mlp: str = "swiglu"             # "swiglu" (Llama) or "gelu" (DiT)
    qk_norm: bool = True
    pos_emb: str = "rope"           # "rope" or "none"
    rope_base: float = 10000.0
    freq_dim: int = 256             # sinusoidal features per scalar condition
    noise_emb_scale: float = 250.0  # c_noise = ln(sigma)/4 lies in ~[-1.6, 1.1]; scaled to DiT's timestep range
    bpm_emb_scale: float = 1.0      # "sinusoidal" only: raw BPM times this feeds the sinusoids
    bpm_emb: str = "number"         # "number" (normalised, learned Fourier; Stable Audio) or "sinusoidal" (legacy)
    bpm_min: float = 40.0           # "number": BPM range mapped to [0, 1] (the corpus keeps 40-208)
    bpm_max: float = 240.0
    attn_backend: str = "auto"      # "auto" (flash-attn on CUDA fp16/bf16 when installed, else SDPA), "sdpa", "flash"

    def __post_init__(self):
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size {self.hidden_size} / num_heads {self.num_heads} must be an even integer")
        if min(self.in_channels, self.depth, self.text_dim, self.patch_size) < 1:
            raise ValueError("in_channels, depth, text_dim and patch_size must be >= 1")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"unknown mlp {self.mlp!r}: use 'swiglu' or 'gelu'")
        if self.pos_emb not in ("rope", "none"):
            raise ValueError(f"unknown pos_emb {self.pos_emb!r}: use 'rope' or 'none'")
        if self.bpm_emb not in ("number", "sinusoidal"):
            raise ValueError(f"unknown bpm_emb {self.bpm_emb!r}: use 'number' or 'sinusoidal'")
        if not 0 < self.bpm_min < self.bpm_max:
            raise ValueError(f"need 0 < bpm_min < bpm_max, got {self.bpm_min}, {self.bpm_max}")
        if self.attn_backend not in ("auto", "sdpa", "flash"):
            raise ValueError(f"unknown attn_backend {self.attn_backend!r}: use 'auto', 'sdpa' or 'flash'")

    @property
    def out_dim(self) -> int:
        """Output channels per time step."""
        return self.out_channels or self.in_channels

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        """Builds a config from a dict; unknown keys are an error."""
        reject_unknown(cls, d, "DiTConfig keys")
        if "bpm_emb" not in d and "bpm_emb_scale" in d:     # a saved config from before `bpm_emb`: legacy BPM
            d = {**d, "bpm_emb": "sinusoidal"}
        return cls(**d)


# Named sizes (DiT naming); the paper's model is XL-like. Profiles may set sizes directly instead.
DIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, depth=4, num_heads=4),
    "S": dict(hidden_size=384, depth=12, num_heads=6),
    "B": dict(hidden_size=768, depth=12, num_heads=12),
    "XL": dict(hidden_size=1152, depth=28, num_heads=16),
}


# ---------------------------------------------------------------------------------------------------------------
#                                   BPM: a normalised number embedding (Stable Audio's NumberConditioner)
# ---------------------------------------------------------------------------------------------------------------

class NumberEmbedder(nn.Module):
    """A number in [lo, hi] -> t = (x - lo) / (hi - lo) -> learned Fourier features [t, sin, cos] -> MLP [B, hidden]."""

    def __init__(self, hidden_size: int, lo: float, hi: float, freq_dim: int = 256):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)
        self.freqs = nn.Parameter(torch.randn(freq_dim // 2))               # w ~ N(0, 1) cycles per unit of t
        self.mlp = nn.Sequential(nn.Linear(2 * (freq_dim // 2) + 1, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """x [B] -> t in [0, 1] (clamped to the range)."""
        return ((x.float() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[t, sin(2 pi w t), cos(2 pi w t)] [B, 2 (freq_dim // 2) + 1] (Stable Audio's LearnedPositionalEmbedding)."""
        t = self.normalise(x)[:, None]
        ang = 2 * math.pi * t * self.freqs.float()[None]
        return torch.cat([t, ang.sin(), ang.cos()], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(x).to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------------------------
#                                   Model
# ---------------------------------------------------------------------------------------------------------------

class DiT(nn.Module):
    """Text-, BPM- and noise-conditioned DiT over latent sequences [B, C, T] (paper A.1)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.hidden_size, cfg.patch_size
        self.depth, self.hidden_size = cfg.depth, D
        self.x_embedder = nn.Linear(cfg.in_channels * p, D)                  # patch of p latent frames -> token
        self.noise_embedder = ScalarEmbedder(D, cfg.freq_dim, cfg.noise_emb_scale)
        self.bpm_embedder = (NumberEmbedder(D, cfg.bpm_min, cfg.bpm_max, cfg.freq_dim) if cfg.bpm_emb == "number"
                             else ScalarEmbedder(D, cfg.freq_dim, cfg.bpm_emb_scale))
        self.null_bpm = nn.Parameter(torch.randn(D) * 0.02)                  # used where bpm <= 0 (CFG null)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList(
            DiTBlock(D, cfg.num_heads, cfg.mlp_ratio, cfg.mlp, cfg.qk_norm, cfg.attn_backend) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p * cfg.out_dim)
        self.checkpoint_blocks = False      # training memory: recompute each block's activations in backward
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT init: xavier linears, N(0, 0.02) embedder MLPs, zero AdaLN and output (identity blocks, zero output)."""
        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.apply(_basic)
        for emb in (self.noise_embedder, self.bpm_embedder):
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
        # AdaLN-zero: zero shift/scale/gate so every block starts as the identity.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        # Zero-init the final layer so the model outputs zeros at init.
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # ---- pieces (public: Presto-L / Presto-S compose them) ----

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, T] -> audio tokens [B, T / patch_size, hidden]."""
        B, C, T = x.shape
        p = self.cfg.patch_size
        if C != self.cfg.in_channels:
            raise ValueError(f"x has {C} channels, the model expects {self.cfg.in_channels}")
        if T % p:
            raise ValueError(f"length T={T} must be divisible by patch_size={p}")
        tokens = x.transpose(1, 2).reshape(B, T // p, p * C)                  # [B, N, p*C], frame-major
        return self.x_embedder(tokens.to(self.x_embedder.weight.dtype))

    def cond_embedding(self, c_noise: torch.Tensor, bpm: torch.Tensor,
                       extra_emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """AdaLN conditioning c [B, hidden] = emb(c_noise) + emb(bpm) (+ extra_emb, e.g. Presto-L's budget)."""
        if c_noise.ndim != 1 or bpm.shape != c_noise.shape:
            raise ValueError(f"c_noise and bpm must both be [B]; got {tuple(c_noise.shape)} and {tuple(bpm.shape)}")
        c = self.noise_embedder(c_noise)
        bpm_emb = self.bpm_embedder(bpm.clamp(min=0))
        c = c + torch.where((bpm > 0)[:, None], bpm_emb, self.null_bpm.to(bpm_emb.dtype)[None])
        if extra_emb is not None:
            if extra_emb.shape != c.shape:
                raise ValueError(f"extra_emb must be [B, hidden] = {tuple(c.shape)}; got {tuple(extra_emb.shape)}")
            c = c + extra_emb
        return c

    def text_context(self, text: Optional[torch.Tensor], text_mask: Optional[torch.Tensor], num_tokens: int,
                     batch_size: int) -> AttnContext:
        """Projects text [B, L, text_dim] and builds the attention context for `num_tokens` audio tokens."""
        B, D = batch_size, self.hidden_size
        dev, dtype = self.x_embedder.weight.device, self.x_embedder.weight.dtype
        if text is None:                    # no text at all == a zero-length null condition
            text = torch.zeros(B, 0, self.cfg.text_dim, device=dev, dtype=dtype)
            text_mask = torch.zeros(B, 0, dtype=torch.bool, device=dev) if text_mask is None else text_mask
        if text.ndim != 3 or text.shape[0] != B or text.shape[2] != self.cfg.text_dim:
            raise ValueError(f"text must be [B={B}, L, text_dim={self.cfg.text_dim}]; got {tuple(text.shape)}")
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        if text_mask.dtype != torch.bool or tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask must be a bool tensor [B, L] = {tuple(text.shape[:2])}; "
                             f"got {text_mask.dtype} {tuple(text_mask.shape)}")
        text_h = self.text_proj(text.to(dtype))
        audio_keys = torch.ones(B, num_tokens, dtype=torch.bool, device=text_mask.device)
        key_mask = torch.cat([audio_keys, text_mask], dim=1)               # audio keys are always present
        rope = None
        if self.cfg.pos_emb == "rope":
            rope = rope_tables(num_tokens, D // self.cfg.num_heads, self.cfg.rope_base, device=dev)
        return AttnContext(text_h, key_mask, rope, bool(text_mask.all()))

    def embed(self, x: torch.Tensor, c_noise: torch.Tensor, bpm: torch.Tensor, text: Optional[torch.Tensor],
              text_mask: Optional[torch.Tensor], extra_emb: Optional[torch.Tensor] = None
              ) -> tuple[torch.Tensor, torch.Tensor, AttnContext]:
        """All inputs -> (audio tokens h [B, N, hidden], conditioning c [B, hidden], attention context)."""
        if x.ndim != 3:
            raise ValueError(f"x must be [B, C, T]; got {tuple(x.shape)}")
        B = x.shape[0]
        c_noise, bpm = _per_sample(c_noise, B, "c_noise", x), _per_sample(bpm, B, "bpm", x)
        h = self.embed_inputs(x)
        c = self.cond_embedding(c_noise, bpm, extra_emb)
        return h, c, self.text_context(text, text_mask, h.shape[1], B)

    def run_blocks(self, h: torch.Tensor, c: torch.Tensor, ctx: AttnContext, blocks: BlocksArg = None,
                   return_features: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Runs the chosen blocks (see `forward`); returns (h, features of the run blocks)."""
        feats: list[torch.Tensor] = []
        if isinstance(blocks, torch.Tensor) and blocks.dtype == torch.bool:
            if tuple(blocks.shape) != (h.shape[0], self.depth):
                raise ValueError(f"bool blocks mask must be [B, depth] = {(h.shape[0], self.depth)}; "
                                 f"got {tuple(blocks.shape)}")
            plan = blocks.cpu()               # decide on the host: one device sync, not one per block
            for i, block in enumerate(self.blocks):
                run = plan[:, i]
                if bool(run.all()):
                    h = self._block(block, h, c, ctx)
                elif bool(run.any()):     # per-sample dropping: dropped samples pass through unchanged
                    idx = run.nonzero().squeeze(1).to(h.device)
                    h = h.index_copy(0, idx, self._block(block, h[idx], c[idx], ctx.select(idx)))
                if return_features:
                    feats.append(h)
            return h, feats
        for i in self._block_indices(blocks):
            h = self._block(self.blocks[i], h, c, ctx)
            if return_features:
                feats.append(h)
        return h, feats

    def unembed(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, hidden] -> final AdaLN + linear -> latents [B, out_channels, N * patch_size]."""
        B, N, _ = h.shape
        out = self.final_layer(h, c)                                          # [B, N, p * C_out]
        return out.reshape(B, N * self.cfg.patch_size, self.cfg.out_dim).transpose(1, 2)

    # ---- forward ----

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, bpm: torch.Tensor, text: Optional[torch.Tensor],
                text_mask: Optional[torch.Tensor], blocks: BlocksArg = None, extra_emb: Optional[torch.Tensor] = None,
                return_features: bool = False):
        """F_theta(x, c_noise; bpm, text) -> [B, out_channels, T].

        blocks: None (all), a sequence of block indices run in that order (same for the whole batch), or a bool
        tensor [B, depth] of blocks run per sample (dropped blocks pass their input through).
        extra_emb: [B, hidden] added to the conditioning (Presto-L budget embedding, Sec. 3.3).
        return_features: also return the outputs [B, N, hidden] of every run block (with a bool mask: one per
        block, equal to its input for the samples that skip it).
        """
        h, c, ctx = self.embed(x, c_noise, bpm, text, text_mask, extra_emb)
        h, feats = self.run_blocks(h, c, ctx, blocks, return_features)
        out = self.unembed(h, c)
        return (out, feats) if return_features else out

    # ---- helpers ----

    def _block(self, block: nn.Module, h: torch.Tensor, c: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """One block; with `checkpoint_blocks` (and grad on) its activations are recomputed in backward."""
        if self.checkpoint_blocks and torch.is_grad_enabled():
            flags = [p.requires_grad for p in block.parameters()]    # recompute with the forward's flags
            return torch.utils.checkpoint.checkpoint(block, h, c, ctx, use_reentrant=False, context_fn=lambda: (
                contextlib.nullcontext(), _requires_grad_as(block, flags)))
        return block(h, c, ctx)

    def _block_indices(self, blocks: BlocksArg) -> list[int]:
        if blocks is None:
            return list(range(self.depth))
        if isinstance(blocks, torch.Tensor):
            if blocks.ndim != 1 or blocks.is_floating_point():
                raise ValueError("blocks tensor must be 1-D integer indices or a bool mask [B, depth]")
            blocks = blocks.tolist()
        idx = [int(i) for i in blocks]
        bad = [i for i in idx if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"block indices {bad} out of range for depth {self.depth}")
        return idx

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


@contextlib.contextmanager
def _requires_grad_as(module: nn.Module, flags: list[bool]):
    """Parameters' requires_grad set to `flags` for a while (a frozen pass, e.g. Presto-S's GAN term, recomputed)."""
    old = [p.requires_grad for p in module.parameters()]
    for p, f in zip(module.parameters(), flags):
        p.requires_grad_(f)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), old):
            p.requires_grad_(f)


def _per_sample(v: Union[torch.Tensor, float], B: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A scalar or [B] (or [B, 1, ...]) value -> float tensor [B] on x's device."""
    v = torch.as_tensor(v, device=like.device)
    if v.numel() == 1:
        return v.reshape(1).float().expand(B)
    if v.numel() != B or (v.ndim > 1 and v.shape[0] != B):
        raise ValueError(f"{name} must be a scalar or have one value per sample (B={B}); got {tuple(v.shape)}")
    return v.reshape(B).float()
