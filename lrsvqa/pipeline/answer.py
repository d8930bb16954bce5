"""Results of ``Pipeline.ask``: the answer, its map evidence, its cost, its config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lrsvqa.focus.select import FocusResult
from lrsvqa.pipeline.cost import CostReport
from lrsvqa.pipeline.evidence import Evidence, TileEvidence
from lrsvqa.pipeline.overlay import render_overlay
from lrsvqa.pyramid import DynamicImagePyramid, PyramidConfig

__all__ = ["Answer", "Evidence", "TileEvidence"]


@dataclass
class Answer:
    """The model's answer to one question about one scene."""

    text: str
    question: str
    scene: str
    evidence: Evidence
    cost: CostReport
    config: dict[str, Any]
    focus: FocusResult | None = None  # token scores per level, for overlays
    notes: list[str] = field(default_factory=list)  # e.g. a budget that cut tokens
    pyramid_config: PyramidConfig | None = None  # the pyramid the focus walked (for overlays)

    def to_geojson(self, crs: str = "scene") -> dict[str, Any]:
        return self.evidence.to_geojson(crs)

    def save_overlay(
        self,
        path: str | os.PathLike[str],
        *,
        pyramid: DynamicImagePyramid | None = None,
        panel_size: int = 512,
    ) -> str:
        """Write a PNG: focus heat per level and the chosen tiles on the scene thumbnail.

        ``pyramid``: the open pyramid the answer was computed on; None reopens the scene."""
        if pyramid is not None:
            return self._render(path, pyramid, panel_size)
        with DynamicImagePyramid(self.scene, config=self.pyramid_config) as opened:
            return self._render(path, opened, panel_size)

    def _render(
        self, path: str | os.PathLike[str], pyramid: DynamicImagePyramid, panel_size: int
    ) -> str:
        return render_overlay(
            path,
            question=self.question,
            text=self.text,
            evidence=self.evidence,
            focus=self.focus,
            pyramid=pyramid,
            panel_size=panel_size,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "question": self.question,
            "scene": self.scene,
            "evidence": self.evidence.to_dict(),
            "cost": self.cost.to_dict(),
            "config": self.config,
            "notes": list(self.notes),
        }
