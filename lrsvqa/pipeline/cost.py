"""The cost report: tokens, analytic FLOPs, wall time per stage, peak memory.

FLOPs count a multiply-add as 2. LLM prefill per layer over n tokens with hidden
size d, key/value width d_kv (GQA) and MLP width m (gated: 3 matrices):
    projections 2·n·(2·d² + 2·d·d_kv) + attention scores 2·2·n²·d + MLP 2·3·n·d·m.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsvqa.models.base import Capabilities


def layer_prefill_flops(caps: Capabilities, n: int, keys: int | None = None) -> float:
    """FLOPs of one decoder layer over ``n`` tokens attending to ``keys`` keys (default
    ``n``; more when earlier keys come from a KV cache)."""
    d = caps.hidden_size
    heads = max(caps.num_heads, 1)
    d_kv = d * max(caps.num_kv_heads, 1) // heads
    projections = 2 * n * (2 * d * d + 2 * d * d_kv)
    scores = 2 * 2 * n * (n if keys is None else keys) * d
    mlp = 2 * 3 * n * d * caps.intermediate_size
    return float(projections + scores + mlp)


def prefill_flops(caps: Capabilities, tokens_per_layer: Sequence[int]) -> float:
    """FLOPs of a prefill whose layer i sees ``tokens_per_layer[i]`` tokens."""
    return sum(layer_prefill_flops(caps, n) for n in tokens_per_layer)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (VmHWM; ru_maxrss as a fallback)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class CostReport:
    """What one answer cost."""

    # Per level ("thumbnail", "0", "1"…): tokens of every tile the focus looked at, and
    # those the vision tower actually ran for this question (the rest came from the cache).
    vision_tokens: dict[str, int] = field(default_factory=dict)
    vision_tokens_encoded: dict[str, int] = field(default_factory=dict)
    tiles_encoded: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0  # tiles (thumbnail included) served from the per-scene cache
    focus_passes: list[int] = field(default_factory=list)  # sequence length of each focus pass
    focus_tokens_run: list[int] = field(default_factory=list)  # of those, tokens actually run
    focus_layers: int = 0  # decoder layers each focus pass runs
    llm_vision_tokens: int = 0  # vision tokens in the LLM input
    llm_prompt_tokens: int = 0  # whole prompt length
    llm_tokens_per_layer: list[int] = field(default_factory=list)
    new_tokens: int = 0
    vision_flops: float = 0.0
    focus_flops: float = 0.0
    llm_flops: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # read, encode, focus, generate, total
    peak_rss_mb: float = 0.0

    @property
    def flops(self) -> float:
        return self.vision_flops + self.focus_flops + self.llm_flops

    @property
    def tflops(self) -> float:
        return self.flops / 1e12

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tflops"] = self.tflops
        return data

    def summary(self) -> str:
        looked = sum(self.vision_tokens.values())
        encoded = sum(self.vision_tokens_encoded.values())
        secs = self.seconds.get("total", 0.0)
        return (
            f"{self.llm_vision_tokens:,} vision tokens to the LLM ({looked:,} looked at, "
            f"{encoded:,} newly encoded, {self.cache_hits} tiles from cache), "
            f"{self.tflops:.3g} TFLOPs, {secs:.2f} s, peak RSS {self.peak_rss_mb:,.0f} MB"
        )
