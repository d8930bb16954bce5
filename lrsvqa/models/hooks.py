"""Attention readout by forward pre-hooks on decoder layers.

The hook recomputes, for the last prompt token only, what the layer's attention would
compute (``models.attention.layer_attention``, the one attention primitive). After the
deepest requested layer the hook raises a private exception, so the forward pass costs
only that many layers. Every hook is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lrsvqa.models.attention import layer_attention


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes ``read_attention``."""


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
