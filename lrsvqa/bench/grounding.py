"""Evidence grounding: how much of the ground-truth box the selected tiles cover.

For a question whose annotation has an ``hbox`` [x1, y1, x2, y2], coverage is
the area of the box inside the union of the selected finest-level tiles
divided by the box's area (native pixels; 0 when nothing was selected). A
question *hits* when coverage ≥ ``HIT_THRESHOLD``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lrsvqa.bench.records import NO_SIZE_BIN, SIZE_BINS

#: Coverage at or above which the evidence counts as a hit.
HIT_THRESHOLD = 0.5


def coverage(hbox: Sequence[float], boxes: Iterable[Sequence[float]]) -> float | None:
    """Share of ``hbox``'s area inside the union of ``boxes``; None for an empty hbox."""
    from shapely import box as make_box
    from shapely import union_all

    x1, y1, x2, y2 = (float(v) for v in hbox[:4])
    target = make_box(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
    if target.area <= 0:
        return None
    tiles = [make_box(*(float(v) for v in b[:4])) for b in boxes if len(b) >= 4]
    if not tiles:
        return 0.0
    covered = union_all(tiles).intersection(target).area
    return min(1.0, covered / target.area)


@dataclass(frozen=True)
class GroundingStats:
    """Coverage over a group of questions with a ground-truth box."""

    group: str
    n: int
    mean_coverage: float | None
    hits: int

    @property
    def hit_rate(self) -> float | None:
        """Share of questions with coverage ≥ ``HIT_THRESHOLD``."""
        return self.hits / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "group": self.group,
            "n": self.n,
            "mean_coverage": self.mean_coverage,
            "hits": self.hits,
            "hit_rate": self.hit_rate,
            "threshold": HIT_THRESHOLD,
        }


def _stats(group: str, values: Sequence[float]) -> GroundingStats:
    mean = sum(values) / len(values) if values else None
    return GroundingStats(group, len(values), mean, sum(v >= HIT_THRESHOLD for v in values))


def grounding_table(records: Iterable[dict[str, Any]]) -> list[GroundingStats]:
    """Coverage by size bin, then ``all``, over answer records with an ``hbox``.

    Each record needs ``hbox`` (or None) and ``boxes`` (the selected finest
    tiles); ``size_bin`` groups them (missing: ``none``).
    """
    by_bin: dict[str, list[float]] = defaultdict(list)
    overall: list[float] = []
    for record in records:
        hbox = record.get("hbox")
        if not hbox:
            continue
        value = coverage(hbox, record.get("boxes") or [])
        if value is None:
            continue
        by_bin[record.get("size_bin") or NO_SIZE_BIN].append(value)
        overall.append(value)
    order = [*SIZE_BINS, NO_SIZE_BIN]
    bins = sorted(by_bin, key=lambda b: (order.index(b) if b in order else len(order), b))
    return [*(_stats(b, by_bin[b]) for b in bins), _stats("all", overall)]
