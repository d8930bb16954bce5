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
    """One published row: method, base model and accuracy (%) per split (LRS-VQA: AA per
    source; MME-RealWorld: the Remote Sensing split)."""

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

MME_CITATION = (
    "Zhang et al., MME-RealWorld: Could Your Multimodal LLM Challenge High-Resolution "
    "Real-World Scenarios that are Difficult for Humans?, arXiv:2408.13257 (2024), its "
    "perception table (https://github.com/yfzhang114/MME-RealWorld, "
    "asset/results_perception.png)"
)

#: MME-RealWorld's published perception accuracy (%) on its Remote Sensing split (3,738
#: questions: position, color, count), every row of the paper's table. The paper gives the
#: split's overall accuracy only, not one per category; the LRS-VQA paper's own
#: MME-RealWorld-RS results are figures, not tables, and are not transcribed.
MME_RS_QUESTIONS = 3738
MME_PUBLISHED: tuple[PublishedResult, ...] = tuple(
    PublishedResult(method, llm, {"Remote Sensing": rs}, MME_CITATION)
    for method, llm, rs in (
        ("InternVL-2", "InternLM2.5-7B-Chat", 39.35),
        ("Claude 3.5 Sonnet", "-", 25.74),
        ("InternLM-XComposer2.5", "InternLM2-7B", 36.12),
        ("InternVL-Chat-V1.5", "InternLM2-Chat-20B", 33.55),
        ("Mini-Gemini-34B-HD", "Nous-Hermes-2-Yi-34B", 40.40),
        ("MiniCPM-V 2.5", "Llama3-8B", 27.69),
        ("Cambrian-1-34B", "Nous-Hermes-2-Yi-34B", 38.63),
        ("GPT-4o", "-", 28.92),
        ("CogVLM2-llama3-Chat", "Llama3-8B", 28.76),
        ("Cambrian-1-8B", "Llama3-8B-Instruct", 40.05),
        ("SliME-8B", "Llama3-8B", 42.27),
        ("Gemini-1.5-pro", "-", 13.99),
        ("GPT-4o-mini", "-", 6.69),
        ("Monkey", "Qwen-7B", 24.99),
        ("mPLUG-DocOwl 1.5", "Llama-7B", 23.71),
        ("DeepSeek-VL", "DeepSeek-LLM-7b-base", 25.49),
        ("SliME-13B", "Vicuna-13B", 25.82),
        ("Mini-Gemini-7B-HD", "Vicuna-7B-v1.5", 31.30),
        ("YI-VL-34B", "Yi-34B-Chat", 31.62),
        ("LLaVA-Next", "Llama3-8B", 25.42),
        ("LLaVA-Next", "Qwen-72B", 29.13),
        ("LLaVA1.5-13B", "Vicuna-13B", 23.27),
        ("ShareGPT4V-13B", "Vicuna-13B", 23.06),
        ("MiniGPT-v2", "Llama 2-7B-Chat", 23.33),
        ("ShareGPT4V-7B", "Vicuna-7B", 22.10),
        ("LLaVA1.5-7B", "Vicuna-7B", 22.12),
        ("Qwen-VL-Chat", "Qwen-7B", 15.14),
        ("TextMonkey", "Qwen-7B", 11.69),
    )
)
