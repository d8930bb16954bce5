"""Per-scene state reused across questions: the open scene, its pyramid, its stretch
statistics and the encoded tiles, within a memory cap."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrsvqa.errors import ConfigError
from lrsvqa.io.scene import Scene, is_remote, open_scene
from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig, Tile

if TYPE_CHECKING:
    from lrsvqa.models.base import Adapter, VisionTokens

CACHE_ENV = "LRSVQA_CACHE_MB"
DEFAULT_CACHE_MB = 2048


def cache_cap_bytes() -> int:
    raw = os.environ.get(CACHE_ENV, "").strip()
    if not raw:
        return DEFAULT_CACHE_MB * 2**20
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise ConfigError(f"{CACHE_ENV}={raw!r} is not a number of megabytes") from None


class Stopwatch:
    """Accumulates wall seconds per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)


@dataclass(frozen=True)
class EncodedTiles:
    """Tokens of the tiles asked for, in order, and which of them were encoded just now."""

    tokens: list[VisionTokens]
    fresh: list[bool]  # True: read and run through the vision tower by this call


# Called after each batch with (tiles encoded so far, tiles to encode) of one call.
BatchDone = Callable[[int, int], None]


class SceneSession:
    """One scene opened for a model: pyramid, thumbnail tokens, encoded-tile cache.

    The only cache of encoded tiles: keyed by (level, row, col) of this scene's pyramid,
    capped by ``LRSVQA_CACHE_MB`` across the tiles of the session.
    """

    def __init__(
        self,
        scene: Scene,
        config: PyramidConfig,
        adapter: Adapter,
        cap_bytes: int,
        *,
        owns_scene: bool = True,
    ):
        self.scene = scene
        self.owns_scene = owns_scene
        self.pyramid = DynamicImagePyramid(scene, config=config)
        self.adapter = adapter
        self.cap_bytes = cap_bytes
        self._tiles: OrderedDict[tuple[int, int, int], VisionTokens] = OrderedDict()
        self._bytes = 0
        self._thumbnail: VisionTokens | None = None

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def has(self, tile: Tile) -> bool:
        """Whether ``tile``'s encoding is in the cache."""
        return tile.key in self._tiles

    def thumbnail(self, watch: Stopwatch) -> EncodedTiles:
        """The global thumbnail's tokens (encoded on first use)."""
        if self._thumbnail is not None:
            return EncodedTiles([self._thumbnail], [False])
        with watch.timing("read"):
            image = self.pyramid.thumbnail(self.pyramid.config.thumbnail_size, square=True)
        with watch.timing("encode"):
            self._thumbnail = self.adapter.encode([image])[0]
        return EncodedTiles([self._thumbnail], [True])

    def encode_tiles(
        self,
        tiles: Sequence[Tile],
        watch: Stopwatch,
        *,
        batch_size: int = 8,
        on_batch: BatchDone | None = None,
    ) -> EncodedTiles:
        """Read and encode ``tiles`` (cached ones come from memory), in order."""
        missing = [t for t in tiles if t.key not in self._tiles]
        fresh = {t.key for t in missing}
        if on_batch is not None:
            on_batch(0, len(missing))
        seen: dict[bytes, VisionTokens] = {}
        for i in range(0, len(missing), batch_size):
            batch = missing[i : i + batch_size]
            with watch.timing("read"):
                images = self.pyramid.read_tiles(batch)
            with watch.timing("encode"):
                encoded = self._encode_distinct(images, seen)
            for tile, tokens in zip(batch, encoded, strict=True):
                self._store(tile.key, tokens)
            if on_batch is not None:
                on_batch(i + len(batch), len(missing))
        out: list[VisionTokens] = []
        for tile in tiles:
            cached = self._tiles.get(tile.key)
            if cached is None:  # evicted by this very call (cap smaller than one question)
                cached = self._pooled(self.adapter.encode(self.pyramid.read_tiles([tile])))[0]
            else:
                self._tiles.move_to_end(tile.key)
            out.append(cached)
        return EncodedTiles(out, [t.key in fresh for t in tiles])

    def _encode_distinct(
        self, images: list[np.ndarray], seen: dict[bytes, VisionTokens]
    ) -> list[VisionTokens]:
        """Tokens of ``images``; pixel-identical images (the empty tiles of a sparse scene,
        a nodata collar) go through the vision tower once per call and share their tokens.
        They still count as encoded in the cost report, as on a model run without this."""
        keys = [_pixel_key(im) for im in images]
        todo: dict[bytes, np.ndarray] = {}
        for key, image in zip(keys, images, strict=True):
            if key not in seen and key not in todo:
                todo[key] = image
        if todo:
            fresh = self._pooled(self.adapter.encode(list(todo.values())))
            seen.update(zip(todo, fresh, strict=True))
        return [seen[key] for key in keys]

    def _pooled(self, tokens: list[VisionTokens]) -> list[VisionTokens]:
        """Tile tokens pooled ``tile_pool`` x ``tile_pool`` (the release's 2 x 2 for LLaVA)."""
        pool = self.pyramid.config.tile_pool
        if pool == 1:
            return tokens
        from lrsvqa.models.release_format import pool_tokens

        return [pool_tokens(t, pool) for t in tokens]

    def _store(self, key: tuple[int, int, int], tokens: VisionTokens) -> None:
        size = tokens.embeds.element_size() * tokens.embeds.nelement()
        self._tiles[key] = tokens
        self._bytes += size
        while self._bytes > self.cap_bytes and len(self._tiles) > 1:
            _, old = self._tiles.popitem(last=False)
            self._bytes -= old.embeds.element_size() * old.embeds.nelement()

    def close(self) -> None:
        self._tiles.clear()
        self._bytes = 0
        if self.owns_scene:
            self.scene.close()


def scene_key(path: str, bands: tuple[int, ...] | None) -> tuple[Any, ...]:
    """Identity of a scene file: a changed file is a new scene."""
    if is_remote(path):
        return (path, bands)
    p = Path(path)
    try:
        stat = p.stat()
    except OSError:
        return (path, bands)
    return (str(p.resolve()), stat.st_mtime_ns, stat.st_size, bands)


class SessionCache:
    """The most recently used scene sessions (a few scenes open at once)."""

    def __init__(self, max_scenes: int = 2, *, progress: bool = False):
        self.max_scenes = max_scenes
        self.progress = progress  # a bar while a big scene is converted on first use
        self._sessions: OrderedDict[tuple[Any, ...], SceneSession] = OrderedDict()
        self._lock = threading.RLock()  # the next scene may be opened by a prefetch thread

    def get(
        self,
        scene: str | os.PathLike[str] | Scene,
        bands: tuple[int, ...] | None,
        config: PyramidConfig,
        adapter: Adapter,
    ) -> SceneSession:
        if isinstance(scene, Scene):
            key: tuple[Any, ...] = ("scene-object", id(scene), config)
        else:
            key = (*scene_key(os.fspath(scene), bands), config)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
        owned = not isinstance(scene, Scene)
        # Opened outside the lock: a prefetch thread converting a big scene must not
        # hold up questions about the current one. Big PNG/JPEG/overview-less scenes
        # are read from the conversion cache.
        opened = (
            open_scene(scene, bands=bands, cog_cache=True, progress=self.progress)
            if not isinstance(scene, Scene)
            else scene
        )
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:  # another thread opened it meanwhile
                if owned:
                    opened.close()
                self._sessions.move_to_end(key)
                return session
            session = SceneSession(opened, config, adapter, cache_cap_bytes(), owns_scene=owned)
            self._sessions[key] = session
            while len(self._sessions) > self.max_scenes:
                _, old = self._sessions.popitem(last=False)
                old.close()
            return session

    def clear(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def _pixel_key(image: np.ndarray) -> bytes:
    """A digest of an image's shape, dtype and pixels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()
