"""The one attention primitive: what a stock decoder layer's self-attention would compute.

A layer's own input norm → q/k projections → q/k norms (if the layer has them) → the
model's rotary embedding (cos/sin exactly as the layer receives them, so M-RoPE is
included) → GQA repeat → scaled dot product + mask → softmax over the keys. Recomputed
from the weights, so it works whatever attention implementation runs the model (SDPA,
eager, flash). Used by the focus readout (``hooks``), PyramidDrop and FastV, so all of
them rank tokens by the same definition.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

_CHUNK = 512  # query rows per block in ``received_attention``: heads x 512 x L floats


def _rotary_fn(attn: torch.nn.Module) -> Callable[..., Any]:
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:  # pragma: no cover - every supported family defines it
        raise RuntimeError(f"{type(attn).__name__}: no apply_rotary_pos_emb in its module")
    return fn


def rotated_qk(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    *,
    last_only: bool,
    prefix_keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (batch, heads, Q, head_dim) and keys (batch, heads, K, head_dim) of ``layer``.

    ``last_only``: the query of the last position only (else every position). ``prefix_keys``
    (batch, kv_heads, P, head_dim), already rotated, are cached keys of earlier positions;
    they go before the keys computed here. Keys are repeated to the query heads (GQA).
    """
    attn: Any = layer.self_attn
    x = layer.input_layernorm(hidden)  # type: ignore[operator]
    b, length, _ = x.shape
    head_dim = attn.head_dim
    q_in = x[:, -1:] if last_only else x
    q = attn.q_proj(q_in).view(b, q_in.shape[1], -1, head_dim)
    k = attn.k_proj(x).view(b, length, -1, head_dim)
    if getattr(attn, "q_norm", None) is not None:
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2)
    cos, sin = position_embeddings
    rotate = _rotary_fn(attn)
    if last_only:
        q, _ = rotate(q, q, cos[:, -1:], sin[:, -1:])
    else:
        q, _ = rotate(q, q, cos, sin)
    k, _ = rotate(k, k, cos, sin)
    if prefix_keys is not None:
        k = torch.cat([prefix_keys.to(k.dtype), k], dim=2)
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
    return q, k


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Add a 4-D additive mask, or apply a boolean one (True = may attend)."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


def layer_attention(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    kwargs: dict[str, Any],
    prefix_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of the last position over all keys: (batch, heads, L), float32.

    ``kwargs`` are the keyword arguments the decoder layer receives (``position_embeddings``
    and, if any, a 4-D ``attention_mask``); ``prefix_keys`` as in ``rotated_qk``.
    """
    attn: Any = layer.self_attn
    q, k = rotated_qk(
        layer, hidden, kwargs["position_embeddings"], last_only=True, prefix_keys=prefix_keys
    )
    length = k.shape[2]
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling  # (b, H, 1, L)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim == 4:
        scores = _masked(scores, mask[:, :, -1:, :length])
    return torch.softmax(scores.float(), dim=-1)[:, :, 0]


def received_attention(
    layer: torch.nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """Attention each row receives in ``layer``, averaged over queries and heads: (rows,).

    FastV's definition: causal, so a query adds zero for the keys after it. Batch 0 only.
    """
    attn: Any = layer.self_attn
    cos, sin = kwargs["position_embeddings"]
    q, k = rotated_qk(layer, hidden[:1], (cos[:1], sin[:1]), last_only=False)
    n = k.shape[2]
    mask = kwargs.get("attention_mask")
    total = torch.zeros(q.shape[1], n, dtype=torch.float32, device=q.device)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        if isinstance(mask, torch.Tensor):
            keys = n
            scores = torch.matmul(q[:, :, start:stop], k.transpose(2, 3)).float() * attn.scaling
            block = mask[:1, :, start:stop, :n]
            scores = _masked(scores, block if block.dtype == torch.bool else block.float())
        else:  # SDPA's is_causal path: no mask tensor; keys after the chunk get nothing
            keys = stop
            scores = torch.matmul(q[:, :, start:stop], k[:, :, :stop].transpose(2, 3)).float()
            scores *= attn.scaling
            future = torch.ones(stop - start, stop, dtype=torch.bool, device=q.device)
            scores.masked_fill_(future.triu_(start + 1), float("-inf"))
        total[:, :keys] += torch.softmax(scores, dim=-1)[0].sum(dim=1)
    return total.mean(0) / n


def last_token_attention(
    layer: torch.nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """Attention of the last row to every row in ``layer`` (mean over heads): (rows,)."""
    return layer_attention(layer, hidden, kwargs)[0].mean(0)
