"""An LRU cache of encoded tiles, keyed by the image's bytes and shape, capped in bytes."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lrsvqa.models.base import VisionTokens

DEFAULT_CACHE_MB = 512
CACHE_ENV = "LRSVQA_TILE_CACHE_MB"  # override of the per-adapter cap; 0 disables caching


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int


def image_key(image: np.ndarray) -> str:
    """A digest of the pixels, shape and dtype: equal tiles give equal keys."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.shape}|{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def default_max_bytes() -> int:
    raw = os.environ.get(CACHE_ENV)
    if raw is None:
        return DEFAULT_CACHE_MB * 2**20
    try:
        return max(0, int(float(raw) * 2**20))
    except ValueError:
        from lrsvqa.errors import ConfigError

        raise ConfigError(f"{CACHE_ENV}={raw!r} is not a number of megabytes") from None


class TileCache:
    """Least-recently-used map from image key to ``VisionTokens``."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self._items: OrderedDict[str, tuple[VisionTokens, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> VisionTokens | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: str, tokens: VisionTokens) -> None:
        size = tokens.embeds.numel() * tokens.embeds.element_size()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = (tokens, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
        self.hits = self.misses = 0

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._items), self._bytes, self.max_bytes)
