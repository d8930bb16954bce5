"""KV caches of a prompt's vision prefix, reused by focus passes for other questions."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch


@functools.cache
def _cache_keyword(lm_class: Any) -> str:
    """The KV-cache keyword of ``lm_class.forward``: ``cache`` in newer transformers 5
    releases, ``past_key_values`` before (looked up once per class)."""
    params = inspect.signature(lm_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(lm: Any, cache: Any) -> dict[str, Any]:
    lm_class: Any = type(lm)
    return {_cache_keyword(lm_class): cache}


@dataclass
class FocusPrefix:
    """KV cache of a prompt's vision prefix, reused by focus passes for other questions."""

    embeds: torch.Tensor  # (1, P, hidden)
    positions: torch.Tensor  # generation position ids [..., :P]
    cache: Any  # DynamicCache holding layers 0..deepest
    deepest: int

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])

    def matches(self, embeds: torch.Tensor, positions: torch.Tensor, deepest: int) -> bool:
        p = self.length
        return (
            self.deepest >= deepest
            and embeds.shape[1] > p
            and torch.equal(self.embeds, embeds[:, :p])
            and torch.equal(self.positions, positions[..., :p])
        )

    def trim(self) -> None:
        """Drop what a pass appended after the prefix."""
        for layer in self.cache.layers:
            if layer.is_initialized and layer.keys.shape[-2] > self.length:
                layer.crop(self.length - layer.keys.shape[-2])
