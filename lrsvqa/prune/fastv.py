"""FastV (Chen et al., 2024, "An Image is Worth 1/2 Tokens After Layer 2"), the baseline.

The first ``K`` decoder layers see every token; the image tokens are ranked by the attention
they receive in layer ``K`` (counting from 1, i.e. index ``K - 1``), and the ``R`` share
with the least is dropped for layers ``K..L-1``. "Attention received" is, by default, the
paper's definition: the attention weight each key gets, averaged over all query positions
(causal: a query adds zero for keys after it) and over heads. ``query="last"`` ranks by the
last token's attention only, as FastV's released code does. The dropping itself is
PyramidDrop's one-stage machinery (``pyramid_drop.RowDropper``).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from lrsvqa.prune.pyramid_drop import Stage, keep_count, last_token_attention

_CHUNK = 512  # query rows per block: bounds memory at heads x 512 x L floats


def received_attention(
    layer: torch.nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """Attention each row receives in ``layer``, averaged over queries and heads: (rows,).

    Recomputed from the layer's own q/k (input norm, projections, q/k norms, rotary embedding
    as the layer receives it, GQA), so it works under SDPA.
    """
    attn: Any = layer.self_attn
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    x = layer.input_layernorm(hidden[:1])  # type: ignore[operator]
    n = x.shape[1]
    head_dim = attn.head_dim
    q = attn.q_proj(x).view(1, n, -1, head_dim)
    k = attn.k_proj(x).view(1, n, -1, head_dim)
    if getattr(attn, "q_norm", None) is not None:
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    cos, sin = kwargs["position_embeddings"]
    q, k = rotate(q.transpose(1, 2), k.transpose(1, 2), cos[:1], sin[:1])
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
    mask = kwargs.get("attention_mask")
    total = torch.zeros(q.shape[1], n, dtype=torch.float32, device=x.device)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        if isinstance(mask, torch.Tensor):
            keys = n
            scores = torch.matmul(q[:, :, start:stop], k.transpose(2, 3)).float() * attn.scaling
            block = mask[:1, :, start:stop, :n]
            if block.dtype == torch.bool:
                scores.masked_fill_(~block, float("-inf"))
            else:
                scores += block.float()
        else:  # SDPA's is_causal path: no mask tensor; keys after the chunk get nothing
            keys = stop
            scores = torch.matmul(q[:, :, start:stop], k[:, :, :stop].transpose(2, 3)).float()
            scores *= attn.scaling
            future = torch.ones(stop - start, stop, dtype=torch.bool, device=x.device)
            scores.masked_fill_(future.triu_(start + 1), float("-inf"))
        total[:, :keys] += torch.softmax(scores, dim=-1)[0].sum(dim=1)
    return total.mean(0) / n


def fastv_stages(k: int, ratio: float, query: str = "all") -> list[Stage]:
    """One stage: score in layer index ``k - 1``, drop ``ratio`` of image rows from ``k`` on."""
    score = received_attention if query == "all" else last_token_attention
    return [Stage(k - 1, k, 1.0 - ratio, score)]


__all__ = ["fastv_stages", "keep_count", "received_attention"]
