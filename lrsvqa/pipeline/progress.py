"""Progress of one ``Pipeline.ask``: which stage it is in, for bars, logs and servers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    stage: str  # "pyramid" | "focus" | "encode" | "generate" | "done"
    level: int | None = None
    levels: int | None = None
    done: int | None = None
    total: int | None = None


ProgressCallback = Callable[[Progress], None]
