"""The LRS-VQA paper's efficiency table, recomputed from its own token counts.

The paper compares, at the same maximum resolution, LLaVA-style anyres (21,312 vision
tokens), PyramidDrop, FastV and its method (2,376 vision tokens to the LLM) on a
Qwen2-7B LLM (28 layers, hidden 3,584, MLP 18,944). Its TFLOPs follow the FastV /
PyramidDrop convention (``pipeline.cost.paper_layer_flops``: multiply-adds once,
``4nd² + 2n²d + 3ndm`` per layer, vision tokens only, no vision tower). That reading
gives anyres 243.4, PyramidDrop 101.6 and FastV 109.2 (published 243.4 / 102 / 109).
The method's 36.6 cannot be rebuilt from the table's numbers: the LLM over its 2,376
tokens is 18.1, and the rest (the RFM passes over the coarse levels) depends on
sequence lengths and RFM depth the paper does not give. ``efficiency_table`` says so
in its ``note`` rather than fitting a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrsvqa.bench.published import CITATION
from lrsvqa.models.base import Capabilities
from lrsvqa.pipeline.cost import paper_prefill_flops, prefill_flops
from lrsvqa.prune.llm import LLMPruneConfig, planned_tokens_per_layer

#: Qwen2-7B's LLM shapes (the LLM of the paper's efficiency comparison).
QWEN2_7B = Capabilities(
    family="qwen2-7b-llm",
    tile_size=336,
    patch_size=14,
    tokens_per_tile=(24, 24),
    thumbnail_size=336,
    mrope=False,
    newline_tokens=False,
    context_length=32768,
    hidden_size=3584,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    intermediate_size=18944,
)

ANYRES_TOKENS = 21_312
METHOD_TOKENS = 2_376


@dataclass(frozen=True)
class EfficiencyRow:
    """One method of the table: tokens per layer, both conventions, the published value."""

    method: str
    tokens_per_layer: tuple[int, ...]
    paper_tflops: float
    our_tflops: float
    published_tflops: float
    note: str = ""

    @property
    def relative_error(self) -> float:
        """(ours in the papers' convention - published) / published."""
        return self.paper_tflops / self.published_tflops - 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {
            "method": self.method,
            "tokens_first_layer": self.tokens_per_layer[0],
            "tokens_last_layer": self.tokens_per_layer[-1],
            "paper_tflops": self.paper_tflops,
            "our_tflops": self.our_tflops,
            "published_tflops": self.published_tflops,
            "relative_error": self.relative_error,
            "note": self.note,
        }


def efficiency_table(caps: Capabilities = QWEN2_7B) -> tuple[EfficiencyRow, ...]:
    """The paper's four rows, LLM prefill only, from the paper's token counts."""
    plans = {
        "anyres": ([ANYRES_TOKENS] * caps.num_layers, 243.4, ""),
        "PyramidDrop (λ 0.5, 4 stages)": (
            planned_tokens_per_layer(
                LLMPruneConfig("pdrop", pdrop_ratio=0.5),
                caps.num_layers,
                ANYRES_TOKENS,
                ANYRES_TOKENS,
            ),
            102.0,
            "",
        ),
        "FastV (K 2, R 0.5)": (
            planned_tokens_per_layer(
                LLMPruneConfig("fastv", fastv_k=2, fastv_ratio=0.5),
                caps.num_layers,
                ANYRES_TOKENS,
                ANYRES_TOKENS,
            ),
            109.0,
            "",
        ),
        "LRS-VQA method (LLM only)": (
            [METHOD_TOKENS] * caps.num_layers,
            36.6,
            "published figure also counts the RFM passes, whose sizes the paper does not "
            "give; the LLM over the 2,376 tokens is half of it",
        ),
    }
    return tuple(
        EfficiencyRow(
            name,
            tuple(plan),
            paper_prefill_flops(caps, plan) / 1e12,
            prefill_flops(caps, plan) / 1e12,
            published,
            note,
        )
        for name, (plan, published, note) in plans.items()
    )


SOURCE = f"efficiency comparison of {CITATION}"
