"""Progress of one ``Pipeline.ask``: a callback gets a ``Progress`` value at each stage.

Stages, in order: ``pyramid`` (the scene and its pyramid are open, the thumbnail is being
encoded), then per level visited ``focus`` (the level's tiles are being chosen and scored)
with ``encode`` updates as its tiles are read and encoded, then ``generate``, then ``done``.
A server streams these to its clients; the CLI draws them as a progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

STAGES = ("pyramid", "focus", "encode", "generate", "done")


@dataclass(frozen=True)
class Progress:
    stage: str  # "pyramid" | "focus" | "encode" | "generate" | "done"
    level: int | None = None  # pyramid level being worked on
    levels: int | None = None  # number of levels that will be visited
    done: int | None = None  # tiles encoded so far in this level (encode stage)
    total: int | None = None  # tiles to encode in this level


ProgressCallback = Callable[[Progress], None]


class TileBar:
    """A ``ProgressCallback`` that draws a tqdm bar while a level's tiles are encoded.

    The bar appears only for levels with more than ``min_tiles`` tiles to encode and is
    erased (not left half-drawn) when the level ends, at ``done`` and on ``close``, so an
    error message printed afterwards starts on a clean line.
    """

    def __init__(self, *, file: IO[str] | None = None, min_tiles: int = 8):
        self.file = file
        self.min_tiles = min_tiles
        self._bar: Any = None
        self._level: int | None = None

    def __call__(self, progress: Progress) -> None:
        if progress.stage != "encode":
            if progress.stage in ("focus", "generate", "done"):
                self.close()
            return
        if progress.level != self._level or self._bar is None:
            self.close()
            self._level = progress.level
            total = progress.total or 0
            if total <= self.min_tiles:
                return
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=f"encoding level {progress.level} tiles",
                unit="tile",
                leave=False,
                file=self.file if self.file is not None else sys.stderr,
            )
        if self._bar is not None and progress.done is not None:
            self._bar.update(progress.done - self._bar.n)

    def close(self) -> None:
        """Erase and close the bar (safe to call any time)."""
        bar, self._bar = self._bar, None
        self._level = None
        if bar is not None:
            bar.clear()
            bar.close()

    def __enter__(self) -> TileBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
