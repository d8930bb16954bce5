"""Published LRS-VQA results (AA per source, in percent) to compare a run against.

Source: the LRS-VQA paper (DESIGN §8), "When Large Vision-Language Model Meets
Large Remote Sensing Imagery: Coarse-to-Fine Text-Guided Token Pruning"
(Junwei Luo et al., arXiv:2503.07588, 2025), results of its method (dynamic image
pyramid + region focus + token pruning) on LRS-VQA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CITATION = (
    "Luo et al., When Large Vision-Language Model Meets Large Remote Sensing Imagery: "
    "Coarse-to-Fine Text-Guided Token Pruning, arXiv:2503.07588 (2025); "
    "https://github.com/VisionXLab/LRS-VQA"
)


@dataclass(frozen=True)
class PublishedResult:
    """One published row: method, base model and AA (%) per source."""

    method: str
    model: str
    aa: dict[str, float]
    citation: str = CITATION

    @property
    def label(self) -> str:
        """``method (model)``."""
        return f"{self.method} ({self.model})"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "method": self.method,
            "model": self.model,
            "aa": dict(self.aa),
            "citation": self.citation,
        }


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        "LRS-VQA method", "LLaVA-1.5", {"FAIR": 22.97, "GLH-Bridge": 36.89, "STAR": 27.48}
    ),
    PublishedResult(
        "LRS-VQA method", "Qwen2-VL-7B", {"FAIR": 23.80, "GLH-Bridge": 38.12, "STAR": 27.87}
    ),
)
