"""Prepare the next scene while the model answers about the current one.

A benchmark asks its questions scene by scene. While the model works on scene *i*
(GPU-bound), one background thread opens scene *i + 1* (converting it into the
COG cache on first use), computes its stretch statistics and reads its thumbnail
and level-0 tiles, so the model does not wait for the disk when it gets there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class ScenePrefetcher:
    """Calls ``answerer.prefetch(scene)`` one scene ahead; a no-op if it has none."""

    def __init__(self, answerer: Any, scenes: Sequence[str]):
        self._prefetch = getattr(answerer, "prefetch", None)
        self._order: list[str] = list(dict.fromkeys(scenes))  # distinct, in run order
        self._next = {a: b for a, b in zip(self._order, self._order[1:], strict=False)}
        self._futures: dict[str, Future[None]] = {}
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="lrsvqa-prefetch")
            if callable(self._prefetch) and len(self._order) > 1
            else None
        )

    def before(self, scene: str) -> None:
        """Call before asking about ``scene``: waits for its prefetch, starts the next one."""
        if self._pool is None:
            return
        future = self._futures.pop(scene, None)
        if future is not None:
            try:
                future.result()
            except Exception as exc:  # the ask itself raises it again, and logs it
                log.debug("prefetch of %s failed: %s", scene, exc)
        following = self._next.get(scene)
        if following is not None and following not in self._futures:
            self._futures[following] = self._pool.submit(self._run, following)

    def _run(self, scene: str) -> None:
        assert self._prefetch is not None
        self._prefetch(scene)

    @property
    def pending(self) -> list[str]:
        return list(self._futures)

    def close(self) -> None:
        if self._pool is not None:
            for future in self._futures.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._futures.clear()

    def __enter__(self) -> ScenePrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
