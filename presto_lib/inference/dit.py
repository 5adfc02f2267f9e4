"""The fast denoiser: the same EDM-preconditioned DiT (eq. 4, A.1), rearranged for inference only.

What differs from `EDMPrecond(DiT)` / `LayerDropModel` (the reference), and why the output is the same:
- the text tokens' keys/values (text_proj -> norm_text -> kv -> k_norm, every block) do not depend on x or sigma,
  so they are computed once per generation instead of once per step (a Linear on [x; text] = [Linear x; Linear
  text], and RMSNorm acts per key vector); the BPM embedding is computed once too;
- every noise level of the schedule is a Python float known before the loop, so c_in, c_skip, c_out, c_noise
  (EDM Table 1) and the layer-dropping plan (sec. 3.3: which blocks run, the budget fraction) are decided on the
  host with no device synchronisation (the reference reads sigma back from the device every call);
- the key-padding mask is known on the host (captions are tokenised there), so the attention plan (SDPA bool mask,
  or flash-attn varlen packing indices) is built once, outside the loop;
- weights may be cast to bf16/fp16 (a copy, the reference is untouched); the sampler state stays fp32, and eq. 4's
  skip connection is evaluated in fp32, as the reference does.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from presto_lib.diffusion.edm import EDMPrecond
from presto_lib.distill.presto_l import LayerDropModel
from presto_lib.models.dit import DiT
from presto_lib.models.layers import HAS_FLASH_ATTN, _flash_varlen_kvpacked, apply_rope, modulate, rope_tables

__all__ = ["DTYPES", "resolve_dtype", "Prepared", "FastDenoiser"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" = bf16 on CUDA, fp32 on CPU; else one of DTYPES."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto or one of {', '.join(DTYPES)}")
    return DTYPES[name]


# ---- per-generation state ----------------------------------------------------------------------

@dataclass
class Prepared:
    """What stays fixed over the sampling loop of one batch of conditions (text K/V per block, BPM, attention)."""

    text_k: list[Tensor]          # per block [B, L, H, d] (k_norm applied)
    text_v: list[Tensor]          # per block [B, L, H, d]
    c_bpm: Tensor                 # [B, hidden] BPM embedding (learned null where bpm <= 0)
    attn_mask: Optional[Tensor]   # SDPA: [B, 1, 1, N + L] bool, or None when no key is masked
    flash: Optional[tuple]        # flash-attn varlen: (gather index, cu_q, cu_k, max_k)
    rope: Optional[tuple[Tensor, Tensor]]
    batch: int


class FastDenoiser(nn.Module):
    """x0 = mu(x, sigma, cond) of an EDMPrecond(DiT) or a LayerDropModel, with sigma a host float (see module doc)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, attention: str = "auto",
                 copy_weights: bool = True):
        super().__init__()
        m = getattr(model, "module", model)
        self.schedule = None
        if isinstance(m, LayerDropModel):
            net = m.net
            self.schedule, self.sigma_data = m.schedule, m.precond.sigma_data
            dit, budget_emb, out_adaln = net.dit, net.budget_emb, net.out_adaln
        elif isinstance(m, EDMPrecond) and isinstance(m.net, DiT):
            dit, budget_emb, out_adaln, self.sigma_data = m.net, None, None, m.sigma_data
        else:
            raise ValueError(f"expected an EDMPrecond(DiT) or a LayerDropModel, got {type(m).__name__}")
        if attention not in ("auto", "sdpa", "flash"):
            raise ValueError(f"unknown attention {attention!r}: use auto, sdpa or flash")
        parts = nn.ModuleDict({"dit": dit, **({"budget_emb": budget_emb} if budget_emb is not None else {}),
                               **({"out_adaln": out_adaln} if out_adaln is not None else {})})
        if copy_weights:
            parts = copy.deepcopy(parts)
        self.parts = parts.to(dtype).eval().requires_grad_(False)
        self.dit: DiT = self.parts["dit"]
        self.dtype, self.attention = dtype, attention

    # ---- host-side plans ----

    @property
    def depth(self) -> int:
        return self.dit.depth

    def plan(self, sigma: float, blocks: Optional[tuple[int, ...]] = None) -> tuple[tuple[int, ...], float]:
        """(blocks run, dropped fraction) at noise level sigma: the Presto-L schedule's budget (Fig. 3), or all."""
        if self.schedule is None:
            return (tuple(range(self.depth)) if blocks is None else tuple(int(i) for i in blocks)), 0.0
        n = int(self.schedule.n_drop(float(sigma))[0])
        return tuple(self.schedule.blocks(n)), n / self.depth

    def use_flash(self, device: torch.device) -> bool:
        """flash-attn varlen when installed, on CUDA in half precision (as `joint_attention` decides)."""
        hd = self.dit.hidden_size // self.dit.cfg.num_heads
        ok = (HAS_FLASH_ATTN and device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)
              and hd % 8 == 0 and hd <= 256)
        if self.attention == "flash" and not ok:
            raise ValueError("attention='flash' needs flash-attn, CUDA, bf16/fp16 weights and head_dim % 8 == 0")
        return ok and self.attention != "sdpa"

    # ---- once per generation ----

    def attention_plan(self, host_mask: Tensor, num_tokens: int) -> tuple[Optional[Tensor], Optional[tuple]]:
        """(SDPA bool mask [B, 1, 1, N + L] or None, flash-attn varlen packing) from the text mask on the host."""
        dev = self.dit.x_embedder.weight.device
        hm = host_mask.cpu().bool()
        B = hm.shape[0]
        key_mask = torch.cat([torch.ones(B, num_tokens, dtype=torch.bool), hm], 1)   # audio keys always present
        if self.use_flash(dev):
            lens = key_mask.sum(1, dtype=torch.int32)
            idx = key_mask.reshape(-1).nonzero().squeeze(1)
            cu_k = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
            cu_q = torch.arange(0, (B + 1) * num_tokens, num_tokens, dtype=torch.int32)
            return None, (idx.to(dev), cu_q.to(dev), cu_k.to(dev), int(lens.max()))
        if bool(hm.all()):
            return None, None
        return key_mask.to(dev)[:, None, None, :], None

    @torch.no_grad()
    def prepare(self, text: Tensor, bpm: Tensor, plan: tuple[Optional[Tensor], Optional[tuple]],
                num_tokens: int) -> Prepared:
        """Text K/V of every block, BPM embedding and the attention plan for conditions [B, L, D] / [B]."""
        dit, dt = self.dit, self.dtype
        B, L, _ = text.shape
        dev = dit.x_embedder.weight.device
        H = dit.cfg.num_heads
        d = dit.hidden_size // H
        text_h = dit.text_proj(text.to(dev, dt))
        ks, vs = [], []
        for blk in dit.blocks:     # Attention.forward's text half: kv(norm_text(text)), then k_norm
            k, v = blk.attn.kv(blk.norm_text(text_h)).view(B, L, 2, H, d).unbind(2)
            ks.append(blk.attn.k_norm(k))
            vs.append(v)
        bpm = bpm.to(dev).float()
        bpm_emb = dit.bpm_embedder(bpm.clamp(min=0))
        c_bpm = torch.where((bpm > 0)[:, None], bpm_emb, dit.null_bpm.to(bpm_emb.dtype)[None])
        rope = None
        if dit.cfg.pos_emb == "rope":
            rope = rope_tables(num_tokens, d, dit.cfg.rope_base, device=dev)
        return Prepared(ks, vs, c_bpm, plan[0], plan[1], rope, B)

    # ---- every step ----

    def attend(self, q: Tensor, k: Tensor, v: Tensor, p: Prepared) -> Tensor:
        """Joint audio/text attention [B, N, H, d] with the prepared plan (`joint_attention`'s maths)."""
        B, N, H, d = q.shape
        if p.flash is not None:
            idx, cu_q, cu_k, max_k = p.flash
            kv = torch.stack([k, v], dim=2).reshape(-1, 2, H, d).index_select(0, idx)
            return _flash_varlen_kvpacked(q.reshape(B * N, H, d), kv, cu_q, cu_k, N, max_k).view(B, N, H, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=p.attn_mask)
        return out.transpose(1, 2)

    def block(self, i: int, x: Tensor, c: Tensor, p: Prepared) -> Tensor:
        """DiTBlock.forward of block i with the cached text keys/values (A.1)."""
        return self.block_fn(self.dit.blocks[i], x, c, p.text_k[i], p.text_v[i], p)

    def compile_blocks(self, mode: str = "default") -> None:
        """Regional torch.compile: one compiled block function shared by every block (and plan) of a batch size."""
        self.block_fn = torch.compile(self.block_fn, mode=mode, dynamic=False)

    def block_fn(self, blk: nn.Module, x: Tensor, c: Tensor, text_k: Tensor, text_v: Tensor, p: Prepared) -> Tensor:
        """One DiTBlock (AdaLN-zero attention + feed-forward) given its text keys/values."""
        a = blk.attn
        B, N, D = x.shape
        H, d = a.num_heads, a.head_dim
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = blk.adaLN_modulation(c).chunk(6, dim=-1)
        xm = modulate(blk.norm1(x), sh_a, sc_a)
        q = a.q_norm(a.q(xm).view(B, N, H, d))
        k, v = a.kv(xm).view(B, N, 2, H, d).unbind(2)
        k = a.k_norm(k)
        if p.rope is not None:
            q, k = apply_rope(q, *p.rope), apply_rope(k, *p.rope)
        k, v = torch.cat([k, text_k], 1), torch.cat([v, text_v], 1)
        x = x + g_a.unsqueeze(1) * a.proj(self.attend(q, k, v, p).reshape(B, N, D))
        return x + g_m.unsqueeze(1) * blk.mlp(modulate(blk.norm2(x), sh_m, sc_m))

    def net(self, x_in: Tensor, c_noise: Tensor, frac: Optional[Tensor], blocks: tuple[int, ...],
            p: Prepared) -> Tensor:
        """F_theta(c_in x, c_noise [B]) (DiT, or LayerDropNet with budget fraction [B]) -> [B, C_out, T].

        Noise level and budget come in as tensors, so a compiled `net` specialises only on the block tuple.
        """
        dit = self.dit
        h = dit.embed_inputs(x_in)
        c = dit.noise_embedder(c_noise) + p.c_bpm
        if frac is not None:
            c = c + self.parts["budget_emb"](frac)
        for i in blocks:
            h = self.block(i, h, c, p)
        if frac is not None:
            h = self.parts["out_adaln"](h, frac)
        return dit.unembed(h, c)

    def forward(self, x: Tensor, sigma: float, p: Prepared, blocks: Optional[tuple[int, ...]] = None,
                net=None) -> Tensor:
        """x0 (eq. 4) in fp32 at the host-known noise level sigma; `net` may be a compiled `self.net`."""
        s, sd = float(sigma), self.sigma_data
        run, frac = self.plan(s, blocks)
        c_in, c_skip = 1.0 / math.sqrt(s * s + sd * sd), sd * sd / (s * s + sd * sd)
        c_out = s * sd / math.sqrt(s * s + sd * sd)
        B, dev = x.shape[0], x.device
        fr = torch.full((B,), frac, device=dev) if "budget_emb" in self.parts else None
        f = (net or self.net)(x * c_in, torch.full((B,), math.log(s) / 4, device=dev), fr, run, p)
        return c_skip * x.float() + c_out * f.float()
