"""Building blocks of the Presto DiT (paper A.1): embeddings, RoPE, joint audio/text attention, AdaLN-zero blocks.

Style follows DiT (Peebles & Xie, 2023, `models.py`): small modules, `modulate`, zero-initialised AdaLN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional GPU extra; only used on CUDA in fp16/bf16 (see `joint_attention`)
    from flash_attn import flash_attn_varlen_kvpacked_func as _flash_varlen_kvpacked
except Exception:  # noqa: BLE001 - any import failure (missing wheel, CUDA mismatch) means "not available"
    _flash_varlen_kvpacked = None

HAS_FLASH_ATTN = _flash_varlen_kvpacked is not None


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation (DiT): x * (1 + scale) + shift, with [B, D] conditioning broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---------------------------------------------------------------------------------------------------------------
#                                   Scalar embeddings (noise level, BPM)
# ---------------------------------------------------------------------------------------------------------------

def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [B, dim] of a scalar per sample x [B] (DiT's timestep_embedding: cos then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = x.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ScalarEmbedder(nn.Module):
    """Embeds a scalar (c_noise or BPM) as sinusoidal features -> MLP (paper A.1)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256, scale: float = 1.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(x * self.scale, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------------------------
#                                   Rotary position embedding (audio tokens only)
# ---------------------------------------------------------------------------------------------------------------

def rope_tables(n: int, head_dim: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [n, head_dim] for rotary embeddings (rotate-half layout)."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    ang = torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates x [B, N, H, d] by position; cos/sin are [N, d]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (x.float() * cos + rot * sin).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
#                                   Attention over audio + text keys (A.1)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class AttnContext:
    """What every block's attention needs besides the audio tokens: projected text, key mask, RoPE tables."""

    text: torch.Tensor                  # [B, L, hidden] projected text tokens (L may be 0)
    key_mask: torch.Tensor              # [B, N + L] bool, True = attend (audio keys always True)
    rope: Optional[tuple[torch.Tensor, torch.Tensor]]  # cos/sin [N, head_dim] or None
    all_keys: bool                      # True when no key is masked (SDPA can then run without a mask)

    def select(self, idx: torch.Tensor) -> "AttnContext":
        """The context of a subset of the batch (per-sample layer dropping)."""
        km = self.key_mask[idx]
        return AttnContext(self.text[idx], km, self.rope, bool(km.all()))


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttnContext,
                    backend: str = "auto") -> torch.Tensor:
    """Attention of audio queries q [B, N, H, d] over keys/values [B, N + L, H, d]; returns [B, N, H, d]."""
    B, N, H, d = q.shape
    use_flash = (backend in ("auto", "flash") and HAS_FLASH_ATTN and q.is_cuda
                 and q.dtype in (torch.float16, torch.bfloat16) and d % 8 == 0 and d <= 256)
    if backend == "flash" and not use_flash:
        raise ValueError("attn_backend='flash' needs flash-attn installed, CUDA fp16/bf16 tensors and head_dim % 8 == 0 (<= 256)")
    if use_flash:
        # Variable-length packing: each sample keeps its N audio keys and only its real text keys.
        kv = torch.stack([k, v], dim=2)[ctx.key_mask]                     # [total_k, 2, H, d]
        lens = ctx.key_mask.sum(1, dtype=torch.int32)
        cu_k = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
        cu_q = torch.arange(0, (B + 1) * N, N, dtype=torch.int32, device=q.device)
        out = _flash_varlen_kvpacked(q.reshape(B * N, H, d), kv, cu_q, cu_k, N, int(lens.max()))
        return out.view(B, N, H, d)
    mask = None if ctx.all_keys else ctx.key_mask[:, None, None, :]     # [B, 1, 1, N + L] bool
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


class Attention(nn.Module):
    """Self-attention of audio tokens whose keys/values also include the text tokens (A.1)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, backend: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.backend = num_heads, dim // num_heads, backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)        # shared by audio and text tokens
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        B, N, D = x.shape
        H, d = self.num_heads, self.head_dim
        q = self.q_norm(self.q(x).view(B, N, H, d))
        # A.1: text tokens concatenated to the audio keys/values at every attention layer.
        k, v = self.kv(torch.cat([x, text], dim=1)).view(B, -1, 2, H, d).unbind(2)
        k = self.k_norm(k)
        if ctx.rope is not None:  # positions only for audio tokens; text keys stay position-free
            q = apply_rope(q, *ctx.rope)
            k = torch.cat([apply_rope(k[:, :N], *ctx.rope), k[:, N:]], dim=1)
        return self.proj(joint_attention(q, k, v, ctx, self.backend).reshape(B, N, D))


# ---------------------------------------------------------------------------------------------------------------
#                                   Feed-forward, DiT block, final layer
# ---------------------------------------------------------------------------------------------------------------

class FeedForward(nn.Module):
    """Llama-style SwiGLU (hidden = 2/3 * ratio * dim, rounded to 8) or DiT's GELU MLP."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, kind: str = "swiglu"):
        super().__init__()
        if kind not in ("swiglu", "gelu"):
            raise ValueError(f"unknown mlp kind {kind!r}: use 'swiglu' or 'gelu'")
        self.kind = kind
        if kind == "swiglu":
            hidden = int(math.ceil(2 * mlp_ratio * dim / 3 / 8) * 8)
            self.w_in = nn.Linear(dim, 2 * hidden)
        else:
            hidden = int(mlp_ratio * dim)
            self.w_in = nn.Linear(dim, hidden)
        self.w_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_in(x)
        if self.kind == "swiglu":
            a, b = h.chunk(2, dim=-1)
            return self.w_out(F.silu(a) * b)
        return self.w_out(F.gelu(h, approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm attention then pre-norm feed-forward, each with AdaLN-zero shift/scale/gate (A.1, DiT)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, mlp: str = "swiglu",
                 qk_norm: bool = True, backend: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_text = nn.LayerNorm(dim, eps=1e-6)   # per-layer normalisation of the shared text tokens
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, backend=backend)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_ratio, mlp)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh_a, sc_a), self.norm_text(ctx.text), ctx)
        x = x + g_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_m, sc_m))
        return x


class FinalLayer(nn.Module):
    """AdaLN + linear de-embedding to patch_size * out_channels per token (DiT)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))
