"""The LLM sequence an adapter lays out: what each position holds, as named records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Slot(IntEnum):
    """What one position of the LLM sequence holds."""

    TEXT = 0
    VISION = 1  # a kept vision token (ranked, droppable)
    SEPARATOR = 2  # a newline token ending a row of a tile block


@dataclass(frozen=True)
class LayoutEntry:
    """One image position: a kept vision token, or the separator that ends a grid row.

    ``row``/``col`` are the cell in the group's whole-scene token grid (for a separator:
    the row it ends and the column of that row's last kept token).
    """

    kind: Slot
    row: int
    col: int
    segment: int | None = None  # index into the segments given to build_inputs (vision)
    index: int | None = None  # raster index inside that segment's image (vision)


@dataclass(frozen=True)
class Placed:
    """One position of the LLM sequence: text, or an entry of image block ``block``."""

    kind: Slot
    block: int | None = None
    entry: LayoutEntry | None = None


TEXT_POSITION = Placed(Slot.TEXT)  # every text position is the same record


@dataclass(frozen=True)
class ImageBlock:
    """One image placeholder's worth of sequence: vision tokens and separators in order."""

    entries: list[LayoutEntry]
    extent: tuple[int, int]  # (rows, cols) of the group's frame covered by its segments
