"""What one ``ask`` did, stage by stage, and the cost report built from it in one place.

Each stage hands its own record to the trace: the session says which tiles it encoded and
which came from its cache (``EncodedTiles``), each focus pass says what it ran
(``ScoreResult``), the LLM stage gives its inputs and per-layer token counts. Nothing is
read back from shared, growing lists on the scorer or side channels on the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrsvqa.pipeline.cost import (
    CostReport,
    focus_pass_flops,
    paper_prefill_flops,
    peak_rss_mb,
    prefill_flops,
)
from lrsvqa.pipeline.progress import Progress, ProgressCallback
from lrsvqa.pipeline.session import EncodedTiles, Stopwatch

if TYPE_CHECKING:
    from lrsvqa.focus.scoring import ScoreResult
    from lrsvqa.models.base import Capabilities, Generation, PreparedInputs


@dataclass(frozen=True)
class TileEncoding:
    """One tile the focus looked at (the thumbnail included)."""

    level: str  # "thumbnail" or the pyramid level
    tokens: int
    fresh: bool  # the vision tower ran for it in this ask (else it came from the cache)


class Trace:
    """Timings, encodings and focus passes of one ``ask``; emits progress as it goes."""

    def __init__(self, progress: ProgressCallback | None = None, levels: int | None = None):
        self.watch = Stopwatch()
        self.started = time.perf_counter()
        self.progress = progress
        self.levels = levels  # levels the focus will visit (known once the pyramid is open)
        self.encodings: list[TileEncoding] = []
        self.passes: list[ScoreResult] = []

    def emit(self, stage: str, **fields: int | None) -> None:
        if self.progress is not None:
            self.progress(Progress(stage, levels=self.levels, **fields))

    def encoded(self, level: str, result: EncodedTiles) -> EncodedTiles:
        self.encodings.extend(
            TileEncoding(level, tokens.n, fresh)
            for tokens, fresh in zip(result.tokens, result.fresh, strict=True)
        )
        return result

    def scored(self, result: ScoreResult) -> ScoreResult:
        self.passes.append(result)
        return result

    def cost_report(
        self,
        caps: Capabilities,
        read_layers: Sequence[int],
        inputs: PreparedInputs,
        tokens_per_layer: Sequence[int],
        generation: Generation,
    ) -> CostReport:
        """The cost report of the whole ask, from the records of its stages.

        ``read_layers``: the decoder layers each focus pass read; a pass runs the layers
        below the deepest in full, then only the readout (``cost.focus_pass_flops``)."""
        used: dict[str, int] = {}
        encoded: dict[str, int] = {}
        tiles: dict[str, int] = {}
        for e in self.encodings:
            used[e.level] = used.get(e.level, 0) + e.tokens
            if e.fresh:
                encoded[e.level] = encoded.get(e.level, 0) + e.tokens
                tiles[e.level] = tiles.get(e.level, 0) + 1
        read = tuple(read_layers) if self.passes else ()
        layers = max(read) if read else 0
        seconds = dict(self.watch.seconds)
        seconds.setdefault("focus", 0.0)
        seconds["total"] = time.perf_counter() - self.started
        return CostReport(
            vision_tokens=used,
            vision_tokens_encoded=encoded,
            tiles_encoded=tiles,
            cache_hits=sum(not e.fresh for e in self.encodings),
            focus_passes=[p.sequence_length for p in self.passes],
            focus_tokens_run=[p.tokens_run for p in self.passes],
            focus_layers=layers,
            llm_vision_tokens=int(
                inputs.vision_positions.numel() + inputs.separator_positions.numel()
            ),
            llm_prompt_tokens=inputs.length,
            llm_tokens_per_layer=list(tokens_per_layer),
            new_tokens=len(generation.token_ids),
            vision_flops=caps.vision_flops_per_tile * sum(tiles.values()),
            focus_flops=sum(
                focus_pass_flops(caps, read, p.tokens_run, p.keys) for p in self.passes
            ),
            llm_flops=prefill_flops(caps, tokens_per_layer),
            paper_llm_flops=paper_prefill_flops(caps, tokens_per_layer),
            paper_focus_flops=sum(
                focus_pass_flops(caps, read, p.tokens_run, p.keys, paper=True) for p in self.passes
            ),
            seconds=seconds,
            peak_rss_mb=peak_rss_mb(),
        )
