"""Mutual Transformer (mTrans, paper Sec. 2.2, Eq. 4): fuses a T1 feature stream with a QSM stream.

For two streams f1 (T1, C1 channels), f2 (QSM, C2 channels), each (B, C_i, *S), with N = prod(S)
spatial tokens and per-stream 1x1x1 projections Q_i, K_i, V_i (channel-first, C_i x N):

    SA_i = softmax(Q_i^T K_i / sqrt(C_i)) V_i^T        (token self-attention, N x N weights)
    MA   = tanh(N^-0.5 Q_1 Q_2^T)                      (C1 x C2, channels of stream 1 x channels of stream 2)
    out  = cat[SA_1, MA V_2, SA_2, MA^T V_1]           (2 C1 + 2 C2 channels)

MA V_2 carries QSM values into the T1 stream's channel order, MA^T V_1 the reverse; nothing in Eq. 4
needs the streams equally wide (the paper's are, and so are MQSMNet's).
The N^-0.5 scale and tanh follow the authors' reference code (the paper writes MA = Q_1 Q_2^T). The
fused channels are projected back to C1 + C2 by a 1x1x1 conv and added to the input (a residual
connection; the reference instead widened the network to 4C), so the U-Net width is unchanged and the
block starts close to an identity map. Self-attention goes through
``torch.nn.functional.scaled_dot_product_attention`` so GPU kernels never materialize the N x N map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_MODES = ("mtrans", "sa")


class MutualTransformer(nn.Module):
    """mTrans fusion of a T1 and a QSM stream; ``attention='sa'`` is the U-Net+SA ablation.

    Args:
        t1_channels: C1, channels of the T1 stream.
        qsm_channels: C2, channels of the QSM stream (default C1, the paper's equal streams).
        attention: 'mtrans' (cat[SA_1, MA V_2, SA_2, MA^T V_1]) or 'sa' (cat[SA_1, SA_2] only).

    Attributes:
        store_attention: when True, each forward stores the mutual attention MA, detached, shape
            (B, C1, C2), in ``last_mutual_attention`` (for the paper's Fig. 4). Stays None for 'sa'.

    Raises:
        ValueError: unknown attention mode or a stream narrower than 1 channel.
    """

    def __init__(self, t1_channels: int, qsm_channels: int | None = None, attention: str = "mtrans") -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        widths = (int(t1_channels), int(t1_channels if qsm_channels is None else qsm_channels))
        if min(widths) < 1:
            raise ValueError(f"each stream needs >= 1 channel, got {widths}")
        self.stream_channels = widths
        self.attention = attention
        self.to_qkv = nn.ModuleList([nn.Conv3d(c, 3 * c, kernel_size=1) for c in widths])
        n_fused = 2 * sum(widths) if attention == "mtrans" else sum(widths)
        self.proj = nn.Conv3d(n_fused, sum(widths), kernel_size=1)
        self.store_attention = False
        self.last_mutual_attention: torch.Tensor | None = None

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """f1 (T1 stream, (B, C1, *S)), f2 (QSM stream, (B, C2, *S)) -> cat[f1, f2] + fused, (B, C1 + C2, *S)."""
        c1, c2 = self.stream_channels
        if (f1.ndim != 5 or f1.shape[1] != c1 or f2.ndim != 5 or f2.shape[1] != c2
                or f1.shape[0] != f2.shape[0] or f1.shape[2:] != f2.shape[2:]):
            raise ValueError(f"f1 and f2 must be (B, {c1}, X, Y, Z) and (B, {c2}, X, Y, Z), "
                             f"got {tuple(f1.shape)} and {tuple(f2.shape)}")
        b, _, *spatial = f1.shape
        # token-major (B, N, 3C), contiguous: SDPA's fused CPU/GPU kernels need a unit last-dim stride
        q1, k1, v1 = self.to_qkv[0](f1).flatten(2).transpose(1, 2).contiguous().chunk(3, dim=-1)
        q2, k2, v2 = self.to_qkv[1](f2).flatten(2).transpose(1, 2).contiguous().chunk(3, dim=-1)
        parts = [self._self_attention(q1, k1, v1)]
        if self.attention == "mtrans":
            n_tokens = q1.shape[1]
            mutual = torch.tanh(torch.matmul(q1.transpose(1, 2), q2) * n_tokens ** -0.5)  # (B, C1, C2)
            if self.store_attention:
                self.last_mutual_attention = mutual.detach()
            # token-major forms of MA V_2 and MA^T V_1
            parts += [torch.matmul(v2, mutual.transpose(1, 2)), self._self_attention(q2, k2, v2),
                      torch.matmul(v1, mutual)]
        else:
            parts.append(self._self_attention(q2, k2, v2))
        fused = torch.cat(parts, dim=-1).transpose(1, 2).reshape(b, -1, *spatial)
        return torch.cat([f1, f2], dim=1) + self.proj(fused)

    @staticmethod
    def _self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Single-head attention over tokens, (B, N, C) each -> (B, N, C), scale 1/sqrt(C)."""
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)

    def compute_conv_feature_map_size(self, input_size: tuple[int, ...]) -> int:
        """Elements of the block's intermediate maps for one sample (planner VRAM estimate).

        Counts the Q/K/V maps (3 C1 + 3 C2), the fused maps, the projection and the residual sum
        (C1 + C2 each) per voxel, plus one N x N attention matrix per stream: what SDPA's math backend
        materializes. The fused kernels SDPA picks when they apply (flash on CPU, flash or
        memory-efficient on CUDA) keep O(N) memory, so that term is a conservative upper bound.
        """
        n_tokens = 1
        for s in input_size:
            n_tokens *= int(s)
        both = sum(self.stream_channels)
        per_voxel = 3 * both + self.proj.in_channels + both + both
        return per_voxel * n_tokens + 2 * n_tokens * n_tokens
