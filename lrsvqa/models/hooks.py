"""Attention readout by forward pre-hooks on decoder layers.

The hook recomputes, for the last prompt token only, what the layer's attention would
compute: input layernorm -> q/k projections -> q/k norms (if the layer has them) -> the
model's own rotary embedding (cos/sin as the layer receives them, so M-RoPE is included)
-> GQA repeat -> scaled dot product + mask -> softmax over all keys. It works whatever
attention implementation runs the model (SDPA, eager, flash). After the deepest requested
layer the hook raises a private exception, so the forward pass costs only that many layers.
Every hook is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes ``read_attention``."""


def _rotary_fn(attn: torch.nn.Module) -> Callable[..., Any]:
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None:  # pragma: no cover - every supported family defines it
        raise RuntimeError(f"{type(attn).__name__}: no apply_rotary_pos_emb in its module")
    return fn


def layer_attention(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    kwargs: dict[str, Any],
    prefix_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of the last position over all keys: (batch, heads, L), float32.

    ``prefix_keys`` (batch, kv_heads, P, head_dim), already rotated, are the keys of
    positions that precede ``hidden`` (a KV cache): they join the keys computed here.
    """
    attn: Any = layer.self_attn
    x = layer.input_layernorm(hidden)  # type: ignore[operator]
    b, length, _ = x.shape
    head_dim = attn.head_dim
    q = attn.q_proj(x[:, -1:]).view(b, 1, -1, head_dim)
    k = attn.k_proj(x).view(b, length, -1, head_dim)
    if getattr(attn, "q_norm", None) is not None:
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2)
    cos, sin = kwargs["position_embeddings"]
    rotate = _rotary_fn(attn)
    q, _ = rotate(q, q, cos[:, -1:], sin[:, -1:])
    k, _ = rotate(k, k, cos, sin)
    if prefix_keys is not None:
        k = torch.cat([prefix_keys.to(k.dtype), k], dim=2)
        length = k.shape[2]
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling  # (b, H, 1, L)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.ndim == 4:
        row = mask[:, :, -1:, :length]
        scores = (
            scores.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else scores + row
        )
    return torch.softmax(scores.float(), dim=-1)[:, :, 0]


def read_attention(
    decoder_layers: Sequence[torch.nn.Module],
    layers: Sequence[int],
    run: Callable[[], Any],
    prefix_keys: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``run()`` with readout hooks on ``layers``; return (len(layers), heads, L) of batch 0.

    ``prefix_keys(layer)`` gives the cached keys of a prefix that ``run`` does not recompute.
    """
    wanted = sorted(set(layers))
    deepest = wanted[-1]
    found: dict[int, torch.Tensor] = {}

    def make_hook(idx: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            cached = prefix_keys(idx) if prefix_keys is not None else None
            found[idx] = layer_attention(module, hidden, kwargs, cached)[0]
            if idx == deepest:
                raise _StopForward

        return hook

    handles = []
    try:
        for idx in wanted:
            handles.append(
                decoder_layers[idx].register_forward_pre_hook(make_hook(idx), with_kwargs=True)
            )
        with contextlib.suppress(_StopForward), torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([found[i] for i in layers])


def run_until(decoder_layers: Sequence[torch.nn.Module], last: int, run: Callable[[], Any]) -> None:
    """Run ``run()`` but stop right after decoder layer ``last`` (e.g. to fill a KV cache)."""

    def stop(module: torch.nn.Module, args: Any, output: Any) -> None:
        raise _StopForward

    handle = decoder_layers[last].register_forward_hook(stop)
    try:
        with contextlib.suppress(_StopForward), torch.no_grad():
            run()
    finally:
        handle.remove()
